"""The open ends of two-way sync (issue 21, notes of the two-way work), end
to end: two simulators on loopback, the box's and the school's, driven
through the real CLI, direction both. The box's ids as in
tests/test_collect.py (C1 is 12 there, cmid 101 is the server's 1, student1
is user 23 there and 3 on the server)."""

from __future__ import annotations

import json
import signal
import sqlite3
import time

import pytest

from tests.helpers import (BOX_C1, BOX_TOKEN, C1, C2, OFFSET_CM, TOKEN, Box, MoodleReader, box_section, calls,
                           conflicts_log, control, grade, make_box, mark, queued_rows, run_json, server_override, writes)
from tests.helpers import synced as sync


def collect(box) -> dict:
    code, run, err = run_json(box, "collect")
    assert code == 0, err
    return run


def test_a_learner_new_on_the_server_gets_account_and_progress_on_the_box_in_the_same_sync(
        tmp_path, simulator, boxsim):  # noqa: F811
    box = make_box(tmp_path, simulator, boxsim, "both")
    sync(box)
    kid = control(simulator, "edit", {"op": "add_user", "username": "newkid", "firstname": "New", "lastname": "Kid",
                                      "email": "newkid@example.org"})["userid"]
    control(simulator, "edit", {"op": "enrol_user", "username": "newkid", "courseid": C1, "roleid": 5})
    server_override(simulator, kid, 1, 1)
    grade(simulator, TOKEN, C1, 3, kid, 71)
    run = sync(box)
    assert run["actions"]["accounts_down"] == 1 and run["actions"]["enrolments_down"] == 1, run
    assert run["actions"]["grades_down"] == 1 and run["actions"]["completions_down"] == 2, run  # page, graded assign
    on_box = MoodleReader(boxsim.url, BOX_TOKEN)
    [made] = on_box.users("newkid")
    assert on_box.completion(BOX_C1, made["id"], 1 + OFFSET_CM) == 1
    assert on_box.grade(BOX_C1, made["id"], 3 + OFFSET_CM)[0] == 71
    # Collected at the next sync, equal on both sides: nothing is written either way (their account and
    # enrolment, found on the server, are settled without a call).
    before = writes(simulator), writes(boxsim), calls(simulator).get("core_user_create_users", 0)
    again = sync(box)
    assert (writes(simulator), writes(boxsim), calls(simulator).get("core_user_create_users", 0)) == before, again
    assert again["collected"]["completions"] == again["collected"]["grades"] == 0, again


def test_a_completion_done_on_the_server_and_undone_on_the_box_done_wins_and_is_logged(
        tmp_path, simulator, boxsim):  # noqa: F811
    box = make_box(tmp_path, simulator, boxsim, "both")
    sync(box)
    mark(boxsim, "student1", 1 + OFFSET_CM)
    collect(box)
    mark(boxsim, "student1", 1 + OFFSET_CM, done=False)  # the box's last change: not done
    assert collect(box)["actions"]["completions"] == 1
    server_override(simulator, 3, 1, 1)  # a teacher on the server: done
    run = sync(box)
    assert run["actions"]["two_way_conflicts"] == 1, run
    [logged] = conflicts_log(box)
    assert (logged["username"], logged["cmid"], logged["kind"]) == ("student1", 1, "completion")
    assert (logged["box_value"], logged["server_value"], logged["kept"]) == (0, 1, "server")
    assert logged["rule"] == "done wins over not done"
    assert MoodleReader(simulator.url, TOKEN).completion(C1, 3, 1) == 1
    assert MoodleReader(boxsim.url, BOX_TOKEN).completion(BOX_C1, 23, 1 + OFFSET_CM) == 1
    assert {e["status"] for e in queued_rows(box, "username = 'student1' AND type = 'completion'")} == {"discarded"}


def test_a_completion_undone_on_the_server_and_done_again_on_the_box_done_wins_and_is_logged(
        tmp_path, simulator, boxsim):  # noqa: F811
    box = make_box(tmp_path, simulator, boxsim, "both")
    sync(box)
    mark(boxsim, "student1", 1 + OFFSET_CM)
    sync(box)  # done on both sides
    mark(boxsim, "student1", 1 + OFFSET_CM, done=False)
    collect(box)
    boxsim.state.set_clock(int(time.time()) + 120)  # done again later: another state, another event
    mark(boxsim, "student1", 1 + OFFSET_CM)
    collect(box)
    server_override(simulator, 3, 1, 0)
    run = sync(box)
    assert run["actions"]["two_way_conflicts"] == 1, run
    [logged] = conflicts_log(box)
    assert (logged["box_value"], logged["server_value"], logged["kept"]) == (1, 0, "box")
    assert logged["rule"] == "done wins over not done"
    assert MoodleReader(simulator.url, TOKEN).completion(C1, 3, 1) == 1


def test_after_a_kill_between_a_push_and_its_confirmation_a_later_change_on_the_box_is_not_a_conflict(
        tmp_path, simulator, boxsim):  # noqa: F811
    # batch_size 1 and a server slow to answer (the cost is paid after the work): the kill falls after the
    # server took the completion, before its answer came.
    box = Box(tmp_path, simulator.url, batch_size=1,
              extra=box_section(tmp_path, boxsim) + "\n[sync]\ndirection = both\n")
    assert box.cli("courses", "add", "C1", "C2").returncode == 0
    sync(box)
    mark(boxsim, "student1", 1 + OFFSET_CM)
    override = "core_completion_override_activity_completion_status"
    start = calls(simulator).get(override, 0)
    simulator.faults.set(request_cost_ms=1500)
    proc = box.popen("sync")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and calls(simulator).get(override, 0) == start:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # the server has it; the box's event is still queued
    proc.wait(30)
    simulator.faults.set(request_cost_ms=0)
    assert MoodleReader(simulator.url, TOKEN).completion(C1, 3, 1) == 1
    assert [e["status"] for e in queued_rows(box, "username = 'student1' AND type = 'completion'")] == ["queued"]
    mark(boxsim, "student1", 1 + OFFSET_CM, done=False)  # a later change on the box
    run = sync(box)
    assert run["actions"]["two_way_conflicts"] == 0 and conflicts_log(box) == [], run
    assert MoodleReader(simulator.url, TOKEN).completion(C1, 3, 1) == 0  # the box's last word
    assert MoodleReader(boxsim.url, BOX_TOKEN).completion(BOX_C1, 23, 1 + OFFSET_CM) == 0


@pytest.mark.parametrize("slow", [{"latency_ms": 400}, {"request_cost_ms": 800}], ids=["enrolling", "answering"])
def test_accounts_made_on_the_way_down_survive_a_sigkill_made_once_enrolled_once(tmp_path, simulator, boxsim,
                                                                                  slow):  # noqa: F811
    # batch_size 1: a request per call to the box's Moodle, so that the kill falls between two of them:
    # "enrolling", after the box's Moodle answered the accounts' making; "answering" (its cost is paid
    # after the work), after it made them, before its answer came.
    box = Box(tmp_path, simulator.url, batch_size=1,
              extra=box_section(tmp_path, boxsim) + "\n[sync]\ndirection = both\n")
    assert box.cli("courses", "add", "C1", "C2").returncode == 0
    sync(box)
    kids = [f"downkid{i}" for i in range(4)]
    for i, kid in enumerate(kids):
        control(simulator, "edit", {"op": "add_user", "username": kid, "firstname": "Down", "lastname": f"Kid{i}",
                                    "email": f"{kid}@example.org"})
        for course in (C1, C2):
            control(simulator, "edit", {"op": "enrol_user", "username": kid, "courseid": course, "roleid": 5})
    create = "core_user_create_users"
    start = calls(boxsim).get(create, 0)
    boxsim.faults.set(**slow)
    proc = box.popen("sync")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and calls(boxsim).get(create, 0) == start:
        time.sleep(0.01)
    time.sleep(0.2)  # the accounts are made on the box; their enrolment is in flight or not sent
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    boxsim.faults.set(**dict.fromkeys(slow, 0))
    on_box = MoodleReader(boxsim.url, BOX_TOKEN)
    assert len(on_box.users(*kids)) == len(kids), "the kill fell before the accounts were made"
    for _ in range(2):
        sync(box)
    assert calls(boxsim)[create] - start == 1  # made once, found by the look-up after the kill
    assert sorted(u["username"] for u in on_box.users(*kids)) == kids
    # Made with createpassword, whatever the moment of the kill: each needs a password set on the page.
    listed = {r["username"]: r for r in json.loads(box.cli("learners", "list", "--json").stdout)}
    assert all(listed[kid]["needs_password"] and listed[kid]["made_by_agent"] == "down" for kid in kids), listed
    with sqlite3.connect(box.database) as conn:
        marked = dict(conn.execute("SELECT username, box_userid FROM boxaccount WHERE origin = 'down'").fetchall())
    assert marked == {u["username"]: u["id"] for u in on_box.users(*kids)}
    for course in (BOX_C1, BOX_C1 + 1):
        assert set(kids) <= set(on_box.enrolled(course))
    # Nothing of theirs echoed back up as new accounts.
    before = calls(simulator).get("core_user_create_users", 0)
    sync(box)
    assert calls(simulator).get("core_user_create_users", 0) == before
    with sqlite3.connect(box.database) as conn:
        assert conn.execute("SELECT COUNT(*) FROM event WHERE type = 'user' AND status = 'conflict'").fetchone()[0] == 0


def test_a_collection_that_failed_is_no_cut_off_sync_a_change_on_both_sides_is_still_a_conflict(
        tmp_path, simulator, boxsim):  # noqa: F811
    # The box's done then undone are queued; a collection then fails (its row's kind is collect, its trigger
    # not). Only a cut-off sync may have pushed the box's queued values: the server's done is its own change.
    box = make_box(tmp_path, simulator, boxsim, "both")
    sync(box)
    mark(boxsim, "student1", 1 + OFFSET_CM)
    collect(box)
    mark(boxsim, "student1", 1 + OFFSET_CM, done=False)
    assert collect(box)["actions"]["completions"] == 1
    boxsim.faults.set(reject_token=True)
    code, failed, err = run_json(box, "collect")
    boxsim.faults.clear()
    assert failed["kind"] == "collect" and failed["status"] == "failed", (failed, err)
    server_override(simulator, 3, 1, 1)
    run = sync(box)
    assert run["actions"]["two_way_conflicts"] == 1, run
    [logged] = conflicts_log(box)
    assert (logged["box_value"], logged["server_value"], logged["kept"]) == (0, 1, "server")
