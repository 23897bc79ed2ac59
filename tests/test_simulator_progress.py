"""The simulator for issues 21 and 22: assignment grades, course completion, badges, participants in pages,
a huge course and a hostile box.  Real HTTP on loopback to scripts/moodle_simulator throughout.

Part 1 replays recordings 94-105 (tests/recordings).  They were made on a later state of the real server
and on the box's own Moodle, which numbers its courses, users and grade items otherwise than the
simulator's box (README: box C1 = 3, student1..5 = 5..9, 261 participants in C1).  So each replay first
brings the simulator to the recorded state through the Python API (names, enrolments, earlier grades, the
recorded instants), maps the request's ids to the simulator's, and compares the answer's bytes with the
recorded answer whose ids are mapped the same way: 97 and 100 byte for byte as recorded; 101 but for the
badge's id, hash, image context and creation time (same length); 102 and 103, with other participants,
by shape (keys in order, JSON types) after their first five users.
"""

import copy
import json
import math
import re
import time
import tracemalloc

import pytest
import requests

from moodle_simulator import start_simulator
from tests.wsclient import WS, load, php_json, ws, ws_raw

SERVER_WWWROOT, BOX_WWWROOT = "http://127.0.0.1:8080", "http://127.0.0.1:8081"
C1, C2, C3 = 12, 13, 14                 # the simulator's box
STUDENTS = {f"student{i}": 22 + i for i in range(1, 6)}
PAGE, URL, ASSIGN_CMID, ASSIGN = 101, 102, 103, 31       # C1's activities on the simulator's box; ASSIGN: instance
T_SEED = 1795334424                     # seed.T_COURSES: when the seeded badges were made
CHECKED_HEADERS = ("Content-Type", "Cache-Control", "Expires", "Pragma", "Accept-Ranges",
                   "Access-Control-Allow-Origin")


def replay(sim, rec, **mapped):
    """The recorded request, in the recorded order, with some fields' values replaced."""
    fields = [(k, str(mapped.get(k, v))) for k, v in rec["request"].items()]
    r = requests.post(sim.url + WS, data=fields, timeout=30)
    assert r.status_code == rec["http_status"] == 200
    for h in CHECKED_HEADERS:
        assert r.headers[h] == rec["response_headers"][h], h
    return r


def control(sim, name, body, status=200):
    data = body if isinstance(body, str) else json.dumps(body)
    r = requests.post(f"{sim.url}/__sim/{name}", data=data, headers={"Content-Type": "application/json"},
                      timeout=30)
    assert r.status_code == status, r.text
    return r.json()


def grade_fields(userid, grade, text=""):
    return {"userid": userid, "grade": grade, "attemptnumber": -1, "addattempt": 0, "workflowstate": "",
            "plugindata": {"assignfeedbackcomments_editor": {"text": text, "format": 1}}}


def save_grades(sim, *grades, assignmentid=ASSIGN, token="TOKEN"):
    return ws(sim, "mod_assign_save_grades", token=token, assignmentid=assignmentid, applytoall=0,
              grades=[grade_fields(u, g) for u, g in grades])


def same_shape(got, want, where="answer"):
    """Same keys in the same order at every level, and the same JSON types."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), (where, list(got), list(want))
        for k in want:
            same_shape(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list), where
        for i, g in enumerate(got):
            if want:
                same_shape(g, want[min(i, len(want) - 1)], f"{where}[{i}]")
    else:
        assert type(got) is type(want), (where, got, want)


@pytest.fixture
def box():
    sim = start_simulator(box=True, wwwroot=BOX_WWWROOT)
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def server():
    sim = start_simulator(wwwroot=SERVER_WWWROOT)
    try:
        yield sim
    finally:
        sim.stop()


# ---------------------------------------------------------------------------
# Part 1: the recordings
# ---------------------------------------------------------------------------

def test_replay_94_95_96_save_grades_get_grades_and_the_grade_book(box):
    box.state.edit_activity(ASSIGN_CMID, name="Assign C1")      # the recorded box's names
    box.state.edit_course_settings(C1, idnumber="")
    # What 95 lists from before 94: student2 graded 73; student3 graded, then 85.
    for at, userid, grade in ((1796219624, STUDENTS["student2"], 73), (1796219652, STUDENTS["student3"], 60),
                              (1796221105, STUDENTS["student3"], 85)):
        box.state.set_clock(at)
        assert save_grades(box, (userid, grade)) is None
    box.state.set_clock(1796221821)
    student4 = STUDENTS["student4"]
    rec = load("94")
    r = replay(box, rec, assignmentid=ASSIGN, **{"grades[0][userid]": student4})
    assert r.content == b"null" and r.headers["Content-Length"] == rec["response_headers"]["Content-Length"]

    rec = load("95")
    r = replay(box, rec, **{"assignmentids[0]": ASSIGN})
    want = copy.deepcopy(rec["response"])
    want["assignments"][0]["assignmentid"] = ASSIGN
    for grade, name in zip(want["assignments"][0]["grades"], ("student2", "student3", "student4")):
        grade["userid"] = STUDENTS[name]
    assert r.content == php_json(want)
    assert r.json()["assignments"][0]["grades"][2]["grade"] == "78.50000"      # a string, 5 decimals

    rec = load("96")
    r = replay(box, rec, courseid=C1, userid=student4)
    want = copy.deepcopy(rec["response"])
    report = want["usergrades"][0]
    report.update(courseid=C1, userid=student4)
    item, total = report["gradeitems"]
    item.update(id=42, iteminstance=ASSIGN, categoryid=41, cmid=ASSIGN_CMID)   # seed.BOX: grade items +40
    total.update(id=41, iteminstance=41)
    assert r.content == php_json(want)


def test_replay_97_nonexistent_assignment(box):
    rec = load("97")
    r = replay(box, rec, **{"grades[0][userid]": STUDENTS["student4"]})
    assert r.content == php_json(rec["response"])
    assert r.headers["Content-Length"] == rec["response_headers"]["Content-Length"]
    assert box.state.dump(only=["assign_grades"])["assign_grades"] == []


def recorded_c3(sim):
    """The server of 98-101: C3's activities named as there, student4 and student5 enrolled, student4
    completed both at 1796219562 (its criteria, the seed's default: all activities with completion)."""
    sim.state.edit_activity(7, name="Page C3")
    sim.state.edit_activity(8, name="URL C3")
    for userid in (6, 7):
        sim.state.enrol_user(userid=userid, courseid=4)
    sim.state.set_clock(1796219562)
    for cmid in (7, 8):
        ws(sim, "core_completion_override_activity_completion_status", userid=6, cmid=cmid, newstate=1)


@pytest.mark.parametrize("name", ["98", "99"])
def test_replay_98_99_course_completion_status(server, name):
    recorded_c3(server)
    rec = load(name)
    r = replay(server, rec)
    assert r.content == php_json(rec["response"])
    assert r.headers["Content-Length"] == rec["response_headers"]["Content-Length"]


def test_replay_100_no_criteria(server):
    server.state.set_completion_criteria(2, None)
    rec = load("100")
    r = replay(server, rec)
    assert r.content == php_json(rec["response"])
    assert r.headers["Content-Length"] == rec["response_headers"]["Content-Length"]


def test_replay_101_user_badges(server):
    recorded_c3(server)
    rec = load("101")
    r = replay(server, rec)
    got = r.json()["badges"][0]
    assert re.fullmatch(r"[0-9a-f]{40}", got["uniquehash"])
    # The seed makes one badge per course (C3's is the third) and C3's context is 19 here.
    want = copy.deepcopy(rec["response"])
    want["badges"][0].update(id=3, timecreated=T_SEED, uniquehash=got["uniquehash"],
                             badgeurl=f"{SERVER_WWWROOT}/webservice/pluginfile.php/19/badges/badgeimage/3/f3")
    assert r.content == php_json(want)
    assert r.headers["Content-Length"] == rec["response_headers"]["Content-Length"]     # the same length
    assert (got["dateissued"], got["timemodified"], got["status"]) == (1796219562, 1796219562, 3)


def box_with_recorded_participants(sim):
    """The box's C1 as recorded in 102-105: 261 participants, student2 in the course at 1796221762."""
    sim.state.add_participants(C1, 256, prefix="perf")
    sim.state.set_clock(1796221762)
    sim.state.touch(userid=STUDENTS["student2"], courseid=C1)


def mapped_users(users):
    """Recorded users 5-9 (student1-5 on the recorded box) with the simulator's ids."""
    return [dict(u, id=u["id"] + 18) for u in users]


@pytest.mark.parametrize("name", ["104", "105"])
def test_replay_104_105_pages(box, name):
    box_with_recorded_participants(box)
    rec = load(name)
    r = replay(box, rec, courseid=C1)
    assert r.content == php_json(mapped_users(rec["response"]))


def test_replay_103_userfields(box):
    box_with_recorded_participants(box)
    rec = load("103")
    got = replay(box, rec, courseid=C1).json()
    assert len(got) == len(rec["response"]) == 261
    assert got[:5] == mapped_users(rec["response"][:5])
    same_shape(got, rec["response"])
    assert [u["id"] for u in got] == sorted(u["id"] for u in got)          # by id


def test_replay_102_full_profiles(box):
    box_with_recorded_participants(box)
    rec = load("102")
    got = replay(box, rec, courseid=C1).json()
    want = rec["response"]
    assert len(got) == len(want) == 261
    same_shape(got[:5], want[:5])
    # The recorded box's other users came from several test runs; those without an idnumber, as generated.
    same_shape(got[5:], [u for u in want[5:] if "idnumber" not in u][:1])
    assert [u["id"] for u in got[:5]] == [u["id"] + 18 for u in want[:5]]
    assert got[1]["lastcourseaccess"] == want[1]["lastcourseaccess"] == 1796221762


def test_contents_give_the_assign_instance_id(box):
    """cmid -> assignmentid: core_course_get_contents has each module's instance."""
    modules = {m["id"]: m for sec in ws(box, "core_course_get_contents", courseid=C1) for m in sec["modules"]}
    assert (modules[ASSIGN_CMID]["modname"], modules[ASSIGN_CMID]["instance"]) == ("assign", ASSIGN)


# ---------------------------------------------------------------------------
# Part 2: grade table, grade book, activity completion, course completion, badge
# ---------------------------------------------------------------------------

def activity_state(sim, courseid, userid, cmid):
    statuses = ws(sim, "core_completion_get_activities_completion_status", courseid=courseid, userid=userid)
    return next((s["state"], s["overrideby"]) for s in statuses["statuses"] if s["cmid"] == cmid)


def gradebook(sim, courseid, userid):
    report = ws(sim, "gradereport_user_get_grade_items", courseid=courseid, userid=userid)["usergrades"][0]
    return {item["cmid"]: item["graderaw"] for item in report["gradeitems"] if "cmid" in item}


def test_saved_grade_cascades_to_grade_book_completion_course_and_badge(box):
    student1 = STUDENTS["student1"]
    box.state.set_clock(1796300000)
    for cmid in (PAGE, URL):
        ws(box, "core_completion_override_activity_completion_status", userid=student1, cmid=cmid, newstate=1)
    status = ws(box, "core_completion_get_course_completion_status", courseid=C1, userid=student1)
    assert status["completionstatus"]["completed"] is False
    assert [c["complete"] for c in status["completionstatus"]["completions"]] == [True, True, False]
    assert status["completionstatus"]["completions"][2]["details"]["requirement"] == "Achieving grade"
    assert ws(box, "core_badges_get_user_badges", userid=student1)["badges"] == []

    box.state.set_clock(1796300100)
    assert save_grades(box, (student1, 80)) is None
    grades = ws(box, "mod_assign_get_grades", assignmentids=[ASSIGN])
    assert grades["assignments"][0]["grades"] == [{"id": 1, "userid": student1, "attemptnumber": 0,
                                                   "timecreated": 1796300100, "timemodified": 1796300100,
                                                   "grader": 2, "grade": "80.00000"}]
    assert gradebook(box, C1, student1) == {ASSIGN_CMID: 80}
    assert activity_state(box, C1, student1, ASSIGN_CMID) == (1, None)      # "receive a grade", automatic
    status = ws(box, "core_completion_get_course_completion_status", courseid=C1, userid=student1)
    assert status["completionstatus"]["completed"] is True
    assert [c["timecompleted"] for c in status["completionstatus"]["completions"]] == [1796300000] * 2 + [1796300100]
    assert box.state.get_course_completion(student1, C1) == 1796300100
    [badge] = ws(box, "core_badges_get_user_badges", userid=student1, courseid=C1)["badges"]
    assert (badge["name"], badge["courseid"], badge["dateissued"], badge["recipientid"]) == (
        "C1 completion badge", C1, 1796300100, student1)
    assert ws(box, "core_badges_get_user_badges", userid=student1, courseid=C2)["badges"] == []
    # Taking the activity back does not take the course completion (nor the badge) back, as in Moodle.
    box.state.set_clock(1796300200)
    ws(box, "core_completion_override_activity_completion_status", userid=student1, cmid=PAGE, newstate=0)
    assert ws(box, "core_completion_get_course_completion_status", courseid=C1,
              userid=student1)["completionstatus"]["completed"] is True
    assert len(ws(box, "core_badges_get_user_badges", userid=student1)["badges"]) == 1
    # A new grade replaces the row (same id, new time) and the grade book follows; the feedback goes along.
    ws(box, "mod_assign_save_grade", assignmentid=ASSIGN, userid=student1, grade=91.25, attemptnumber=-1,
       addattempt=0, workflowstate="", applytoall=0,
       plugindata={"assignfeedbackcomments_editor": {"text": "Well done", "format": 1}})
    row = ws(box, "mod_assign_get_grades", assignmentids=[ASSIGN])["assignments"][0]["grades"][0]
    assert (row["id"], row["grade"], row["timecreated"], row["timemodified"]) == (1, "91.25000", 1796300100, 1796300200)
    report = ws(box, "gradereport_user_get_grade_items", courseid=C1, userid=student1)["usergrades"][0]
    assert (report["gradeitems"][0]["graderaw"], report["gradeitems"][0]["feedback"]) == (91.25, "Well done")
    assert ws(box, "mod_assign_get_grades", assignmentids=[ASSIGN], since=1796300201)["assignments"] == []


def test_update_grades_writes_the_grade_book_only(box):
    """Issue 22: core_grades_update_grades on an assignment leaves the assignment's own table empty."""
    student2 = STUDENTS["student2"]
    assert ws(box, "core_grades_update_grades", source="sync", courseid=C1, component="mod_assign",
              activityid=ASSIGN_CMID, itemnumber=0, grades=[{"studentid": student2, "grade": 70}]) == 0
    assert gradebook(box, C1, student2) == {ASSIGN_CMID: 70}
    assert activity_state(box, C1, student2, ASSIGN_CMID) == (1, None)
    assert ws(box, "mod_assign_get_grades", assignmentids=[ASSIGN]) == {
        "assignments": [], "warnings": [{"item": "assignment", "itemid": ASSIGN, "warningcode": "3",
                                         "message": "No grades found"}]}
    assert box.state.get_assign_grade(student2, ASSIGN_CMID) is None
    save_grades(box, (STUDENTS["student3"], 50))
    listed = ws(box, "mod_assign_get_grades", assignmentids=[ASSIGN])["assignments"][0]["grades"]
    assert [g["userid"] for g in listed] == [STUDENTS["student3"]]           # student2 has no row


def test_save_grades_refusals(box):
    student1 = STUDENTS["student1"]
    # Out of 0..100: update_grade() returns false; the answer is still null, the new row has no grade.
    assert save_grades(box, (student1, 150)) is None
    assert ws(box, "mod_assign_get_grades", assignmentids=[ASSIGN])["assignments"][0]["grades"][0]["grade"] == \
        "-1.00000"
    assert gradebook(box, C1, student1) == {ASSIGN_CMID: None}
    assert activity_state(box, C1, student1, ASSIGN_CMID) == (0, None)
    # Parameters: each grade needs all its fields; a grade must be a number.
    bad = ws(box, "mod_assign_save_grades", assignmentid=ASSIGN, applytoall=0,
             grades=[{"userid": student1, "grade": 50}])
    assert (bad["errorcode"], bad["message"]) == ("invalidparameter", "Invalid parameter value detected")
    assert save_grades(box, (student1, "abc"))["errorcode"] == "invalidparameter"
    # A learner's own token: mod/assign:grade is a teacher's.
    token = box.token_for("student1")
    refused = save_grades(box, (student1, 90), token=token)
    assert refused == {"exception": "core\\exception\\required_capability_exception", "errorcode": "nopermissions",
                       "message": "Sorry, but you do not currently have permissions to do that (Grade assignment)."}
    assert ws(box, "mod_assign_get_grades", token=token, assignmentids=[ASSIGN, 999])["warnings"] == [
        {"item": "assignment", "itemid": ASSIGN, "warningcode": "1", "message": "No access rights in module context"},
        {"item": "assignment", "itemid": 999, "warningcode": "3", "message": "No grades found"}]
    ws(box, "enrol_manual_enrol_users", enrolments=[{"roleid": 3, "userid": STUDENTS["student5"], "courseid": C1}])
    assert save_grades(box, (student1, 90), token=box.token_for("student5")) is None
    assert box.state.get_assign_grade(student1, ASSIGN_CMID)["grader"] == STUDENTS["student5"]


def test_course_completion_criteria_and_badges_per_course(box):
    student1, student2 = STUDENTS["student1"], STUDENTS["student2"]
    ws(box, "core_completion_override_activity_completion_status", userid=student1, cmid=PAGE, newstate=1)
    # Only the page required: as Moodle's cron, the learners who already meet it complete the course now.
    assert control(box, "edit", {"op": "set_completion_criteria", "courseid": C1, "cmids": [PAGE]}) == {
        "courseid": C1, "cmids": [PAGE]}
    assert box.state.get_course_completion(student1, C1) is not None
    assert len(ws(box, "core_badges_get_user_badges", userid=student1)["badges"]) == 1
    # No badge in C2: its completion gives none.
    assert control(box, "edit", {"op": "set_course_badge", "courseid": C2, "present": False}) == {
        "courseid": C2, "badgeids": []}
    for cmid in (104, 105, 106):
        ws(box, "core_completion_override_activity_completion_status", userid=student2, cmid=cmid, newstate=1)
    assert box.state.get_course_completion(student2, C2) is not None
    assert ws(box, "core_badges_get_user_badges", userid=student2)["badges"] == []
    assert ws(box, "core_enrol_get_users_courses", userid=student2)[0]["completed"] is True
    # No criteria: nocriteriaset, and completionhascriteria false.
    control(box, "edit", {"op": "set_completion_criteria", "courseid": C1, "cmids": None})
    assert ws(box, "core_completion_get_course_completion_status", courseid=C1,
              userid=student1)["errorcode"] == "nocriteriaset"
    assert {c["id"]: c["completionhascriteria"] for c in ws(box, "core_enrol_get_users_courses",
                                                             userid=student1)} == {C1: False, C2: True}
    control(box, "edit", {"op": "set_completion_criteria", "courseid": C1, "cmids": "all"})
    assert [c["details"]["criteria"] for c in ws(box, "core_completion_get_course_completion_status", courseid=C1,
                                                 userid=student1)["completionstatus"]["completions"]] == [
        f'<a href="{BOX_WWWROOT}/mod/{mod}/view.php?id={cmid}">C1 {name}</a>'
        for mod, cmid, name in (("page", PAGE, "Page (manual completion)"), ("url", URL, "URL (manual completion)"),
                                ("assign", ASSIGN_CMID, "Assignment (graded, completion on grade)"))]
    assert control(box, "edit", {"op": "set_completion_criteria", "courseid": C1, "cmids": [C3]},
                   status=400)["error"].startswith("ValueError: cmids")


def test_course_completion_status_errors(box):
    def error(courseid, userid, token="TOKEN"):
        answer = ws(box, "core_completion_get_course_completion_status", token=token, courseid=courseid,
                    userid=userid)
        return answer["errorcode"], answer["message"]
    assert error(C3, STUDENTS["student1"]) == ("usernotenroled", "User is not enrolled in this course")
    assert error(999, STUDENTS["student1"]) == ("invalidrecord", "Can't find data record in database table course.")
    assert error(C1, 999)[0] == "invaliduser"
    box.state.edit_course_settings(C1, enablecompletion=0)
    assert error(C1, STUDENTS["student1"]) == ("cannotviewreport", "You cannot view this report")
    ws(box, "core_user_update_users", users=[{"id": STUDENTS["student2"], "suspended": 1}])
    assert error(C2, STUDENTS["student2"]) == ("suspended", "Suspended account")


def test_forget_and_delete_take_the_new_records_along(box):
    student1 = STUDENTS["student1"]
    control(box, "edit", {"op": "set_completion_criteria", "courseid": C1, "cmids": [ASSIGN_CMID]})
    save_grades(box, (student1, 60))
    dump = box.state.dump(only=["assign_grades", "course_completions", "badges"], userid=student1)
    assert [len(dump[k]) for k in ("assign_grades", "course_completions", "badges")] == [1, 1, 1]
    control(box, "forget", {"userid": student1, "courseid": C1})
    dump = box.state.dump(only=["assign_grades", "course_completions", "badges"], userid=student1)
    assert [len(dump[k]) for k in ("assign_grades", "course_completions", "badges")] == [0, 0, 0]
    save_grades(box, (student1, 60))
    box.state.delete_activity(ASSIGN_CMID)
    assert box.state.dump(only=["assign_grades"])["assign_grades"] == []
    assert ws(box, "mod_assign_save_grades", assignmentid=ASSIGN, applytoall=0,
              grades=[grade_fields(student1, 1)])["errorcode"] == "invalidrecord"


# ---------------------------------------------------------------------------
# Part 3: participants in pages, and a huge course
# ---------------------------------------------------------------------------

def page(sim, courseid, start, count, fields="id,username"):
    options = [{"name": "userfields", "value": fields}, {"name": "limitfrom", "value": start},
               {"name": "limitnumber", "value": count}]
    return ws(sim, "core_enrol_get_enrolled_users", courseid=courseid, options=options)


def test_pages_follow_id_order_across_stored_users_and_generated_ones(box):
    box.state.add_participants(C1, 40, prefix="gen")          # ids 28-67
    ws(box, "core_user_update_users", users=[{"id": 40, "firstname": "Moved"}])   # one becomes a record
    extra = box.state.add_user("late")["userid"]           # 68, after the generated ones
    box.state.enrol_user(userid=extra, courseid=C1)
    everyone = [u["id"] for u in ws(box, "core_enrol_get_enrolled_users", courseid=C1,
                                    options=[{"name": "userfields", "value": "id"}])]
    assert everyone == [*STUDENTS.values(), *range(28, 68), extra]
    paged = [u["id"] for start in range(0, 50, 7) for u in page(box, C1, start, 7)]
    assert paged == everyone
    assert page(box, C1, 45, 7) == [{"id": extra, "username": "late", "fullname": "Late Test"}]
    assert page(box, C1, 46, 7) == []                         # no total count: a short page is the end
    assert page(box, C1, 5 + 12, 1)[0] == {"id": 40, "username": "gen13", "fullname": "Moved 13"}


def test_large_answers_can_come_chunked_as_recorded(box):
    """Recordings 102 and 103 came chunked, without Content-Length; 104 and 105 with it."""
    box_with_recorded_participants(box)
    control(box, "faults", {"chunked_over": 8192})
    big = replay(box, load("103"), courseid=C1)
    assert big.headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in big.headers
    assert len(big.json()) == 261
    small = replay(box, load("104"), courseid=C1)
    assert "Transfer-Encoding" not in small.headers and small.headers["Content-Length"] == str(len(small.content))
    # The server counts an answer's bytes once its handler has written them, which
    # may be a moment after the client has read them: wait for the count to settle.
    sent = len(big.content) + len(small.content)
    deadline = time.monotonic() + 5
    stats = box.stats.snapshot()
    while stats["bytes_out"] <= sent and time.monotonic() < deadline:
        time.sleep(0.05)
        stats = box.stats.snapshot()
    control(box, "faults", {"chunked_over": None})
    assert "Content-Length" in replay(box, load("103"), courseid=C1).headers
    assert stats["bytes_out"] > sent      # the chunks' framing is counted


def test_a_course_of_200000_is_kept_as_a_rule():
    """No 200,000 dicts: adding them and reading the last page keep memory small (no timing asserted)."""
    sim = start_simulator(box=True)
    try:
        users_before = len(sim.state.users)
        tracemalloc.start()
        try:
            answer = control(sim, "edit", {"op": "add_participants", "courseid": C1, "count": 200000,
                                           "prefix": "learner"})
            last = page(sim, C1, 200000, 10)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert answer == {"courseid": C1, "prefix": "learner", "first_id": 28, "last_id": 200027}
        assert [u["id"] for u in last] == list(range(200023, 200028))
        assert last[-1] == {"id": 200027, "username": "learner200000", "fullname": "Participant 200000"}
        assert peak < 5 * 1024 * 1024, f"{peak} bytes traced"
        assert len(sim.state.users) == users_before and len(sim.state.enrolments[C1]) == 5
        assert sim.state.enrolled_count(C1) == 200005
    finally:
        sim.stop()


def test_huge_course_from_the_constructor():
    sim = start_simulator(box=True, participants={C1: 200000})
    try:
        assert sim.state.enrolled_count(C1) == 200005
        assert page(sim, C1, 100000, 2)[0]["username"] == f"c{C1}-participant99996"
    finally:
        sim.stop()


# ---------------------------------------------------------------------------
# Part 4: a hostile box
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("literal, check", [
    ("NaN", math.isnan), ("Infinity", lambda v: v == math.inf), ("-5", lambda v: v == -5),
    ("1e308", lambda v: v == 1e308), ("true", lambda v: v is True)])
def test_hostile_grade(box, literal, check):
    student1, student2 = STUDENTS["student1"], STUDENTS["student2"]
    save_grades(box, (student1, 40), (student2, 50))
    # The switch is JSON too: NaN and Infinity as bare words, as Python's json reads them.
    control(box, "faults", f'{{"hostile_grade": {{"cmid": {ASSIGN_CMID}, "userid": {student2}, "value": {literal}}}}}')
    raw = ws_raw(box, "gradereport_user_get_grade_items", courseid=C1, userid=0).text
    assert f'"graderaw":{literal if literal != "1e308" else "1e+308"}' in raw
    reports = {r["userid"]: r["gradeitems"][0]["graderaw"] for r in json.loads(raw)["usergrades"]}
    assert check(reports[student2]) and reports[student1] == 40 and reports[STUDENTS["student3"]] is None
    grades = {g["userid"]: g["grade"] for g in ws(box, "mod_assign_get_grades",
                                                  assignmentids=[ASSIGN])["assignments"][0]["grades"]}
    assert check(grades[student2]) and grades[student1] == "40.00000"
    assert box.stats.snapshot()["faults_fired"]["hostile"] == 2
    control(box, "faults", {"hostile_grade": None})
    assert ws(box, "mod_assign_get_grades", assignmentids=[ASSIGN])["assignments"][0]["grades"][1]["grade"] == \
        "50.00000"


@pytest.mark.parametrize("fields", [
    {"id": "abc"},
    {"email": None, "fullname": None, "username": None},
    {"username": "student1"},
    {"firstname": "Ann\u0007\u0000", "fullname": "Ann\u001b[2J\r\nEvil"},
], ids=["id-abc", "null-fields", "duplicate-username", "control-characters"])
def test_hostile_participant(box, fields):
    student3 = STUDENTS["student3"]
    control(box, "faults", {"hostile_user": {"userid": student3, "fields": fields}})
    for answer, at in ((ws(box, "core_enrol_get_enrolled_users", courseid=C1), 2),
                       (ws(box, "core_user_get_users_by_field", field="username", values=["student2", "student3"]), 1),
                       (ws(box, "core_user_get_course_user_profiles",
                           userlist=[{"userid": student3, "courseid": C1}]), 0)):
        assert {k: answer[at][k] for k in fields} == fields
        assert answer[at]["lastname"] == "Reference"                 # the entry's other fields stay
        others = answer[:at] + answer[at + 1:]
        assert [u["id"] for u in others] == [STUDENTS[u["username"]] for u in others] and STUDENTS["student3"] \
            not in [u["id"] for u in others]
    raw = ws_raw(box, "core_enrol_get_enrolled_users", courseid=C1).text
    if "firstname" in fields:
        assert '"firstname":"Ann\\u0007\\u0000"' in raw        # control characters, JSON-escaped
    control(box, "faults", {"clear": True})
    assert all(isinstance(u["id"], int) for u in ws(box, "core_enrol_get_enrolled_users", courseid=C1))


def test_hostile_switches_are_checked_when_set(box):
    assert control(box, "faults", {"hostile_grade": {"cmid": ASSIGN_CMID}}, status=400)["error"].startswith(
        "ValueError: a hostile target needs cmid, userid, value")
    assert control(box, "faults", {"hostile_user": [{"userid": 23, "fields": "x"}]}, status=400)["error"] == \
        "ValueError: hostile_user: fields must be an object, got 'x'"
    # Several targets at once; inside a batch the data string carries the bad value too.
    control(box, "faults", {"hostile_user": [{"userid": 23, "fields": {"id": "abc"}},
                                             {"userid": 27, "fields": {"id": None}}]})
    ids = [u["id"] for u in ws(box, "core_enrol_get_enrolled_users", courseid=C1)]
    assert ids == ["abc", 24, 25, 26, None]
    [res] = ws(box, "tool_mobile_call_external_functions", requests=[
        {"function": "core_enrol_get_enrolled_users", "arguments": json.dumps({"courseid": C1})}])["responses"]
    assert [u["id"] for u in json.loads(res["data"])] == ids


# ---------------------------------------------------------------------------
# Part 5: costs of the new functions in the calibrated model
# ---------------------------------------------------------------------------

def cost_of(sim, function, **params):
    sim.stats.reset()
    ws(sim, function, **params)
    return sim.stats.snapshot()["cost_ms"]


def test_calibrated_costs_of_the_new_functions():
    sim = start_simulator(box=True, calibrated_costs=True)
    try:
        three = [grade_fields(uid, 70) for uid in list(STUDENTS.values())[:3]]
        assert cost_of(sim, "mod_assign_save_grades", assignmentid=ASSIGN, applytoall=0, grades=three) == {
            "(request)": 38.0, "mod_assign_save_grades": pytest.approx(3 * 7.2)}
        assert cost_of(sim, "mod_assign_save_grades", assignmentid=999, applytoall=0, grades=three) == {
            "(request)": 38.0}                                  # a refused call writes nothing
        assert cost_of(sim, "mod_assign_get_grades", assignmentids=[ASSIGN]) == {
            "(request)": 38.0, "mod_assign_get_grades": pytest.approx(7.2 + 3 * 7 * 0.27)}
        for cmid in (PAGE, URL):
            ws(sim, "core_completion_override_activity_completion_status", userid=23, cmid=cmid, newstate=1)
        assert cost_of(sim, "core_badges_get_user_badges", userid=23) == {
            "(request)": 38.0, "core_badges_get_user_badges": pytest.approx(7.2 + 1.5)}
        assert cost_of(sim, "core_completion_get_course_completion_status", courseid=C1, userid=23) == {
            "(request)": 38.0, "core_completion_get_course_completion_status": 7.2}
    finally:
        sim.stop()
