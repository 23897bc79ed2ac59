"""The sync down (agent/down/pull.py): the server's progress into the box's own
Moodle, with [sync] direction. Two simulators on loopback, the box's
(``box=True``: C1 is 12 there, cmid 101 is the server's 1, student1 is user
23, student2 24) and the school's, driven through the real CLI."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.helpers import (BOX_C1, BOX_TOKEN, C1, OFFSET_CM, TOKEN, Box, MoodleReader, box_section, calls,
                           control, make_box, mark, run_json, writes)
from tests.helpers import conflicts_log, grade, server_override
from tests.helpers import page_of as page
from tests.helpers import synced as sync

def directions(box) -> list[str]:
    with sqlite3.connect(box.database) as conn:
        return [r[0] for r in conn.execute("SELECT direction FROM syncrun WHERE kind != 'collect' "
                                           "ORDER BY started_at")]


def test_a_direction_other_than_up_down_or_both_is_refused_naming_the_key(tmp_path):
    from agent.config import ConfigError, load_config

    box = Box(tmp_path, "http://127.0.0.1:9", extra="[sync]\ndirection = sideways\n")
    with pytest.raises(ConfigError, match=r"\[sync\] direction: must be up, down or both, got 'sideways'"):
        load_config(box.config)
    assert load_config(Box(tmp_path, "http://127.0.0.1:9").config).sync.direction == "up"


def test_both_ways_the_servers_completion_and_grade_land_on_the_box_then_nothing_is_sent(
        tmp_path, simulator, boxsim):  # noqa: F811
    box = make_box(tmp_path, simulator, boxsim, "both")
    on_box = MoodleReader(boxsim.url, BOX_TOKEN)
    sync(box)
    server_override(simulator, 3, 1, 1)  # student1, the server's ids
    grade(simulator, TOKEN, C1, 3, 4, 66)  # student2
    run = sync(box)
    assert run["direction"] == "both"
    # The grade completes the assignment on the server (completion on grade): that comes down too.
    assert run["actions"]["completions_down"] == 2 and run["actions"]["grades_down"] == 1, run
    assert on_box.completion(BOX_C1, 23, 1 + OFFSET_CM) == 1
    assert on_box.completion(BOX_C1, 24, 3 + OFFSET_CM) == 1
    assert on_box.grade(BOX_C1, 24, 3 + OFFSET_CM)[0] == 66

    before = writes(simulator), writes(boxsim)
    again = sync(box)
    assert (writes(simulator), writes(boxsim)) == before  # no echo either way
    assert again["collected"]["completions"] == again["collected"]["grades"] == 0
    assert again["actions"]["completions_down"] == again["actions"]["grades_down"] == 0
    assert again["events_sent"] == 0 and directions(box) == ["both"] * 3


def test_direction_up_writes_nothing_into_the_boxs_moodle_and_a_change_applies_from_the_next_sync(
        tmp_path, simulator, boxsim):  # noqa: F811
    box = make_box(tmp_path, simulator, boxsim, "up")
    sync(box)
    server_override(simulator, 3, 1, 1)
    before = writes(boxsim)
    run = sync(box)
    # The box's Moodle is only read (course completion and badges compared: agent/awards.py).
    assert writes(boxsim) == before and "completions_down" not in run["actions"]
    assert run["courses"] and all(c["awards"].startswith("course completion and badges: the same on both sides")
                                  for c in run["courses"])
    assert MoodleReader(boxsim.url, BOX_TOKEN).completion(BOX_C1, 23, 1 + OFFSET_CM) == 0
    assert directions(box) == ["up", "up"]

    # Changed as the page does (the database's preference): the next sync runs both ways.
    from agent.store import settings
    from agent.store.schema import close_db, open_db

    open_db(box.database)
    try:
        settings.put(sync_direction="both")
    finally:
        close_db()
    run = sync(box)
    assert run["actions"]["completions_down"] == 1
    assert MoodleReader(boxsim.url, BOX_TOKEN).completion(BOX_C1, 23, 1 + OFFSET_CM) == 1
    assert directions(box) == ["up", "up", "both"]


def test_direction_down_writes_nothing_to_the_server(tmp_path, simulator, boxsim):  # noqa: F811
    box = make_box(tmp_path, simulator, boxsim, "down")
    sync(box)
    mark(boxsim, "student1", 2 + OFFSET_CM)  # on the box: stays there
    server_override(simulator, 4, 1, 1)  # on the server: comes down
    before = writes(simulator)
    run = sync(box)
    assert writes(simulator) == before
    assert MoodleReader(simulator.url, TOKEN).completion(C1, 3, 2) == 0
    assert run["actions"]["completions_down"] == 1
    assert MoodleReader(boxsim.url, BOX_TOKEN).completion(BOX_C1, 24, 1 + OFFSET_CM) == 1


@pytest.mark.parametrize("box_later", [True, False])
def test_a_grade_changed_on_both_sides_the_later_wins_and_the_log_holds_both(
        tmp_path, simulator, boxsim, box_later):  # noqa: F811
    box = make_box(tmp_path, simulator, boxsim, "both")
    sync(box)
    base = 1_900_000_000
    boxsim.state.set_clock(base + (100 if box_later else 0))
    simulator.state.set_clock(base + (0 if box_later else 100))
    grade(boxsim, BOX_TOKEN, BOX_C1, 3 + OFFSET_CM, 24, 50)
    grade(simulator, TOKEN, C1, 3, 4, 90)
    run = sync(box)
    assert run["actions"]["two_way_conflicts"] == 1
    [logged] = conflicts_log(box)
    assert (logged["username"], logged["cmid"], logged["kind"]) == ("student2", 3, "grade")
    assert (logged["box_value"], logged["server_value"]) == (50, 90)
    assert logged["kept"] == ("box" if box_later else "server") and logged["rule"] == "the later change wins"
    kept = 50 if box_later else 90
    [shown] = run["two_way_conflicts"]
    assert (shown["box_value"], shown["server_value"], shown["kept"]) == (50, 90, logged["kept"])
    html = page(box)
    import re
    dialog = re.search(rf'<dialog class="info-dialog" id="run-{run["id"]}".*?</dialog>', html, re.S).group(0)
    item = re.search(r'data-field="two_way_conflicts">.*?<li data-kept="(\w+)">(.*?)</li>', dialog, re.S)
    assert item.group(1) == logged["kept"] and "student2" in item.group(2) and "box 50, server 90" in item.group(2)
    assert MoodleReader(simulator.url, TOKEN).grade(C1, 4, 3)[0] == kept
    assert MoodleReader(boxsim.url, BOX_TOKEN).grade(BOX_C1, 24, 3 + OFFSET_CM)[0] == kept
    before = writes(simulator), writes(boxsim)
    sync(box)
    assert (writes(simulator), writes(boxsim)) == before and len(conflicts_log(box)) == 1


def test_a_kill_in_the_middle_of_the_way_down_loses_nothing_applies_nothing_twice_and_echoes_nothing(
        tmp_path, simulator, boxsim):  # noqa: F811
    import signal
    import time

    # batch_size 1: a request per write, so that the kill falls between two of them.
    box = Box(tmp_path, simulator.url, batch_size=1,
              extra=box_section(tmp_path, boxsim) + "\n[sync]\ndirection = both\n")
    assert box.cli("courses", "add", "C1", "C2").returncode == 0
    sync(box)
    for userid in (3, 4, 5):  # student1..3 on the server
        server_override(simulator, userid, 1, 1)  # C1
        server_override(simulator, userid, 4, 1)  # C2's page
    override = "core_completion_override_activity_completion_status"
    start = calls(boxsim).get(override, 0)
    boxsim.faults.set(latency_ms=200)
    proc = box.popen("sync")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and calls(boxsim).get(override, 0) == start:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    boxsim.faults.set(latency_ms=0)
    assert 0 < calls(boxsim).get(override, 0) - start < 6, "the kill did not fall in the middle of the way down"

    before_server = writes(simulator)
    run = sync(box)
    on_box = MoodleReader(boxsim.url, BOX_TOKEN)
    for userid in (23, 24, 25):
        assert on_box.completion(BOX_C1, userid, 1 + OFFSET_CM) == 1
        assert on_box.completion(BOX_C1 + 1, userid, 4 + OFFSET_CM) == 1
    # What the killed run wrote into the box comes back in the collection: equal to the server's, it is not sent.
    assert writes(simulator) == before_server and run["events_sent"] == 0
    before = writes(simulator), writes(boxsim)
    sync(box)
    assert (writes(simulator), writes(boxsim)) == before


def test_a_learner_enrolled_on_the_server_unknown_on_the_box_gets_account_and_enrolment_there(
        tmp_path, simulator, boxsim):  # noqa: F811

    box = make_box(tmp_path, simulator, boxsim, "both")
    sync(box)
    control(simulator, "edit", {"op": "add_user", "username": "newkid", "firstname": "New", "lastname": "Kid",
                                "email": "newkid@example.org"})
    control(simulator, "edit", {"op": "enrol_user", "username": "newkid", "courseid": C1, "roleid": 5})
    run = sync(box)
    assert run["actions"]["accounts_down"] == 1 and run["actions"]["enrolments_down"] == 1, run
    on_box = MoodleReader(boxsim.url, BOX_TOKEN)
    [kid] = on_box.users("newkid")
    assert (kid["firstname"], kid["email"]) == ("New", "newkid@example.org")
    assert "newkid" in on_box.enrolled(BOX_C1) and "newkid" not in on_box.enrolled(BOX_C1 + 1)
    # The next collection finds them on the box: nothing goes back up, nothing is made twice.
    before = sum(calls(simulator).get(f, 0) for f in ("core_user_create_users", "enrol_manual_enrol_users"))
    again = sync(box)
    assert again["actions"]["accounts_down"] == again["actions"]["enrolments_down"] == 0
    assert sum(calls(simulator).get(f, 0) for f in ("core_user_create_users", "enrol_manual_enrol_users")) == before


def test_the_information_dialog_shows_up_and_down_apart(tmp_path, simulator, boxsim):  # noqa: F811
    import re

    from agent.auth import hash_password
    from agent.config import load_config
    from agent.store.schema import close_db
    from agent.store import settings
    from webui import create_app

    box = make_box(tmp_path, simulator, boxsim, "both")
    sync(box)
    mark(boxsim, "student2", 2 + OFFSET_CM)  # up
    server_override(simulator, 3, 1, 1)  # down
    run = sync(box)
    assert run["actions"]["completions"] == 1 and run["actions"]["completions_down"] == 1, run
    app = create_app(load_config(box.config))
    settings.put(password_hash=hash_password("correct horse battery"))
    client = app.test_client()
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
    assert client.post("/login", data={"password": "correct horse battery", "csrf_token": csrf}).status_code == 303
    try:
        html = client.get("/").get_data(as_text=True)
        dialog = re.search(rf'<dialog class="info-dialog" id="run-{run["id"]}".*?</dialog>', html, re.S).group(0)
        actions = re.search(r'data-field="actions">(.*?)</dd>', dialog, re.S).group(1)
        completions = re.search(r'data-kind="completions".*?</li>', actions, re.S).group(0)
        assert re.search(r'data-way="up"[^>]*>1 ↑<', completions) and re.search(r'data-way="down"[^>]*>1 ↓<',
                                                                                  completions)
        # Read out: a counted text (a plural entry, tests/test_i18n.py), not the key.
        assert 'aria-label="1 to the server"' in completions and 'aria-label="1 into the box' in completions
        assert 'data-kind="two_way_conflicts"' in actions
        assert re.search(r'data-field="direction">Both ways<', dialog)
        # The box's Moodle's bytes apart from the server's.
        assert run["box_bytes"]["sent"] > 0 and run["box_bytes"]["received"] > 0
        assert 'data-field="box_bytes"' in dialog
        assert '<option value="both" selected>' in html
    finally:
        close_db()


def test_with_accounts_down_off_no_account_is_made_on_the_box(tmp_path, simulator, boxsim):  # noqa: F811

    box = make_box(tmp_path, simulator, boxsim, "both", "accounts_down = no\n")
    sync(box)
    control(simulator, "edit", {"op": "add_user", "username": "newkid", "firstname": "New", "lastname": "Kid",
                                "email": "newkid@example.org"})
    control(simulator, "edit", {"op": "enrol_user", "username": "newkid", "courseid": C1, "roleid": 5})
    run = sync(box)
    assert run["actions"]["accounts_down"] == run["actions"]["enrolments_down"] == 0, run
    assert MoodleReader(boxsim.url, BOX_TOKEN).users("newkid") == []


def test_an_unenrolment_on_either_side_is_not_copied(tmp_path, simulator, boxsim):  # noqa: F811
    box = make_box(tmp_path, simulator, boxsim, "both")
    sync(box)
    # The simulators have no unenrol function: their records, as an unenrolment leaves them.
    del simulator.state.enrolments[C1][5]  # student3 on the server
    del boxsim.state.enrolments[BOX_C1][24]  # student2 on the box
    for _ in range(2):
        run = sync(box)
        assert run["actions"]["enrolments_down"] == run["actions"]["enrolments"] == 0, run
    assert "student3" in MoodleReader(boxsim.url, BOX_TOKEN).enrolled(BOX_C1)
    assert "student2" in MoodleReader(simulator.url, TOKEN).enrolled(C1)
    assert "student2" not in MoodleReader(boxsim.url, BOX_TOKEN).enrolled(BOX_C1)


def test_a_push_the_server_refused_does_not_count_as_on_the_server_so_nothing_comes_down_over_it(
        tmp_path, simulator, boxsim):  # noqa: F811
    box = make_box(tmp_path, simulator, boxsim, "both")
    sync(box)
    server_override(simulator, 3, 1, 1)
    assert sync(box)["actions"]["completions_down"] == 1  # done on both sides now
    mark(boxsim, "student1", 1 + OFFSET_CM, done=False)  # undone on the box
    simulator.faults.set(fail_function={"core_completion_override_activity_completion_status": "nopermissions"})
    run = sync(box, "completed_with_warnings")  # the refused push waits as a conflict
    assert run["conflicts"] == 1 and run["actions"]["completions"] == 0, run
    assert run["reasons"] == [{"code": "conflicts", "n": 1}]
    simulator.faults.clear()
    run = sync(box)
    # The server still holds "done", as it did: no change there, nothing written over the box's undo.
    assert run["actions"]["completions_down"] == 0 and run["actions"]["two_way_conflicts"] == 0, run
    assert MoodleReader(boxsim.url, BOX_TOKEN).completion(BOX_C1, 23, 1 + OFFSET_CM) == 0


def test_the_boxs_moodle_rejecting_its_token_stops_only_the_way_down(tmp_path, simulator, boxsim):  # noqa: F811
    box = make_box(tmp_path, simulator, boxsim, "both")
    sync(box)
    server_override(simulator, 3, 1, 1)
    boxsim.faults.set(reject_token=True)
    code, run, err = run_json(box, "sync")
    assert run["status"] == "completed_with_errors", (run, err)
    assert "direction down: the box's Moodle rejected its token ([box] token_file)" in run["errors"]
    assert BOX_TOKEN not in str(run)
    boxsim.faults.clear()
    assert sync(box)["actions"]["completions_down"] == 1  # brought down once the box's Moodle takes its token


def test_check_names_the_write_functions_the_boxs_service_lacks_when_syncing_down(tmp_path, simulator):
    from moodle_simulator import start_simulator

    lacking = start_simulator(token=BOX_TOKEN, box=True, without_functions=["core_grades_update_grades"])
    try:
        for direction, missing in (("up", []), ("both", ["core_grades_update_grades"])):
            box = Box(
                tmp_path, simulator.url, extra=box_section(tmp_path, lacking) + f"\n[sync]\ndirection = {direction}\n")
            code, result, err = run_json(box, "check")
            assert code == 0, err
            assert result["box"]["missing_functions"] == missing, direction
            assert result["missing_functions"] == []
    finally:
        lacking.stop()


def test_the_way_down_reads_the_grades_of_the_boxs_learners_not_of_the_whole_server_course(
        tmp_path, simulator, boxsim):  # noqa: F811
    # A server course holds the learners of every box: 2,000 of other boxes join C1 there. The way down
    # asks the grades of this box's learners only, never the whole course's report (userid=0). (The
    # participant list it reads for the accounts still grows with the course: the README says so.)
    box = make_box(tmp_path, simulator, boxsim, "down", "accounts_down = no\n")
    sync(box)

    def received_by_a_sync() -> int:
        simulator.stats.reset()
        sync(box)
        return simulator.stats.snapshot()["bytes_out"]

    alone = received_by_a_sync()
    simulator.state.add_participants(C1, 2000, prefix="otherbox")
    sync(box)  # the first sync after them: their profiles are read once
    crowded = received_by_a_sync()
    whole = json.dumps(MoodleReader(simulator.url, TOKEN).call("gradereport_user_get_grade_items",
                                                                courseid=C1, userid=0))
    assert crowded - alone < len(whole) / 2, (alone, crowded, len(whole))


def test_a_bad_grade_from_the_server_is_named_and_never_written_into_the_box(tmp_path, simulator, boxsim):
    # What the server answers is checked as strictly as the box's: its NaN is left out and named,
    # and the rest of the way down goes on.
    box = make_box(tmp_path, simulator, boxsim, "down")
    on_box = MoodleReader(boxsim.url, BOX_TOKEN)
    sync(box)
    server_override(simulator, 3, 1, 1)  # student1, the server's ids
    grade(simulator, TOKEN, C1, 3, 4, 66)  # student2's grade, answered as NaN from now on
    simulator.faults.set(hostile_grade={"cmid": 3, "userid": 4, "value": float("nan")})
    code, run, err = run_json(box, "sync")
    assert (code, run["status"]) == (1, "completed_with_errors"), (run, err)  # as a NaN from the box's Moodle
    assert "course C1: the server's grade nan of student2 in activity 3 is not a finite number: left out of " \
           "the way down" in run["errors"], run["errors"]
    assert on_box.completion(BOX_C1, 23, 1 + OFFSET_CM) == 1
    assert on_box.grade(BOX_C1, 24, 3 + OFFSET_CM)[0] is None
    simulator.faults.set(hostile_grade=None)
    assert sync(box)["actions"]["grades_down"] == 1
    assert on_box.grade(BOX_C1, 24, 3 + OFFSET_CM)[0] == 66
