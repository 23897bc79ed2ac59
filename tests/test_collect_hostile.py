"""A hostile box's Moodle (issue 21): what it sends is checked like what apps
send. Two simulators on loopback, the box's with its hostile switches
(scripts/moodle_simulator/hostile.py), driven through the real CLI. For each
bad value, the valid data around it lands on the server and the bad value
is named once in the collection's row. The box's ids as in
tests/test_collect.py: C1 is 12 there, cmid 101 is the server's 1, student1
is user 23."""

from __future__ import annotations

import json
import signal
import sqlite3
import time

import pytest

from tests.helpers import (BOX_C1, BOX_TOKEN, C1, C2, OFFSET_CM, TOKEN, Box, MoodleReader, baseline, box_section, calls,
                           mark, queued_rows, run_json)

STUDENT = {f"student{i}": 22 + i for i in range(1, 6)}  # the box's user ids
ASSIGN = 3  # the server's cmid of C1's assignment (max grade 100); the box's is 103


@pytest.fixture
def box(tmp_path, simulator, boxsim):  # noqa: F811
    box = Box(tmp_path, simulator.url, extra=box_section(tmp_path, boxsim))
    assert box.cli("courses", "add", "C1", "C2").returncode == 0
    return box


@pytest.fixture
def server(simulator):
    return MoodleReader(simulator.url)


def grade_on_box(boxsim, **grades: float) -> None:  # noqa: F811
    fields = {}
    for i, (username, value) in enumerate(grades.items()):
        fields[f"grades[{i}][studentid]"] = STUDENT[username]
        fields[f"grades[{i}][grade]"] = value
    MoodleReader(boxsim.url, BOX_TOKEN).call("core_grades_update_grades", source="teacher", courseid=BOX_C1,
                                             component="mod_assign", activityid=ASSIGN + OFFSET_CM, itemnumber=0,
                                             **fields)


def naming(errors: list[str], *words: str) -> list[str]:
    return [e for e in errors if all(w in e for w in words)]


def conflicts(box) -> list[dict]:
    with sqlite3.connect(box.database) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM event WHERE status = 'conflict' ORDER BY id")]


# -- grades ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("literal, shown", [("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf"),
                                            ("true", "True"), ('"abc"', "'abc'"), ("[1]", "[1]")])
def test_a_grade_that_is_not_a_number_is_never_queued_and_named_once(box, boxsim, server, literal, shown):
    baseline(box)
    grade_on_box(boxsim, student1=40, student2=50)
    mark(boxsim, "student3", 1 + OFFSET_CM)
    boxsim.faults.set(hostile_grade=json.loads(
        f'{{"cmid": {ASSIGN + OFFSET_CM}, "userid": {STUDENT["student2"]}, "value": {literal}}}'))
    code, run, err = run_json(box, "sync")
    assert code == 0, err
    errors = run["collected"]["errors"]
    assert naming(errors, "student2", f"activity {ASSIGN + OFFSET_CM}", shown, "not a number") == errors
    assert len(errors) == 1, errors
    assert run["collected"]["grades"] == 1 and run["collected"]["status"] == "completed_with_errors"
    # The valid grade of the same activity, and the completion, landed.
    assert server.grade(C1, server.user_id("student1"), ASSIGN)[0] == 40
    assert server.grade(C1, server.user_id("student2"), ASSIGN)[0] is None
    assert server.completion(C1, server.user_id("student3"), 1) == 1
    assert not queued_rows(box, "username = 'student2' AND type = 'grade'")
    with sqlite3.connect(box.database) as conn:  # every row is JSON (no NaN, no Infinity)
        assert conn.execute("SELECT COUNT(*) FROM event WHERE NOT json_valid(data)").fetchone()[0] == 0
    # The next sync, the box's Moodle still answering the same: still never queued nor a conflict, and
    # at most one line in its row (whether it is named again at all: the test after this one).
    code, again, err = run_json(box, "sync")
    assert code == 0, err
    assert len(naming(again["collected"]["errors"], "student2")) <= 1, again["collected"]
    assert not queued_rows(box, "username = 'student2' AND type = 'grade'")
    assert not conflicts(box)
    assert server.grade(C1, server.user_id("student2"), ASSIGN)[0] is None


@pytest.mark.parametrize("value", [-5, 1e308, 100.5])
def test_a_grade_outside_the_activitys_range_is_a_conflict_of_its_own(box, boxsim, server, value):
    baseline(box)
    grade_on_box(boxsim, student1=40, student2=50)
    boxsim.faults.set(hostile_grade={"cmid": ASSIGN + OFFSET_CM, "userid": STUDENT["student2"], "value": value})
    code, run, err = run_json(box, "sync")
    assert code == 0 and run["status"] == "completed", (run, err)
    assert run["collected"]["errors"] == []
    [conflict] = conflicts(box)
    assert conflict["username"] == "student2" and conflict["type"] == "grade"
    assert f"the grade {value:g} is outside the activity's range on the box's Moodle (0 to 100)" in \
        conflict["last_error"]
    assert server.grade(C1, server.user_id("student1"), ASSIGN)[0] == 40
    assert server.grade(C1, server.user_id("student2"), ASSIGN)[0] is None
    # Collected again: not a second conflict.
    code, run, err = run_json(box, "sync")
    assert code == 0 and len(conflicts(box)) == 1, (run, err)


def test_a_grade_removed_on_the_box_is_a_conflict_named_removed_never_a_silent_drop(box, boxsim, server):
    baseline(box)
    grade_on_box(boxsim, student1=40, student2=50)
    assert run_json(box, "sync")[0] == 0
    assert server.grade(C1, server.user_id("student2"), ASSIGN)[0] == 50
    boxsim.faults.set(hostile_grade={"cmid": ASSIGN + OFFSET_CM, "userid": STUDENT["student2"], "value": None})
    code, run, err = run_json(box, "sync")
    assert code == 0, err
    [conflict] = conflicts(box)
    assert conflict["username"] == "student2" and "removed on the box" in conflict["last_error"]
    assert "(50)" in conflict["last_error"]
    assert server.grade(C1, server.user_id("student2"), ASSIGN)[0] == 50  # left as it is
    code, run, err = run_json(box, "sync")
    assert code == 0 and len(conflicts(box)) == 1, (run, err)


def test_the_incremental_collection_checks_the_grades_it_reads_too(box, boxsim):
    baseline(box)
    grade_on_box(boxsim, student1=40)
    mark(boxsim, "student1", 1 + OFFSET_CM)  # student1's access moves: their grades are read
    boxsim.faults.set(hostile_grade={"cmid": ASSIGN + OFFSET_CM, "userid": STUDENT["student1"],
                                     "value": float("nan")})
    code, run, err = run_json(box, "collect")
    # The page, and the assignment the grade completed; not the grade.
    assert code == 0 and run["actions"]["completions"] == 2 and run["actions"]["grades"] == 0, (run, err)
    assert len(naming(run["errors"], "student1", "nan")) == 1


# -- participants ------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, words", [
    ({"id": "abc"}, ["participant 'abc'", "id is not a number"]),
    ({"id": None}, ["participant None", "id is not a number"]),
    ({"email": None, "fullname": None, "username": None}, ["participant 25", "username is missing"]),
    ({"email": None}, ["participant 25 ('student3')", "email is null"]),
    ({"username": "student1"}, ["participant 25 ('student1')", "also participant 23's"]),
    ({"firstname": "Ann\u0007\u001b[2J"}, ["participant 25 ('student3')", "firstname has control characters",
                                          "'Ann\\x07\\x1b[2J'"]),
    ({"username": "stu\u0000dent3"}, ["participant 25", "username has control characters"]),
    ({"roles": "student"}, ["participant 25 ('student3')", "roles is not a list"]),
    ({"lastcourseaccess": -1}, ["participant 25 ('student3')", "lastcourseaccess is not a time"]),
], ids=["id-abc", "id-null", "nulls", "email-null", "duplicate-username", "control-characters",
        "control-in-username", "roles-string", "negative-access"])
def test_one_malformed_participant_is_skipped_and_named_the_others_are_collected(
        box, boxsim, server, simulator, fields, words):  # noqa: F811
    baseline(box)
    mark(boxsim, "student1", 1 + OFFSET_CM)
    mark(boxsim, "student3", 2 + OFFSET_CM)  # the hostile entry's own progress: not collected
    mark(boxsim, "student2", 4 + OFFSET_CM)  # the other course
    boxsim.faults.set(hostile_user={"userid": STUDENT["student3"], "fields": fields})
    code, run, err = run_json(box, "sync")
    assert code == 0, err
    errors = run["collected"]["errors"]
    assert len(errors) == 1 and all(w in errors[0] for w in words), errors
    assert errors[0].startswith("courses C1, C2: ")  # student3 is in both: one line
    assert run["collected"]["completions"] == 2
    assert server.completion(C1, server.user_id("student1"), 1) == 1
    assert server.completion(C2, server.user_id("student2"), 4) == 1
    # Nobody got student3's progress: not student3 (skipped), not the one whose username it claimed.
    assert server.completion(C1, server.user_id("student3"), 2) == 0
    assert server.completion(C1, server.user_id("student1"), 2) == 0


def test_a_new_learner_claiming_a_collected_username_on_another_page_is_skipped(tmp_path, simulator, boxsim,
                                                                                server):  # noqa: F811
    # batch_size 2: pages of 40 participants; the impostor is on the second page.
    box = Box(tmp_path, simulator.url, batch_size=2, extra=box_section(tmp_path, boxsim))
    assert box.cli("courses", "add", "C1").returncode == 0
    baseline(box)
    block = boxsim.state.add_participants(BOX_C1, 45, prefix="gen")
    impostor = block["last_id"]
    boxsim.faults.set(hostile_user={"userid": impostor, "fields": {"username": "student1"}})
    code, run, err = run_json(box, "collect")
    assert code == 0, err
    assert naming(run["errors"], f"participant {impostor} ('student1')", "also participant 23's") == run["errors"]
    assert run["actions"]["enrolments"] == 44 and run["actions"]["accounts"] == 44
    assert not queued_rows(box, "username = 'student1' AND status = 'queued'")


# -- pages, and a stop -------------------------------------------------------------------------

def test_participants_are_read_in_pages_and_those_who_left_are_forgotten(tmp_path, simulator, boxsim):  # noqa: F811
    box = Box(tmp_path, simulator.url, batch_size=2, extra=box_section(tmp_path, boxsim))
    assert box.cli("courses", "add", "C1").returncode == 0
    boxsim.state.add_participants(BOX_C1, 75, prefix="gen")  # 5 + 75: two full pages of 40, then an empty one
    before = calls(boxsim).get("core_enrol_get_enrolled_users", 0)
    code, run, err = run_json(box, "collect")
    assert code == 0 and run["status"] == "completed", (run, err)
    assert calls(boxsim)["core_enrol_get_enrolled_users"] - before == 3 + 2  # two pages asked again with profiles
    assert run["actions"]["enrolments"] == 80 and run["actions"]["accounts"] == 80
    with sqlite3.connect(box.database) as conn:
        assert conn.execute("SELECT COUNT(*) FROM participant").fetchone()[0] == 80
    # Idle: three pages of usernames and access times, nothing else; the
    # first page rides in one batch with the course's own call.
    boxsim.stats.reset()
    code, run, err = run_json(box, "collect")
    assert code == 0 and run["actions"]["learners_read"] == 0 and sum(run["actions"].values()) == 0, (run, err)
    assert calls(boxsim) == {"core_course_get_courses_by_field": 1, "core_enrol_get_enrolled_users": 3,
                             "core_webservice_get_site_info": 1, "tool_mobile_call_external_functions": 1}
    assert boxsim.stats.snapshot()["requests"] == 4
    with boxsim.state.lock:  # unenrolled on the box (no web service for it is simulated)
        del boxsim.state.enrolments[BOX_C1][STUDENT["student2"]]
    code, run, err = run_json(box, "collect")
    assert code == 0, err
    with sqlite3.connect(box.database) as conn:
        assert conn.execute("SELECT COUNT(*) FROM participant").fetchone()[0] == 79
        assert not conn.execute("SELECT 1 FROM participant WHERE username = 'student2'").fetchall()


def test_a_collection_stopped_with_sigterm_ends_its_row_as_interrupted_at_once(tmp_path, simulator,
                                                                              boxsim):  # noqa: F811
    box = Box(tmp_path, simulator.url, batch_size=2, extra=box_section(tmp_path, boxsim))
    assert box.cli("courses", "add", "C1").returncode == 0
    boxsim.state.add_participants(BOX_C1, 200, prefix="gen")
    boxsim.faults.set(latency_ms=200)
    proc = box.popen("collect", "--full")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not queued_rows(box, "type = 'enrolment'"):
        time.sleep(0.05)  # a page is committed
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)  # at once: after the request in flight, not after the collection
    assert proc.returncode == 1
    with sqlite3.connect(box.database) as conn:
        status, errors = conn.execute("SELECT status, errors FROM syncrun WHERE kind = 'collect'").fetchone()
    assert status == "interrupted" and "interrupted" in errors
    cut = len(queued_rows(box, "type = 'enrolment'"))
    assert 0 < cut < 205
    boxsim.faults.set(latency_ms=0)
    assert box.cli("collect").returncode == 0
    assert len(queued_rows(box, "type = 'enrolment'")) == 205


# -- the sync: one refused grade never takes the others down ---------------------------------------

@pytest.mark.parametrize("function, key, lacking", [
    ("mod_assign_save_grades", "userid", []),  # C1's graded activity is an assignment (issue 22)
    # A server whose service lacks mod_assign_save_grades: the gradebook's call carries them.
    ("core_grades_update_grades", "studentid", ["mod_assign_save_grades"]),
], ids=["assignment", "gradebook"])
def test_one_grade_refused_by_the_server_does_not_take_the_others_of_its_call_down(tmp_path, boxsim, function, key,
                                                                                  lacking):  # noqa: F811
    from moodle_simulator import start_simulator

    with start_simulator(token=TOKEN, without_functions=lacking) as sim:
        box = Box(tmp_path, sim.url, extra=box_section(tmp_path, boxsim))
        assert box.cli("courses", "add", "C1", "C2").returncode == 0
        server = MoodleReader(sim.url)
        baseline(box)
        grade_on_box(boxsim, student1=40, student2=50, student3=60)
        student2 = server.user_id("student2")
        sim.faults.set(fail_function={function: {
            "errorcode": "invalidparameter", "message": "Invalid parameter value detected", "when": {
                key: student2}}})
        before = calls(sim).get(function, 0)
        code, run, err = run_json(box, "sync")
        assert code == 0, err
        # The call of three refused, then one call per student.
        assert calls(sim)[function] - before == 1 + 3
        assert all(f not in calls(sim) for f in lacking)
        assert run["actions"]["grades"] == 2
        assert server.grade(C1, server.user_id("student1"), ASSIGN)[0] == 40
        assert server.grade(C1, server.user_id("student3"), ASSIGN)[0] == 60
        assert server.grade(C1, student2, ASSIGN)[0] is None
        [conflict] = conflicts(box)
        assert conflict["username"] == "student2" and conflict["type"] == "grade"
        assert conflict["last_error"] == (f"the server refused {function}: Invalid parameter value "
                                          "detected (invalidparameter)")


def test_a_grade_that_is_not_a_number_in_an_older_queue_is_a_conflict_before_it_is_sent(box, boxsim, simulator,
                                                                                       server):  # noqa: F811
    baseline(box)
    grade_on_box(boxsim, student1=40, student2=50)
    assert run_json(box, "collect", "--full")[0] == 0
    # An older agent queued NaN as it came (JSON's NaN, which SQLite calls malformed).
    with sqlite3.connect(box.database) as conn:
        [(event_id, data)] = conn.execute("SELECT id, data FROM event WHERE type = 'grade' AND username = 'student2' "
                                          "AND status = 'queued'").fetchall()
        conn.execute("UPDATE event SET data = ? WHERE id = ?",
                     (json.dumps({**json.loads(data), "grade": float("nan")}), event_id))
    before = calls(simulator).get("mod_assign_save_grades", 0)
    code, run, err = run_json(box, "sync")
    assert code == 0, err
    assert calls(simulator)["mod_assign_save_grades"] - before == 1
    assert server.grade(C1, server.user_id("student1"), ASSIGN)[0] == 40
    [conflict] = conflicts(box)
    assert conflict["id"] == event_id and conflict["last_error"] == "the grade is not a number: nan"


def test_an_account_update_answered_with_warnings_is_a_conflict_in_moodles_words(tmp_path, simulator, server):
    box = Box(tmp_path, simulator.url)
    taken = server.users("student2")[0]["email"]
    assert box.enqueue([{"type": "user", "id": "u-1", "user": "student1", "firstname": "Stu", "lastname": "One",
                         "email": taken},
                        {"type": "user", "id": "u-3", "user": "student3", "firstname": "Stu", "lastname": "Three",
                         "email": "student3.new@example.org"}]).returncode == 0
    code, run, err = run_json(box, "sync")
    assert code == 0, err
    assert run["actions"]["users_updated"] == 1 and run["events_sent"] == 1
    [conflict] = conflicts(box)
    assert conflict["username"] == "student1"
    assert conflict["last_error"] == ("the server did not update the account: Duplicate address "
                                      "(useremailduplicate)")
    assert server.users("student1")[0]["email"] != taken
    assert server.users("student3")[0]["email"] == "student3.new@example.org"
