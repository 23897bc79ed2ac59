"""Issue 22: what a teacher sees on each side matches. Assignment grades go
into the assignment (mod_assign_save_grades), up and down, with
core_grades_update_grades as the fallback when a service lacks it; course
completion and badges, which Moodle awards by itself, are compared by verify
and by the sync (agent/awards.py), never written. Two simulators on loopback,
the box's (``box=True``: other ids) and the school's, driven through the real
CLI (as tests/test_collect.py and tests/test_down.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from agent.awards import Side, badge_names, compare, course_completion
from tests.helpers import (BOX_C1, BOX_TOKEN, C1, OFFSET_CM, TOKEN, Box, MoodleReader, box_section, calls, make_box,
                           mark, run_json, writes)
from tests.helpers import synced as sync

ASSIGN = 3  # the server's cmid of "Assign C1"; the box's is 103


def instance(sim, token: str, courseid: int, cmid: int) -> int:
    """The assignment's instance id, from core_course_get_contents (what the agent stores)."""
    contents = MoodleReader(sim.url, token).call("core_course_get_contents", courseid=courseid)
    return next(m["instance"] for s in contents for m in s["modules"] if m["id"] == cmid)


def assign_grade(sim, token: str, assignmentid: int, userid: int, grade: float) -> None:
    """A teacher grading in the assignment."""
    assert MoodleReader(sim.url, token).call(
        "mod_assign_save_grades", assignmentid=assignmentid, applytoall=0,
        **{"grades[0][userid]": userid, "grades[0][grade]": grade, "grades[0][attemptnumber]": -1,
           "grades[0][addattempt]": 0, "grades[0][workflowstate]": ""}) is None


def assign_grades(sim, token: str, assignmentid: int) -> dict[int, str]:
    """userid -> grade, as the assignment's own table holds them (mod_assign_get_grades)."""
    got = MoodleReader(sim.url, token).call("mod_assign_get_grades", assignmentids=[assignmentid])
    return {g["userid"]: g["grade"] for a in got["assignments"] for g in a["grades"]}


def edit(sim, op: str, **spec) -> dict:
    answer = requests.post(f"{sim.url}/__sim/edit", json={"op": op, **spec}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


# -- assignment grades, up and down -----------------------------------------------------------------

def test_an_assignment_grade_collected_on_the_box_is_in_the_servers_assignment_and_gradebook(
        tmp_path, simulator, boxsim):  # noqa: F811
    box = make_box(tmp_path, simulator, boxsim, "up")
    sync(box)
    server = MoodleReader(simulator.url, TOKEN)
    student2 = server.user_id("student2")
    on_server = instance(simulator, TOKEN, C1, ASSIGN)
    assert student2 not in assign_grades(simulator, TOKEN, on_server)
    assign_grade(boxsim, BOX_TOKEN, instance(boxsim, BOX_TOKEN, BOX_C1, ASSIGN + OFFSET_CM), 24, 77)  # student2

    before = calls(simulator)
    run = sync(box)
    assert run["collected"]["grades"] == 1 and run["actions"]["grades"] == 1
    after = calls(simulator)
    assert after.get("mod_assign_save_grades", 0) == before.get("mod_assign_save_grades", 0) + 1
    assert after.get("core_grades_update_grades", 0) == before.get("core_grades_update_grades", 0)
    # In the assignment itself (a teacher there no longer sees "Not graded"), and in the gradebook.
    assert assign_grades(simulator, TOKEN, on_server)[student2] == "77.00000"
    assert server.grade(C1, student2, ASSIGN)[0] == 77

    before_writes = writes(simulator)
    again = sync(box)
    assert again["events_sent"] == 0 and again["collected"]["grades"] == 0
    assert writes(simulator) == before_writes


def test_an_assignment_grade_on_the_server_comes_down_into_the_boxs_assignment(
        tmp_path, simulator, boxsim):  # noqa: F811
    box = make_box(tmp_path, simulator, boxsim, "both")
    sync(box)
    server = MoodleReader(simulator.url, TOKEN)
    assign_grade(simulator, TOKEN, instance(simulator, TOKEN, C1, ASSIGN), server.user_id("student1"), 64.5)

    run = sync(box)
    assert run["actions"]["grades_down"] == 1, run
    on_box = instance(boxsim, BOX_TOKEN, BOX_C1, ASSIGN + OFFSET_CM)
    assert assign_grades(boxsim, BOX_TOKEN, on_box)[23] == "64.50000"  # student1 on the box
    assert MoodleReader(boxsim.url, BOX_TOKEN).grade(BOX_C1, 23, ASSIGN + OFFSET_CM)[0] == 64.5
    assert calls(boxsim).get("core_grades_update_grades", 0) == 0

    before = writes(simulator), writes(boxsim)
    again = sync(box)
    assert (writes(simulator), writes(boxsim)) == before  # no echo either way
    assert again["events_sent"] == 0 and again["actions"]["grades_down"] == 0


def test_check_lists_mod_assign_save_grades_and_without_it_the_grade_goes_through_the_gradebook(tmp_path):
    from moodle_simulator import start_simulator

    with start_simulator(token=TOKEN) as plain:
        (tmp_path / "a").mkdir()
        box = Box(tmp_path / "a", plain.url)
        result = json.loads(box.cli("check", "--json").stdout)
        assert {"function": "mod_assign_save_grades", "for": "assignments", "present": True} .items() <= \
            result["preferred"][0].items()
        assert "server: needed for assignments: mod_assign_save_grades: present" in box.cli("check").stdout

    with start_simulator(token=TOKEN, without_functions=["mod_assign_save_grades"]) as sim:
        (tmp_path / "b").mkdir()
        box = Box(tmp_path / "b", sim.url)
        checked = box.cli("check")
        assert checked.returncode == 0, checked.stdout  # not an error: the agent works without it
        assert ("server: needed for assignments: mod_assign_save_grades: missing, so assignment grades are "
                "written with core_grades_update_grades: in the gradebook only, the assignment shows them as "
                "not graded") in checked.stdout
        assert "server: functions: all present" in checked.stdout
        assert box.cli("courses", "add", "C1").returncode == 0
        box.enqueue([{"type": "grade", "course_id": C1, "user": "student1", "cmid": ASSIGN, "grade": 42}])
        code, run, err = run_json(box, "sync")
        assert code == 0 and run["status"] == "completed" and run["actions"]["grades"] == 1, (run, err)
        server = MoodleReader(sim.url, TOKEN)
        student1 = server.user_id("student1")
        assert server.grade(C1, student1, ASSIGN)[0] == 42
        assert calls(sim).get("core_grades_update_grades") == 1 and "mod_assign_save_grades" not in calls(sim)
        # What Moodle does with core_grades_update_grades: the assignment's own table stays empty.
        assert student1 not in assign_grades(sim, TOKEN, instance(sim, TOKEN, C1, ASSIGN))


# -- course completion and badges compared ------------------------------------------------------------

def verify(box) -> dict:
    code, run, err = run_json(box, "verify")
    assert code == 0 and run["status"] == "completed", (run, err)
    return {c["shortname"]: c.get("awards") for c in run["courses"]}


def test_same_criteria_verify_reports_course_completion_and_badges_equal(tmp_path, simulator, boxsim):  # noqa: F811
    edit(simulator, "set_completion_criteria", courseid=C1, cmids=[1])
    edit(boxsim, "set_completion_criteria", courseid=BOX_C1, cmids=[1 + OFFSET_CM])
    box = make_box(tmp_path, simulator, boxsim, "up")
    sync(box)
    mark(boxsim, "student1", 1 + OFFSET_CM)  # completes the box's course, and earns its badge there
    run = sync(box)
    assert run["actions"]["completions"] == 1
    server = MoodleReader(simulator.url, TOKEN)
    status = server.call("core_completion_get_course_completion_status", courseid=C1,
                         userid=server.user_id("student1"))
    assert status["completionstatus"]["completed"] is True  # Moodle awarded it from the synced completion
    assert [b["name"] for b in server.call("core_badges_get_user_badges", userid=server.user_id("student1"),
                                           courseid=C1)["badges"]] == ["C1 completion badge"]
    # The sync's Information dialog holds the same line.
    assert {c["shortname"]: c["awards"] for c in run["courses"]}["C1"].startswith(
        "course completion and badges: the same on both sides")
    awards = verify(box)
    assert awards["C1"] == "course completion and badges: the same on both sides for 5 learner(s)"  # C1's students
    before = writes(simulator) + writes(boxsim)
    verify(box)
    assert writes(simulator) + writes(boxsim) == before  # nothing written: Moodle awards them


def test_different_criteria_verify_names_the_learners_and_the_cause(tmp_path, simulator, boxsim):  # noqa: F811
    edit(simulator, "set_completion_criteria", courseid=C1, cmids=[1])
    edit(boxsim, "set_completion_criteria", courseid=BOX_C1, cmids=[1 + OFFSET_CM, 2 + OFFSET_CM])
    box = make_box(tmp_path, simulator, boxsim, "up")
    sync(box)
    mark(boxsim, "student1", 1 + OFFSET_CM)
    sync(box)
    line = verify(box)["C1"]
    assert line.startswith("course completion differs for student1 (completed on the server only); likely cause: "
                           "different completion criteria (box: 2 criteria ("), line
    assert "server: 1 criteria (" in line
    assert "badges differ for student1; likely cause: the course completion differs" in line
    assert "student2" not in line and "student3" not in line

    # The page's Information dialog shows it, in one line.
    from tests.helpers import page_of as page
    html = page(box)
    assert "Course completion and badges, box and server:" in html and "course completion differs for student1" in html


def test_a_badge_on_one_side_only_is_named_as_the_cause():
    box = Side(criteria=["Activity completion: A"], completed={"s1": True, "s2": False},
               badges={"s1": {"C1 completion badge"}, "s2": set()})
    server = Side(criteria=["Activity completion: A"], completed={"s1": True, "s2": False},
                  badges={"s1": set(), "s2": set()})
    assert compare(box, server) == ("badges differ for s1; likely cause: a badge that exists on one side only, "
                                    "or is named differently: 'C1 completion badge' on the box only")
    same_criteria = Side(criteria=["Activity completion: A"], completed={"s1": False, "s2": False},
                         badges={"s1": set(), "s2": set()})
    assert compare(box, same_criteria).startswith(
        "course completion differs for s1 (completed on the box only); likely cause: the same criteria")
    assert compare(server, server) == "course completion and badges: the same on both sides for 2 learner(s)"


def test_the_awards_answers_are_read_as_recorded_and_a_shape_that_is_not_moodles_reads_as_empty():
    recorded = json.loads((Path(__file__).parent / "recordings" / "98_core_completion_get_course_completion_status_completed.json")
                          .read_text())["response"]
    assert course_completion(recorded) == (True, ["Activity completion: Page C3", "Activity completion: URL C3"])
    for data in (None, [], "x", {"completionstatus": []}, {"completionstatus": {"completed": "false"}},
                 {"completionstatus": {"completed": 1, "completions": [1, "a", None]}}):
        assert course_completion(data) == (False, []), data
    assert badge_names({"badges": [{"name": "C1 badge"}, "junk", {"name": 5}]}) == {"C1 badge", "5"}
    assert badge_names({"badges": "all"}) == badge_names([]) == set()


@pytest.mark.parametrize("lacking", [["core_badges_get_user_badges"]])
def test_verify_without_the_comparison_functions_says_so_and_still_checks(tmp_path, boxsim, lacking):  # noqa: F811
    from moodle_simulator import start_simulator

    with start_simulator(token=TOKEN, without_functions=lacking) as sim:
        box = Box(tmp_path, sim.url, extra=box_section(tmp_path, boxsim))
        assert box.cli("courses", "add", "C1").returncode == 0
        sync(box)
        assert verify(box)["C1"] == "course completion and badges not compared: lacking core_badges_get_user_badges"


def test_the_least_rights_sync_accounts_grade_assignments_and_compare_completion_and_badges(tmp_path):
    """Both sides with the non-admin sync account of packaging/moodle/'s presets, not an admin token."""
    from moodle_simulator import start_simulator
    from moodle_simulator.accounts import SYNC_PASSWORD, SYNC_USERNAME

    def token(sim) -> str:
        answer = requests.post(f"{sim.url}/login/token.php", timeout=10, data={
            "username": SYNC_USERNAME, "password": SYNC_PASSWORD, "service": "moodle_sync_agent"}).json()
        return answer["token"]

    with start_simulator(token=TOKEN, sync_account=True) as sim, \
            start_simulator(token=BOX_TOKEN, box=True, sync_account=True) as boxsim:  # noqa: F811
        server_token, box_token = token(sim), token(boxsim)
        (tmp_path / "box-token").write_text(box_token + "\n")
        box = Box(tmp_path, sim.url, token=server_token,
                  extra=f"[box]\nurl = {boxsim.url}\ntoken_file = {tmp_path / 'box-token'}\ntimeout = 5\n")
        assert box.cli("courses", "add", "C1").returncode == 0
        sync(box)
        on_box = MoodleReader(boxsim.url, BOX_TOKEN)
        learner = on_box.user_id("student2")
        assign_grade(boxsim, BOX_TOKEN, instance(boxsim, BOX_TOKEN, BOX_C1, ASSIGN + OFFSET_CM), learner, 81)
        run = sync(box)
        assert run["actions"]["grades"] == 1 and run["errors"] == [], run
        server = MoodleReader(sim.url, TOKEN)
        assert assign_grades(sim, TOKEN, instance(sim, TOKEN, C1, ASSIGN))[server.user_id("student2")] == "81.00000"
        assert verify(box)["C1"].startswith("course completion and badges: the same on both sides for ")


def test_without_mod_assign_save_grades_on_the_box_the_grade_comes_down_into_its_gradebook(tmp_path, simulator):
    from moodle_simulator import start_simulator

    with start_simulator(token=BOX_TOKEN, box=True, without_functions=["mod_assign_save_grades"]) as boxsim:
        box = make_box(tmp_path, simulator, boxsim, "both")
        checked = box.cli("check").stdout
        assert ("box's Moodle: needed for assignments: mod_assign_save_grades: missing, so assignment grades are "
                "written with core_grades_update_grades") in checked
        sync(box)
        server = MoodleReader(simulator.url, TOKEN)
        assign_grade(simulator, TOKEN, instance(simulator, TOKEN, C1, ASSIGN), server.user_id("student1"), 58)
        run = sync(box)
        assert run["actions"]["grades_down"] == 1 and run["errors"] == [], run
        assert MoodleReader(boxsim.url, BOX_TOKEN).grade(BOX_C1, 23, ASSIGN + OFFSET_CM)[0] == 58
        assert calls(boxsim)["core_grades_update_grades"] == 1
