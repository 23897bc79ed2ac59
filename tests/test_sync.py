"""End to end through the CLI against the Moodle simulator on loopback."""

from __future__ import annotations

import json
import signal
import sqlite3
import time

from tests.helpers import TOKEN, Box, HeldOpen, control, stats, sync

STUDENT1, STUDENT2 = 3, 4
C1, C2, C3 = 2, 3, 4


def running_in_db(box) -> bool:
    if not box.database.exists():
        return False
    with sqlite3.connect(box.database) as conn:
        try:
            return conn.execute("SELECT COUNT(*) FROM syncrun WHERE status = 'running'").fetchone()[0] > 0
        except sqlite3.OperationalError:
            return False


def test_every_event_type_reaches_the_server(box, moodle):
    assert box.cli("courses", "add", "C1", "3").returncode == 0
    events = [
        {"type": "user", "id": "u1", "user": "kid1", "firstname": "Kid", "lastname": "One",
         "email": "kid1@example.org", "idnumber": "K001", "password": "Kid1#pass-word"},
        {"type": "user", "id": "u2", "user": "kid2", "firstname": "Kid", "lastname": "Two", "email": "kid2@example.org"},
        {"type": "user", "id": "u3", "user": "student2", "firstname": "Student2", "lastname": "Renamed",
         "email": "student2@example.invalid"},
        {"type": "enrolment", "id": "n1", "course_id": C1, "user": "kid1"},
        {"type": "enrolment", "id": "n2", "course_id": C2, "user": "kid2", "role": "student"},
        {"type": "completion", "id": "c1", "course_id": C1, "user": "kid1", "cmid": 1, "completed": True},
        {"type": "completion", "id": "c2", "course_id": C1, "user": "student1", "cmid": 2, "completed": True},
        {"type": "completion", "id": "c3", "course_id": C2, "user": "kid2", "cmid": 4, "completed": True},
        {"type": "grade", "id": "g1", "course_id": C1, "user": "kid1", "cmid": 3, "grade": 87.5, "feedback": "Bravo"},
        {"type": "grade", "id": "g2", "course_id": C1, "user": "student1", "cmid": 3, "grade": 40},
        {"type": "grade", "id": "g3", "course_id": C2, "user": "kid2", "cmid": 6, "grade": 12},
    ]
    assert box.enqueue(events).returncode == 0
    code, run, err = sync(box)
    assert code == 0, (run, err)
    assert run["status"] == "completed"
    assert run["actions"] == {"users_created": 2, "users_updated": 1, "enrolments": 2, "completions": 3,
                              "grades": 3, "courses_refreshed": 0}
    kid1, kid2 = moodle.user_id("kid1"), moodle.user_id("kid2")
    profile = moodle.users("kid1")[0]
    assert (profile["firstname"], profile["lastname"], profile["email"], profile["idnumber"]) == \
        ("Kid", "One", "kid1@example.org", "K001")
    assert moodle.users("student2")[0]["lastname"] == "Renamed"
    assert moodle.enrolled(C1)["kid1"] == [5]
    assert moodle.enrolled(C2)["kid2"] == [5]
    assert moodle.completion(C1, kid1, 1) == 1
    assert moodle.completion(C1, STUDENT1, 2) == 1
    assert moodle.completion(C2, kid2, 4) == 1
    # Moodle 4.5 ignores str_feedback in core_grades_update_grades (recordings 23 and 25):
    # the feedback travels but the server keeps only the grade.
    assert moodle.grade(C1, kid1, 3)[0] == 87.5
    assert moodle.grade(C1, STUDENT1, 3)[0] == 40
    assert moodle.grade(C2, kid2, 6)[0] == 12
    assert box.status()["queued"] == 0


def test_password_is_erased_from_database_and_wal_once_confirmed(box, moodle):
    password = "Unique#Passw0rd-7f3a"
    box.status()  # the agent makes its database file; then another connection keeps it, as the daemon does
    held = HeldOpen(box.database)
    try:
        box.enqueue([{"type": "user", "user": "kid9", "firstname": "K", "lastname": "Nine",
                      "email": "kid9@example.org", "password": password}])
        raw = b"".join(p.read_bytes() for p in box.database.parent.glob("agent.db*"))
        assert password.encode() in raw  # kept until the server confirmed the account
        assert held.wal.exists() and password.encode() in held.wal.read_bytes()  # the enqueue's commit
        code, run, _ = sync(box)
        assert code == 0 and run["actions"]["users_created"] == 1
        moodle.user_id("kid9")
        held.assert_erased(password)
        for path in box.database.parent.glob("agent.db*"):
            assert password.encode() not in path.read_bytes(), path
    finally:
        held.close()
    for text in (box.cli("history", "--json").stdout, box.cli("status", "--json").stdout):
        assert password not in text


def test_same_event_id_is_applied_once(box, simulator, moodle):
    assert box.cli("courses", "add", "C1").returncode == 0
    event = {"type": "completion", "id": "same-1", "course_id": C1, "user": "student1", "cmid": 1, "completed": True}
    assert box.enqueue([event]).stdout.strip() == "queued 1 event(s)"
    assert box.enqueue([event]).stdout.strip() == "queued 0 event(s), 1 already queued"
    assert sync(box)[0] == 0
    assert box.enqueue([event]).stdout.strip() == "queued 0 event(s), 1 already queued"
    assert sync(box)[0] == 0
    assert stats(simulator)["calls"].get("core_completion_override_activity_completion_status") == 1
    assert moodle.completion(C1, STUDENT1, 1) == 1


def test_offline_captive_portal_and_rejected_token_keep_the_queue(box, simulator):
    assert box.cli("courses", "add", "C1").returncode == 0
    box.enqueue([{"type": "completion", "course_id": C1, "user": "student1", "cmid": 1, "completed": True}])

    control(simulator, "faults", {"captive_portal": True})
    code, run, _ = sync(box)
    assert code == 3 and run["status"] == "skipped_offline"
    assert "HTML" in run["errors"][0] and "captive portal" in run["errors"][0]

    control(simulator, "faults", {"captive_portal": False, "reject_token": True})
    code, run, _ = sync(box)
    assert code == 1 and run["status"] == "failed"
    assert run["errors"] == ["the server rejected the token"]
    assert box.status()["server"]["token_rejected"] is True
    control(simulator, "faults", {"reject_token": False})

    box.write_config("http://127.0.0.1:9")  # nothing listens there
    code, run, _ = sync(box)
    assert code == 3 and run["status"] == "skipped_offline"
    assert "connection refused" in run["errors"][0]
    assert box.status()["queued"] == 1
    with sqlite3.connect(box.database) as conn:
        assert conn.execute("SELECT status, attempts FROM event").fetchall() == [("queued", 0)]
    for run in box.history(10):
        assert box.token not in json.dumps(run)


def test_course_changed_on_server_refreshes_pushes_and_keeps_conflicts(box, simulator, moodle):
    assert box.cli("courses", "add", "C1").returncode == 0
    control(simulator, "edit", {"op": "delete_activity", "cmid": 2})
    box.enqueue([
        {"type": "completion", "id": "keep", "course_id": C1, "user": "student1", "cmid": 1, "completed": True},
        {"type": "completion", "id": "gone", "course_id": C1, "user": "student1", "cmid": 2, "completed": True},
    ])
    code, run, _ = sync(box)
    # Every event settled: sent, or a conflict shown; amber, with what to do.
    assert code == 0 and run["status"] == "completed_with_warnings"
    assert run["reasons"] == [{"code": "conflicts", "n": 1}]
    assert run["courses"] == [{"id": C1, "shortname": "C1", "outcome": "changed on the server: refreshed; "
                                                                      "1 event(s) on removed activities kept as conflicts"}]
    assert run["actions"]["courses_refreshed"] == 1 and run["actions"]["completions"] == 1
    assert moodle.completion(C1, STUDENT1, 1) == 1
    conflicts = box.json("conflicts")
    assert [c["key"] for c in conflicts] == ["gone"]
    assert "no longer exists" in conflicts[0]["reason"]
    listed = json.loads(box.cli("courses", "list", "--json").stdout)
    assert 2 not in [a["cmid"] for a in listed[0]["activities"]]

    # Unchanged now: no refresh, one request for the course check.
    code, run, _ = sync(box)
    assert code == 0 and run["courses"][0]["outcome"] == "unchanged"

    # Retry puts the conflict back; --force pushes it and records the server's refusal.
    assert box.cli("conflicts", "retry", str(conflicts[0]["id"])).returncode == 0
    code, run, _ = sync(box, "--force")
    assert run["courses"][0]["outcome"] == "refreshed (forced)"
    conflicts = box.json("conflicts")
    assert "invalidcoursemodule" in conflicts[0]["reason"]
    assert box.cli("conflicts", "discard", str(conflicts[0]["id"])).returncode == 0
    assert box.json("conflicts") == []


def test_activity_edit_is_seen_through_cacherev(box, simulator, moodle):
    assert box.cli("courses", "add", "C1", "C2").returncode == 0
    control(simulator, "edit", {"op": "edit_activity", "cmid": 1, "name": "Renamed page"})
    box.enqueue([{"type": "completion", "course_id": C1, "user": "student2", "cmid": 1, "completed": True}])
    code, run, _ = sync(box)
    assert code == 0
    outcomes = {c["shortname"]: c["outcome"] for c in run["courses"]}
    assert outcomes == {"C1": "changed on the server: refreshed", "C2": "unchanged"}
    assert moodle.completion(C1, STUDENT2, 1) == 1
    assert stats(simulator)["calls"]["core_course_get_courses_by_field"] >= 1


def test_force_refreshes_every_course_and_pushes_without_the_check(box, simulator, moodle):
    assert box.cli("courses", "add", "C1", "C2", "C3").returncode == 0
    box.enqueue([{"type": "completion", "course_id": C2, "user": "student1", "cmid": 4, "completed": True}])
    code, run, _ = sync(box, "--force")
    assert code == 0 and run["force"] is True
    assert run["actions"]["courses_refreshed"] == 3
    assert {c["outcome"] for c in run["courses"]} == {"refreshed (forced)"}
    assert moodle.completion(C2, STUDENT1, 4) == 1


def test_unenrolled_user_becomes_a_conflict_unless_enrolment_is_queued(box, moodle):
    assert box.cli("courses", "add", "C3").returncode == 0
    box.enqueue([
        {"type": "user", "user": "kid3", "firstname": "K", "lastname": "Three", "email": "k3@example.org"},
        {"type": "completion", "id": "no-enrol", "course_id": C3, "user": "student1", "cmid": 7, "completed": True},
        {"type": "completion", "id": "with-enrol", "course_id": C3, "user": "kid3", "cmid": 7, "completed": True},
        {"type": "enrolment", "course_id": C3, "user": "kid3"},
        {"type": "completion", "id": "nobody", "course_id": C3, "user": "ghost", "cmid": 7, "completed": True},
    ])
    code, run, _ = sync(box)
    assert code == 0 and run["conflicts"] == 2
    assert moodle.completion(C3, moodle.user_id("kid3"), 7) == 1
    reasons = {c["key"]: c["reason"] for c in box.json("conflicts")}
    assert set(reasons) == {"no-enrol", "nobody"}
    assert "not enrolled" in reasons["no-enrol"] and "unknown user" in reasons["nobody"]


def test_failing_call_in_the_middle_of_a_batch(box, simulator, moodle):
    box.write_config(simulator.url, batch_size=10)
    assert box.cli("courses", "add", "C1").returncode == 0
    events = [{"type": "completion", "id": f"b{i}", "course_id": C1, "user": f"student{i}",
               "cmid": 999 if i == 3 else 1, "completed": True} for i in range(1, 6)]
    box.enqueue(events)
    code, run, _ = sync(box, "--force")  # force: the unknown cmid goes to the server
    assert code == 0 and run["actions"]["completions"] == 4 and run["conflicts"] == 1
    for username, uid in (("student1", 3), ("student2", 4), ("student4", 6), ("student5", 7)):
        assert moodle.completion(C1, uid, 1) == 1, username
    conflicts = box.json("conflicts")
    assert [c["key"] for c in conflicts] == ["b3"] and "invalidcoursemodule" in conflicts[0]["reason"]
    # One batch of 5 stopped at its 3rd call; the last two went in a second batch of the same run.
    assert stats(simulator)["batch_sizes"] == {"5": 1, "2": 1}


def test_sigkill_in_the_middle_of_a_push_then_sync_again(box, simulator, moodle):
    box.write_config(simulator.url, batch_size=5)
    assert box.cli("courses", "add", "C1").returncode == 0
    users = [{"type": "user", "id": f"u{i}", "user": f"kid{i}", "firstname": "Kid", "lastname": str(i),
              "email": f"kid{i}@example.org"} for i in range(30)]
    enrols = [{"type": "enrolment", "id": f"e{i}", "course_id": C1, "user": f"kid{i}"} for i in range(30)]
    marks = [{"type": "completion", "id": f"c{i}", "course_id": C1, "user": f"kid{i}", "cmid": 1 + i % 2,
              "completed": True} for i in range(30)]
    box.enqueue(users + enrols + marks)
    control(simulator, "faults", {"latency_ms": 40})
    proc = box.popen("sync")
    deadline = time.time() + 30
    while time.time() < deadline:
        with sqlite3.connect(box.database) as conn:
            sent = conn.execute("SELECT COUNT(*) FROM event WHERE status = 'sent'").fetchone()[0]
        if sent >= 10:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert 10 <= sent < 90
    control(simulator, "faults", {"latency_ms": 0})
    code, run, err = sync(box)
    assert code == 0, (run, err)
    assert box.history(2)[1]["status"] == "interrupted"
    for i in range(30):
        assert len(moodle.users(f"kid{i}")) == 1
        assert f"kid{i}" in moodle.enrolled(C1)
        assert moodle.completion(C1, moodle.user_id(f"kid{i}"), 1 + i % 2) == 1
    st = box.status()
    assert (st["queued"], st["conflicts"], st["sent"]) == (0, 0, 90)
    with sqlite3.connect(box.database) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_history_row_is_complete_and_true(box, simulator):
    assert box.cli("courses", "add", "C1").returncode == 0
    before = stats(simulator)
    box.enqueue([
        {"type": "user", "user": "kid7", "firstname": "K", "lastname": "Seven", "email": "k7@example.org"},
        {"type": "enrolment", "course_id": C1, "user": "kid7"},
        {"type": "completion", "course_id": C1, "user": "kid7", "cmid": 1, "completed": True},
        {"type": "grade", "course_id": C1, "user": "kid7", "cmid": 3, "grade": 55},
    ])
    code, run, _ = sync(box)
    after = stats(simulator)
    assert code == 0
    [row] = box.history(1)
    assert row == run
    for key in ("id", "trigger", "status", "started_at", "completed_at", "duration_s", "bytes_sent",
                "bytes_received", "courses", "actions", "errors"):
        assert row[key] is not None, key
    assert row["trigger"] == "cli" and row["errors"] == []
    assert row["started_at"].endswith("Z") and row["completed_at"] >= row["started_at"]
    assert row["courses"] == [{"id": C1, "shortname": "C1", "outcome": "unchanged"}]
    assert row["bytes_sent"] == after["bytes_in"] - before["bytes_in"]
    assert row["bytes_received"] == after["bytes_out"] - before["bytes_out"]
    calls = {k: after["calls"].get(k, 0) - before["calls"].get(k, 0) for k in after["calls"]}
    assert row["actions"]["users_created"] == calls["core_user_create_users"] == 1
    assert row["actions"]["enrolments"] == calls["enrol_manual_enrol_users"] == 1
    assert row["actions"]["completions"] == calls["core_completion_override_activity_completion_status"] == 1
    # cmid 3 is an assignment: its grade goes into the assignment (issue 22)
    assert row["actions"]["grades"] == 1 and calls["mod_assign_save_grades"] == 1


def test_one_sync_at_a_time(box, simulator):
    assert box.cli("courses", "add", "C1").returncode == 0  # else nothing is queued, and the first run is short
    box.enqueue([{"type": "completion", "course_id": C1, "user": f"student{i}", "cmid": 1, "completed": True}
                 for i in range(1, 6)])
    box.write_config(simulator.url, batch_size=1)
    control(simulator, "faults", {"latency_ms": 1000})
    first = box.popen("sync")
    deadline = time.time() + 20
    while time.time() < deadline and not running_in_db(box):
        time.sleep(0.02)
    second = box.cli("sync")
    first.wait(60)
    assert second.returncode == 4
    assert "a sync is already running (id " in second.stderr
    assert box.status()["last_sync"]["id"] in second.stderr


def test_check_reports_site_release_and_missing_functions(tmp_path):
    from moodle_simulator import start_simulator

    with start_simulator(token=TOKEN, without_functions=["core_user_update_users",
                                                            "tool_mobile_call_external_functions"]) as sim:
        box = Box(tmp_path, sim.url)
        result = box.cli("check", "--json")
        assert result.returncode == 0, result.stderr
        check = json.loads(result.stdout)
        assert check["online"] and check["token_valid"]
        assert check["site_name"] == "Moodle Reference Server" and check["release"].startswith("4.5")
        # core_user_update_users is an optional right's (agent/rights.py): its feature is off, not missing.
        assert check["missing_functions"] == []
        assert check["rights"]["off"] == [
            "off: updates of accounts that already exist on the server (names, e-mail addresses and passwords "
            "changed on the box): the service lacks core_user_update_users; it needs the optional right "
            "moodle/user:update (README: \"A stolen box\")"]
        assert check["missing_optional"] == ["tool_mobile_call_external_functions"]
        human = box.cli("check").stdout
        assert "server: off: updates of accounts" in human and "no batching" in human


def test_without_batching_each_event_is_its_own_call(tmp_path):
    from moodle_simulator import start_simulator

    with start_simulator(token=TOKEN, without_functions=["tool_mobile_call_external_functions"]) as sim:
        box = Box(tmp_path, sim.url)
        assert box.cli("courses", "add", "C1").returncode == 0
        box.enqueue([{"type": "completion", "course_id": C1, "user": f"student{i}", "cmid": 1, "completed": True}
                     for i in range(1, 4)])
        code, run, _ = sync(box)
        assert code == 0 and run["actions"]["completions"] == 3
        snap = stats(sim)
        assert snap["batches"] == 0
        assert snap["calls"]["core_completion_override_activity_completion_status"] == 3


def test_batch_size_1_sends_every_event_in_a_request_of_its_own(tmp_path, simulator, moodle):
    box = Box(tmp_path, simulator.url, batch_size=1)
    assert box.cli("courses", "add", "C1").returncode == 0
    box.enqueue([{"type": "grade", "id": f"g{i}", "course_id": C1, "user": f"student{1 + i % 2}", "cmid": 3,
                  "grade": 10 * i} for i in range(5)]
                + [{"type": "completion", "course_id": C1, "user": "student1", "cmid": 1, "completed": True}])
    code, run, _ = sync(box)
    assert code == 0 and run["actions"]["grades"] == 5 and run["actions"]["completions"] == 1
    snap = stats(simulator)
    assert snap["batches"] == 0
    assert snap["calls"]["mod_assign_save_grades"] == 5      # cmid 3 is an assignment
    assert snap["calls"]["core_completion_override_activity_completion_status"] == 1
    assert moodle.grade(C1, STUDENT1, 3)[0] == 40 and moodle.grade(C1, STUDENT2, 3)[0] == 30  # the last ones


def test_courses_add_list_remove(box):
    result = box.cli("courses", "add", "NOPE")
    assert result.returncode == 2 and "no course with short name 'NOPE'" in result.stderr
    assert box.cli("courses", "add", "999").returncode == 2
    assert box.cli("courses", "add", "C1", "3").returncode == 0
    listed = json.loads(box.cli("courses", "list", "--json").stdout)
    assert [(c["id"], c["shortname"]) for c in listed] == [(C1, "C1"), (C2, "C2")]
    assert [a["cmid"] for a in listed[0]["activities"]] == [1, 2, 3]
    assert listed[0]["cacherev"] and listed[0]["timemodified"]
    assert box.cli("courses", "remove", "C2").returncode == 0
    assert [c["id"] for c in json.loads(box.cli("courses", "list", "--json").stdout)] == [C1]


def test_an_event_for_a_course_not_on_the_box_is_refused(box):
    assert box.cli("courses", "add", "C1").returncode == 0
    result = box.enqueue([{"type": "completion", "course_id": C1, "user": "student1", "cmid": 1, "completed": True},
                          {"type": "completion", "course_id": 999, "user": "student1", "cmid": 1, "completed": True}])
    assert result.returncode == 2
    assert "event 1: field 'course_id': course 999 is not kept on this box" in result.stderr
    assert box.status()["queued"] == 0  # the batch is refused whole


def test_a_course_gone_from_the_server_turns_its_events_into_conflicts_and_the_sync_turns_amber(box, simulator,
                                                                                               moodle):
    assert box.cli("courses", "add", "C1", "C3").returncode == 0
    box.enqueue([{"type": "completion", "course_id": C3, "user": "student1", "cmid": 7, "completed": True},
                 {"type": "completion", "course_id": C1, "user": "student1", "cmid": 1, "completed": True}])
    control(simulator, "edit", {"op": "delete_course", "courseid": C3})
    code, run, _ = sync(box)
    assert code == 0 and run["status"] == "completed_with_warnings" and run["errors"] == []
    assert run["reasons"] == [{"code": "course_missing", "course": "C3"}, {"code": "conflicts", "n": 1}]
    assert {"id": C3, "shortname": "C3", "outcome": "missing on the server: 1 event(s) kept as conflicts"} \
        in run["courses"]
    assert (run["events_sent"], run["conflicts"]) == (1, 1)
    assert moodle.completion(C1, STUDENT1, 1) == 1
    (conflict,) = box.json("conflicts")
    assert conflict["course_id"] == C3 and "course C3 (id 4) is missing on the server" in conflict["reason"]
    assert box.status()["queued"] == 0
    code, run, _ = sync(box)  # and the next one too: nothing jams (the course still missing)
    assert code == 0 and run["status"] == "completed_with_warnings"
    assert run["reasons"] == [{"code": "course_missing", "course": "C3"}]
    assert box.cli("conflicts", "discard", str(conflict["id"])).returncode == 0
    assert box.status()["conflicts"] == 0
