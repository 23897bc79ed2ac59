"""The box's own Moodle as the learners' source (issue 12), end to end: two
Moodle simulators on loopback, the box's (``box=True``: every id differs
from the server's) and the school's, driven through the real CLI and the
daemon's real worker processes. The box's ids: course C1 is 12 there (2 on
the server), cmid 101 is the server's 1, student1 is user 23 (3 on the server)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest

from agent.store import settings
from agent.config import load_config
from agent.service.daemon import Daemon
from agent.store.db import Event, Run
from agent.store.schema import close_db, open_db
from tests.helpers import (BOX_C1, BOX_TOKEN, Box, C1, C2, FakeClock, MoodleReader, OFFSET_CM, TOKEN, baseline,
                           box_section, calls, control, drive, mark, queued_rows, run_json)


@pytest.fixture
def box(tmp_path, simulator, boxsim):  # this module's: with the box's Moodle and two courses
    box = Box(tmp_path, simulator.url, extra=box_section(tmp_path, boxsim))
    assert box.cli("courses", "add", "C1", "C2").returncode == 0
    return box


@pytest.fixture
def server(simulator):
    return MoodleReader(simulator.url)


def writes(sim) -> int:
    """The calls that change something on the server."""
    return sum(n for fn, n in calls(sim).items() if not fn.startswith((
        "core_webservice", "core_course_get", "core_user_get", "core_enrol_get",
        "core_completion_get_course_completion_status", "core_badges_get",
        "tool_mobile_call_external_functions")))    # a batch's calls are counted one by one


# -- what it must show -------------------------------------------------------------------------

def test_a_learners_completion_on_the_box_lands_on_the_server_under_its_cmid(box, boxsim, simulator, server):
    first = baseline(box)
    assert first["collected"]["status"] == "completed"
    assert first["actions"]["users_created"] == first["actions"]["users_updated"] == first["actions"]["enrolments"] == 0

    mark(boxsim, "student1", 1 + OFFSET_CM)
    code, run, err = run_json(box, "collect")
    assert code == 0, err
    assert (run["kind"], run["trigger"]) == ("collect", "cli") and run["force"] is False
    assert run["actions"]["completions"] == 1 and run["actions"]["learners_read"] == 1
    [event] = queued_rows(box)
    assert (event["type"], event["course_id"], event["username"], event["cmid"]) == ("completion", C1, "student1",
                                                                                      None)
    assert json.loads(event["data"])["box_cmid"] == 101

    before = calls(simulator).get("core_completion_override_activity_completion_status", 0)
    code, run, err = run_json(box, "sync")
    assert code == 0 and run["status"] == "completed", (run, err)
    assert run["actions"]["completions"] == 1
    assert calls(simulator)["core_completion_override_activity_completion_status"] == before + 1
    assert server.completion(C1, server.user_id("student1"), 1) == 1
    assert queued_rows(box, "cmid = 1 AND status = 'sent'")[0]["username"] == "student1"


def test_a_teachers_grade_on_the_box_lands_on_the_server(box, boxsim, server):
    baseline(box)
    MoodleReader(boxsim.url, BOX_TOKEN).call(
        "core_grades_update_grades", source="teacher", courseid=BOX_C1, component="mod_assign",
        activityid=3 + OFFSET_CM, itemnumber=0, **{"grades[0][studentid]": 24, "grades[0][grade]": 77})
    code, run, err = run_json(box, "sync")  # the sync's own (full) collection finds it
    assert code == 0, err
    assert run["collected"]["grades"] == 1
    assert run["actions"]["grades"] == 1
    assert server.grade(C1, server.user_id("student2"), 3)[0] == 77


def test_a_teachers_override_missed_by_the_incremental_collection_is_caught_before_the_sync(box, boxsim, server):
    baseline(box)
    MoodleReader(boxsim.url, BOX_TOKEN).call("core_completion_override_activity_completion_status",
                                             userid=24, cmid=2 + OFFSET_CM, newstate=1)  # student2, by the admin
    code, run, err = run_json(box, "collect")
    assert code == 0 and run["actions"]["completions"] == 0 and run["actions"]["learners_read"] == 0, err
    code, run, err = run_json(box, "sync")
    assert code == 0 and run["collected"]["completions"] == 1, (run, err)
    assert server.completion(C1, server.user_id("student2"), 2) == 1


def test_a_box_only_learner_gets_account_enrolment_then_completion(box, boxsim, simulator, server):
    baseline(box)
    control(boxsim, "edit", {"op": "add_user", "username": "boxkid", "firstname": "Box", "lastname": "Kid",
                             "email": "boxkid@example.org"})
    control(boxsim, "edit", {"op": "enrol_user", "username": "boxkid", "courseid": BOX_C1, "roleid": 5})
    mark(boxsim, "boxkid", 2 + OFFSET_CM)
    created = calls(simulator).get("core_user_create_users", 0)
    code, run, err = run_json(box, "sync")
    assert code == 0 and run["status"] == "completed", (run, err)
    assert run["progress"]["events_total"] == 3  # with what the collection before it queued
    assert run["collected"] | {"errors": []} == {"run": run["collected"]["run"], "status": "completed",
                                                 "completions": 1, "grades": 0, "accounts": 1, "enrolments": 1,
                                                 "errors": []}
    assert (run["actions"]["users_created"], run["actions"]["enrolments"], run["actions"]["completions"]) == (1, 1, 1)
    assert calls(simulator)["core_user_create_users"] == created + 1  # only the box's newcomer
    kid = server.users("boxkid")[0]
    assert (kid["firstname"], kid["lastname"], kid["email"]) == ("Box", "Kid", "boxkid@example.org")
    assert server.enrolled(C1)["boxkid"] == [5]
    assert server.completion(C1, kid["id"], 2) == 1
    # In that order: the account, then the enrolment, then the completion (a
    # completion for someone not enrolled would have become a conflict).
    done = queued_rows(box, "username = 'boxkid'")
    assert [e["type"] for e in done] == ["user", "enrolment", "completion"]
    assert {e["status"] for e in done} == {"sent"}


def test_a_completion_undone_on_the_box_is_undone_on_the_server(box, boxsim, server):
    baseline(box)
    mark(boxsim, "student3", 1 + OFFSET_CM)
    assert run_json(box, "sync")[0] == 0
    uid = server.user_id("student3")
    assert server.completion(C1, uid, 1) == 1
    mark(boxsim, "student3", 1 + OFFSET_CM, done=False)
    code, run, err = run_json(box, "sync")
    assert code == 0 and run["collected"]["completions"] == 1, (run, err)
    assert server.completion(C1, uid, 1) == 0


def test_collections_repeated_or_killed_queue_nothing_twice_and_a_second_sync_sends_nothing(
        tmp_path, simulator, boxsim, server):
    # batch_size 2: one course per request, so a kill can fall between two courses' commits.
    box = Box(tmp_path, simulator.url, batch_size=2, extra=box_section(tmp_path, boxsim))
    assert box.cli("courses", "add", "C1", "C2").returncode == 0
    for username in ("student1", "student2", "student3"):
        mark(boxsim, username, 1 + OFFSET_CM)
        mark(boxsim, username, 4 + OFFSET_CM)  # C2's page
    boxsim.faults.set(latency_ms=300)
    proc = box.popen("collect", "--full")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not queued_rows(box, "type = 'completion'"):
        time.sleep(0.02)  # the first course is committed ...
    proc.send_signal(signal.SIGKILL)  # ... and the second not yet
    proc.wait(30)
    cut = queued_rows(box, "type = 'completion'")
    assert 0 < len(cut) < 6, "the kill did not fall between the two courses"
    boxsim.faults.set(latency_ms=0)

    for _ in range(2):
        assert box.cli("collect", "--full").returncode == 0
    completions = queued_rows(box, "type = 'completion'")
    assert sorted((e["course_id"], e["username"], json.loads(e["data"])["box_cmid"]) for e in completions) == sorted(
        (course, user, cmid) for course, cmid in ((C1, 101), (C2, 104))
        for user in ("student1", "student2", "student3"))
    history = box.history(limit=10)
    assert [r["status"] for r in history if r["kind"] == "collect"] == ["completed", "completed", "interrupted"]
    assert history[0]["actions"]["completions"] == 0

    code, run, err = run_json(box, "sync")
    assert code == 0 and run["actions"]["completions"] == 6, (run, err)
    for user in ("student1", "student2", "student3"):
        assert server.completion(C1, server.user_id(user), 1) == 1
        assert server.completion(C2, server.user_id(user), 4) == 1
    before = writes(simulator)
    code, run, err = run_json(box, "sync")
    assert code == 0 and run["events_sent"] == 0 and run["collected"]["completions"] == 0, (run, err)
    assert writes(simulator) == before


def test_an_activity_added_on_the_box_only_makes_the_course_differ(box, boxsim, simulator, server):
    baseline(box)
    added = control(boxsim, "edit", {"op": "add_activity", "courseid": BOX_C1, "modname": "page",
                                     "name": "Box-only reading", "completion": 1, "section": 1})
    mark(boxsim, "student1", added["cmid"])
    mark(boxsim, "student1", 2 + OFFSET_CM)
    overrides = calls(simulator).get("core_completion_override_activity_completion_status", 0)
    code, run, err = run_json(box, "sync")
    assert code == 0, err
    [c1] = [c for c in run["courses"] if c["id"] == C1]
    assert "differs" in c1["outcome"] and "'Box-only reading' (page, section 1)" in c1["outcome"]
    assert c1["differs"] == [c for c in c1["differs"] if "Box-only reading" in c]
    [conflict] = box.json("conflicts")
    assert conflict["user"] == "student1" and "'Box-only reading' (page, section 1)" in conflict["reason"]
    assert "no match on the server" in conflict["reason"]
    assert server.completion(C1, server.user_id("student1"), 2) == 1  # the mapped one went
    assert calls(simulator)["core_completion_override_activity_completion_status"] == overrides + 1

    # Force Sync pushes what maps, never the unmapped one.
    assert box.cli("conflicts", "retry", str(conflict["id"])).returncode == 0
    code, run, err = run_json(box, "sync", "--force")
    assert code == 0, err
    assert calls(simulator)["core_completion_override_activity_completion_status"] == overrides + 1
    [again] = box.json("conflicts")
    assert again["id"] == conflict["id"] and "Box-only reading" in again["reason"]


def test_the_boxs_moodle_down_collect_exits_3_and_the_sync_of_the_queue_still_runs(box, boxsim, server):
    baseline(box)
    boxsim.stop()
    result = box.cli("collect")
    assert result.returncode == 3, result.stderr
    assert "does not answer" in result.stdout
    events = [{"type": "completion", "id": "app-1", "course_id": C1, "user": "student4", "cmid": 2,
               "completed": True}]
    assert box.enqueue(events).returncode == 0
    code, run, err = run_json(box, "sync")
    # What was queued went; the learners' work in the box's Moodle waits: amber, never a plain success.
    assert code == 0 and run["status"] == "completed_with_warnings", (run, err)
    assert run["reasons"] == [{"code": "box_down"}]
    assert run["collected"]["status"] == "skipped_offline"
    assert "does not answer" in run["collected"]["errors"][0]
    assert server.completion(C1, server.user_id("student4"), 2) == 1
    status = box.status()
    assert status["box_moodle"]["reachable"] is False
    assert {(r["kind"], r["trigger"]) for r in box.history(10)[:2]} == {("sync", "cli"), ("collect", "sync")}  # the collection inside the sync


def test_check_covers_both_moodles_and_names_what_the_boxs_service_lacks(tmp_path, simulator):
    from moodle_simulator import start_simulator

    lacking = start_simulator(token=BOX_TOKEN, box=True, without_functions=["gradereport_user_get_grade_items"])
    try:
        box = Box(tmp_path, simulator.url, extra=box_section(tmp_path, lacking))
        code, result, err = run_json(box, "check")
        assert code == 0, err
        assert result["online"] and result["missing_functions"] == []
        assert result["box"]["online"] and "box" in result["box"]["site_name"].lower()
        assert result["box"]["missing_functions"] == ["gradereport_user_get_grade_items"]
        text = box.cli("check").stdout
        assert ("box's Moodle: warning: the service lacks gradereport_user_get_grade_items: add them to the "
                "service 'moodle_sync_agent'") in text
        lacking.stop()
        assert box.cli("check").returncode == 3
    finally:
        lacking.stop()


# -- the daemon -------------------------------------------------------------------------------------

D = datetime(2026, 12, 1, tzinfo=timezone.utc)


def test_the_daemon_collects_every_collect_minutes_reading_only_the_active_learners(tmp_path, simulator, boxsim):
    box = Box(tmp_path, simulator.url, extra=box_section(tmp_path, boxsim, collect_minutes=15)
              + "[schedule]\nenabled = no\n")
    assert box.cli("courses", "add", "C1").returncode == 0
    config = load_config(box.config)
    open_db(config.agent.database)
    try:
        fake = FakeClock(D)
        daemon = Daemon(config, fake.clock, rng=random.Random(7))
        drive(daemon, fake, D + timedelta(minutes=14), step_s=60)
        rows = collections()
        assert len(rows) == 1 and rows[0].force is False  # at once, then every 15 minutes
        # The first time everyone is new, but no one has been in the course yet: nothing of theirs to read
        # (a teacher's override for them is read by the full collection every sync starts with).
        assert rows[0].actions["learners_read"] == 0 and rows[0].actions["enrolments"] == 5

        reads = calls(boxsim).get("core_completion_get_activities_completion_status", 0)
        mark(boxsim, "student2", 1 + OFFSET_CM)
        drive(daemon, fake, D + timedelta(minutes=16), step_s=60)
        rows = collections()
        assert len(rows) == 2
        assert rows[-1].actions["learners_read"] == 1 and rows[-1].actions["completions"] == 1
        assert calls(boxsim)["core_completion_get_activities_completion_status"] == reads + 1
        boxsim.faults.set(clock_offset_s=120)  # the box's Moodle lives the minutes the fake clock skips
        drive(daemon, fake, D + timedelta(minutes=59), step_s=60)
        rows = collections()
        # Read once more (Moodle moves an access at most once a minute), then no more.
        assert len(rows) == 4 and [r.actions["learners_read"] for r in rows[2:]] == [1, 0]
        assert all((r.kind, r.trigger, r.status) == ("collect", "schedule", "completed") for r in rows)
        assert Event.select().where(Event.type == "completion").count() == 1
        assert Run.select().where(Run.kind != "collect").count() == 0
    finally:
        close_db()


def collections() -> list[Run]:
    return list(Run.select().where(Run.kind == "collect").order_by(Run.started_at))


def test_a_sync_asked_of_the_daemon_starts_with_a_full_collection(tmp_path, simulator, boxsim, server):
    box = Box(tmp_path, simulator.url, extra=box_section(tmp_path, boxsim, collect_minutes=15)
              + "[schedule]\nenabled = no\n")
    assert box.cli("courses", "add", "C1").returncode == 0
    config = load_config(box.config)
    open_db(config.agent.database)
    try:
        settings.put(schedule_enabled=False)
        log = tmp_path / "agent.log"
        agent = subprocess.Popen(box.argv("run"), env=box.env(), cwd=box.dir, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        try:
            mark(boxsim, "student5", 2 + OFFSET_CM)
            result = box.cli("sync", "--via-agent", "--json", timeout=90)
            assert result.returncode == 0, result.stderr
            run = json.loads(result.stdout)
            assert run["status"] == "completed" and run["collected"]["status"] == "completed"
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(30)
        assert server.completion(C1, server.user_id("student5"), 2) == 1
        full = [r for r in collections() if r.force]
        assert full and full[-1].id == run["collected"]["run"]
        assert TOKEN not in log.read_text() and BOX_TOKEN not in log.read_text()
    finally:
        close_db()


# -- the page ---------------------------------------------------------------------------------------

def test_the_page_shows_the_boxs_moodle_keeps_collections_out_of_last_syncs_and_tells_what_was_found(
        box, boxsim, server):
    import re

    from agent.auth import hash_password
    from webui import create_app

    first = baseline(box)
    config = load_config(box.config)
    app = create_app(config)
    settings.put(password_hash=hash_password("correct horse battery"))
    client = app.test_client()
    login_page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login_page).group(1)
    assert client.post("/login", data={"password": "correct horse battery", "csrf_token": csrf}).status_code == 303
    try:
        mark(boxsim, "student1", 1 + OFFSET_CM)
        mark(boxsim, "student2", 1 + OFFSET_CM)
        assert box.cli("collect").returncode == 0  # the daemon's: queued, not yet sent
        # "Events waiting" counts what the collection queued.
        assert re.search(r'id="queued">(\d+)<', client.get("/").get_data(as_text=True)).group(1) == "2"
        mark(boxsim, "student3", 2 + OFFSET_CM)
        code, run, err = run_json(box, "sync")
        assert code == 0 and run["collected"]["completions"] == 1, (run, err)

        html = client.get("/").get_data(as_text=True)
        assert 'data-region="box-moodle"' in html and boxsim.url in html
        assert 'data-reachable="yes"' in html
        last = re.search(r'id="box-last-collection">(.*?)</dd>', html, re.S).group(1)
        assert "(full)" in last and "status-ok" in last
        # Last Syncs: the two syncs, not the three collections.
        assert re.findall(r'<tr data-run-id="([^"]+)"', html) == [run["id"], first["id"]]
        assert Run.select().where(Run.kind == "collect").count() == 3
        dialog = re.search(rf'<dialog class="info-dialog" id="run-{run["id"]}".*?</dialog>', html, re.S).group(0)
        found = re.search(r'data-field="collected">(.*?)</dd>', dialog, re.S).group(1)
        found, since = found.split('data-field="collected_since"') if "collected_since" in found else (found, "")
        counts = dict(re.findall(r'data-kind="(\w+)".*?<strong>(\d+)</strong>', found, re.S))
        assert counts == {"completions": "1", "grades": "0", "accounts": "0", "enrolments": "0"}
        assert client.get("/api/v1/status").get_json()["queued"] == 0
        client.get("/lang/fr")
        assert "Moodle du boîtier" in client.get("/").get_data(as_text=True)
    finally:
        close_db()


# -- what an idle collection costs (issue 21.8) ---------------------------------------------------

def record_calls(sim) -> list[tuple[str, dict]]:
    """Every function the simulator runs from now on, with its parameters (a batch's entries too:
    the batch calls the same method for each)."""
    seen: list[tuple[str, dict]] = []
    original = sim.ws.call

    def recording(fname, params, *args, **kw):
        seen.append((fname, params))
        return original(fname, params, *args, **kw)

    sim.ws.call = recording
    return seen


def test_an_idle_collection_receives_at_most_a_tenth_of_a_full_ones_bytes_asking_only_access_times(
        box, boxsim):
    # About the bench's box (scripts/bench, section 8: 56 learners in 2 courses): 30 in each course.
    boxsim.state.add_participants(BOX_C1, 25, prefix="gen")
    boxsim.state.add_participants(BOX_C1 + 1, 25, prefix="more")
    assert run_json(box, "collect", "--full")[0] == 0
    boxsim.faults.set(clock_offset_s=120)  # the accesses are more than a minute old: nobody is read again
    received = {}
    for mode, args in (("idle", ()), ("full", ("--full",))):
        boxsim.stats.reset()
        seen = record_calls(boxsim)
        code, run, err = run_json(box, "collect", *args)
        assert code == 0 and run["status"] == "completed", (run, err)
        received[mode] = run["bytes_received"]
        assert 0 < run["bytes_received"] <= boxsim.stats.snapshot()["bytes_out"], (run, boxsim.stats.snapshot())
        if mode == "idle":
            assert sum(run["actions"].values()) == 0, run
            enrolled = [params for fname, params in seen if fname == "core_enrol_get_enrolled_users"]
            assert enrolled, seen
            for params in enrolled:
                assert {"name": "userfields", "value": "username,lastcourseaccess"} in params["options"], params
        del boxsim.ws.call  # the class's method again
    assert received["idle"] <= 0.10 * received["full"], received


def test_the_reads_of_small_courses_share_requests(box, boxsim):
    # C1 and C2, one page each: their first pages ride with the courses' call,
    # and their learners' completion states and grades go in one batch.
    baseline(box)
    mark(boxsim, "student1", 1 + OFFSET_CM)
    mark(boxsim, "student2", 4 + OFFSET_CM)
    for args, reads, completions in (((), 2, 2), (("--full",), 10, 0)):
        boxsim.stats.reset()
        code, run, err = run_json(box, "collect", *args)
        assert code == 0 and run["status"] == "completed", (run, err)
        stats = boxsim.stats.snapshot()
        assert stats["calls"]["core_completion_get_activities_completion_status"] == reads
        assert run["actions"]["completions"] == completions and run["actions"]["learners_read"] == reads
        # The site's information; the courses with their first pages; the reads of both.
        assert stats["requests"] == 3, stats
