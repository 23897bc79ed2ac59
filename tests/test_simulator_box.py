"""The simulator as the classroom box's own Moodle (issue 12), and tokens of users other than the admin.

Box mode seeds the server's content with other ids; a learner's own token
acts as that learner (completion, lastcourseaccess), with Moodle's errors for
what a learner may not do; gradereport_user_get_grade_items with userid=0
answers for every graded user.  Real HTTP on loopback throughout.
"""

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from moodle_simulator import start_simulator
from tests.wsclient import WS, ws

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "moodle-simulator"
T1, T2, T3, T4, T5 = 1795400000, 1795400100, 1795400200, 1795400300, 1795400400
C1, C2, C3 = 12, 13, 14                       # the box's ids of the server's courses 2, 3, 4
STUDENT1, STUDENT2, STUDENT3 = 23, 24, 25     # the box's ids of the server's users 3, 4, 5
PAGE, URL, ASSIGN, C3_PAGE = 101, 102, 103, 107


def control(sim, name, body, status=200):
    r = requests.post(f"{sim.url}/__sim/{name}", json=body, timeout=10)
    assert r.status_code == status, r.text
    return r.json()


@pytest.fixture
def box():
    sim = start_simulator(box=True)
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def server():
    sim = start_simulator()
    try:
        yield sim
    finally:
        sim.stop()


def status_of(sim, courseid, userid, cmid, token="TOKEN"):
    answer = ws(sim, "core_completion_get_activities_completion_status", token=token, courseid=courseid,
                userid=userid)
    s = next(s for s in answer["statuses"] if s["cmid"] == cmid)
    return s["state"], s["timecompleted"], s["overrideby"]


def last_access(sim, courseid):
    return {u["username"]: (u["lastcourseaccess"], u["lastaccess"])
            for u in ws(sim, "core_enrol_get_enrolled_users", courseid=courseid)}


# ---------------------------------------------------------------------------
# The box's seed: the server's content, every id different
# ---------------------------------------------------------------------------

def _site(sim):
    courses = {c["shortname"]: c for c in ws(sim, "core_course_get_courses_by_field")["courses"] if c["id"] != 1}
    contents = {short: ws(sim, "core_course_get_contents", courseid=c["id"]) for short, c in courses.items()}
    users = {u["username"]: u for c in courses.values() for u in ws(sim, "core_enrol_get_enrolled_users",
                                                                     courseid=c["id"])}
    items = {short: ws(sim, "gradereport_user_get_grade_items", courseid=c["id"], userid=0)["usergrades"]
             for short, c in courses.items()}
    return courses, contents, users, items


def test_box_seed_has_the_servers_content_with_other_ids(box, server):
    b_courses, b_contents, b_users, b_items = _site(box)
    s_courses, s_contents, s_users, s_items = _site(server)
    assert ws(box, "core_webservice_get_site_info")["sitename"] == "Classroom box Moodle"
    assert ws(server, "core_webservice_get_site_info")["sitename"] == "Moodle Reference Server"

    assert sorted(b_courses) == sorted(s_courses) == ["C1", "C2", "C3"]
    for short, c in b_courses.items():
        assert c["id"] == s_courses[short]["id"] + 10
        for key in ("fullname", "idnumber", "summary", "enablecompletion", "format"):
            assert c[key] == s_courses[short][key], (short, key)
    assert {c["id"] for c in b_courses.values()}.isdisjoint(c["id"] for c in s_courses.values())

    def activities(contents):
        return [(sec["section"], m["modname"], m["name"], m["completion"]) for sec in contents for m in sec["modules"]]

    def ids(contents, key):
        return {m[key] for sec in contents for m in sec["modules"]}
    for short in b_courses:
        assert activities(b_contents[short]) == activities(s_contents[short])
        assert [s["name"] for s in b_contents[short]] == [s["name"] for s in s_contents[short]]
        server_cmids = {cmid for contents in s_contents.values() for cmid in ids(contents, "id")}
        assert ids(b_contents[short], "id").isdisjoint(server_cmids)
        assert ids(b_contents[short], "id") == {cmid + 100 for cmid in ids(s_contents[short], "id")}
        assert ids(b_contents[short], "instance").isdisjoint(ids(s_contents[short], "instance"))
        assert ids(b_contents[short], "contextid").isdisjoint(ids(s_contents[short], "contextid"))
        assert {s["id"] for s in b_contents[short]}.isdisjoint(s["id"] for s in s_contents[short])

    assert sorted(b_users) == sorted(s_users) == [f"student{i}" for i in range(1, 6)]
    for name, u in b_users.items():
        assert u["id"] == s_users[name]["id"] + 20
        for key in ("firstname", "lastname", "fullname", "email", "idnumber", "roles"):
            assert u[key] == s_users[name][key], (name, key)
    assert {u["id"] for u in b_users.values()}.isdisjoint(u["id"] for u in s_users.values())

    for short in ("C1", "C2"):
        (b_item, b_total), (s_item, s_total) = b_items[short][0]["gradeitems"], s_items[short][0]["gradeitems"]
        assert b_item["itemname"] == s_item["itemname"] and b_item["cmid"] == s_item["cmid"] + 100
        assert b_item["id"] != s_item["id"] and b_total["id"] != s_total["id"]
        assert b_item["iteminstance"] != s_item["iteminstance"] and b_item["categoryid"] != s_item["categoryid"]
    # A fresh Moodle has its admin at 2 and its site course at 1, the box's too.
    assert ws(box, "core_webservice_get_site_info")["userid"] == 2


def test_box_makes_new_ids_after_its_own(box):
    assert control(box, "edit", {"op": "add_activity", "courseid": C1, "modname": "page", "name": "Box only"}) \
        == {"cmid": 109}
    assert control(box, "edit", {"op": "add_course", "shortname": "C4"}) == {"courseid": 15}
    new = ws(box, "core_user_create_users", users=[{"username": "late", "createpassword": 1, "firstname": "L",
                                                    "lastname": "A", "email": "late@example.invalid"}])
    assert new == [{"id": 28, "username": "late"}]


def test_reset_keeps_the_box_layout(box):
    control(box, "edit", {"op": "add_user", "username": "boxonly"})
    control(box, "reset", {})
    assert [c["id"] for c in ws(box, "core_course_get_courses_by_field")["courses"]] == [1, C1, C2, C3]
    assert ws(box, "core_user_get_users_by_field", field="username", values=["boxonly"]) == []


# ---------------------------------------------------------------------------
# A learner's own token
# ---------------------------------------------------------------------------

def test_learner_token_marks_its_own_completion_and_moves_lastcourseaccess(box):
    token = box.token_for("student1")
    assert re.fullmatch(r"[0-9a-f]{32}", token) and token != "TOKEN"
    info = ws(box, "core_webservice_get_site_info", token=token)
    assert (info["username"], info["userid"], info["userissiteadmin"]) == ("student1", STUDENT1, False)
    assert info["functions"] == ws(box, "core_webservice_get_site_info")["functions"]
    assert set(last_access(box, C1).values()) == {(0, 0)}

    box.state.set_clock(T1)
    assert ws(box, "core_completion_update_activity_completion_status_manually", token=token, cmid=PAGE,
              completed=1) == {"status": True, "warnings": []}
    assert status_of(box, C1, STUDENT1, PAGE) == (1, T1, None)
    assert status_of(box, C1, STUDENT2, PAGE) == (0, 0, None)
    assert box.state.get_completion(STUDENT1, PAGE)["state"] == 1
    assert box.state.get_completion(2, PAGE) is None              # not the admin's
    access = last_access(box, C1)
    assert access["student1"] == (T1, T1) and access["student2"] == (0, 0)
    assert last_access(box, C2)["student1"] == (0, T1)            # only the course it acted in

    # Its own status, as the learner sees it; the admin's calls move nobody's access.
    box.state.set_clock(T2)
    assert status_of(box, C1, STUDENT1, PAGE, token=token) == (1, T1, None)
    assert last_access(box, C1)["student1"] == (T2, T2)
    ws(box, "core_completion_get_activities_completion_status", courseid=C2, userid=STUDENT1)
    assert last_access(box, C2)["student1"] == (0, T2)


def test_completion_times_and_overrideby_through_override_and_undo(box):
    token = box.token_for("student2")

    def mark(at, completed):
        box.state.set_clock(at)
        ws(box, "core_completion_update_activity_completion_status_manually", token=token, cmid=URL,
           completed=completed)

    def override(at, newstate):
        box.state.set_clock(at)
        return ws(box, "core_completion_override_activity_completion_status", userid=STUDENT2, cmid=URL,
                  newstate=newstate)
    mark(T1, 1)
    assert status_of(box, C1, STUDENT2, URL) == (1, T1, None)
    assert override(T2, 0)["overrideby"] == 2                     # a teacher's override (admin token)
    assert status_of(box, C1, STUDENT2, URL) == (0, T2, 2)
    mark(T3, 1)
    assert status_of(box, C1, STUDENT2, URL) == (1, T3, None)     # the learner's own mark clears overrideby
    mark(T4, 1)
    assert status_of(box, C1, STUDENT2, URL) == (1, T3, None)     # no change, no new time
    mark(T4, 0)
    assert status_of(box, C1, STUDENT2, URL) == (0, T4, None)     # undone: state 0, the time of the undo
    override(T5, 1)
    assert status_of(box, C1, STUDENT2, URL, token=token) == (1, T5, 2)


def test_learner_token_gets_moodles_errors(box):
    token = box.token_for("student1")

    def err(function, **params):
        return ws(box, function, token=token, **params)

    other = err("core_completion_get_activities_completion_status", courseid=C1, userid=STUDENT2)
    assert other == {"exception": "core\\exception\\required_capability_exception", "errorcode": "nopermissions",
                     "message": "Sorry, but you do not currently have permissions to do that "
                                "(View activity completion reports)."}
    assert err("core_completion_override_activity_completion_status", userid=STUDENT1, cmid=PAGE, newstate=1) == {
        "exception": "core\\exception\\required_capability_exception", "errorcode": "nopermission",
        "message": "error/nopermission"}
    assert box.state.get_completion(STUDENT1, PAGE) is None
    assert err("core_completion_update_activity_completion_status_manually", cmid=ASSIGN,
               completed=1)["errorcode"] == "cannotmanualctrack"
    # C3: not enrolled there; its access time does not move.
    box.state.set_clock(T1)
    assert err("core_completion_update_activity_completion_status_manually", cmid=C3_PAGE, completed=1) == {
        "exception": "core\\exception\\require_login_exception", "errorcode": "requireloginerror",
        "message": "Course or activity not accessible."}
    assert err("core_completion_get_activities_completion_status", courseid=C3,
               userid=STUDENT1)["errorcode"] == "requireloginerror"
    assert box.state.get_completion(STUDENT1, C3_PAGE) is None
    assert box.state.last_course_access(STUDENT1, C3) == 0
    # Grades: its own report, nobody else's, no grading.
    own = err("gradereport_user_get_grade_items", courseid=C1, userid=STUDENT1)["usergrades"]
    assert [u["userid"] for u in own] == [STUDENT1]
    assert err("gradereport_user_get_grade_items", courseid=C1, userid=0)["message"] == (
        "Sorry, but you do not currently have permissions to do that (View grades of other users).")
    assert err("gradereport_user_get_grade_items", courseid=C1, userid=STUDENT2) == {
        "exception": "core\\exception\\moodle_exception", "errorcode": "nopermissiontoviewgrades",
        "message": "Can not view grades."}
    assert err("core_grades_update_grades", source="t", courseid=C1, component="mod_assign", activityid=ASSIGN,
               itemnumber=0, grades=[{"studentid": STUDENT1, "grade": 100}])["errorcode"] == "nopermissiontoviewgrades"
    assert box.state.get_grade(STUDENT1, ASSIGN) is None
    not_enrolled = err("core_grades_update_grades", source="t", courseid=C3, component="mod_page",
                       activityid=C3_PAGE, itemnumber=0, grades=[])
    assert not_enrolled["errorcode"] == "errorcoursecontextnotvalid"
    assert not_enrolled["message"] == ("You cannot execute functions in the course context (course id:14). "
                                       "The context error message was: Course or activity not accessible.")
    # Accounts and enrolments are the admin's (or a teacher's) business.
    assert err("enrol_manual_enrol_users", enrolments=[{"roleid": 5, "userid": STUDENT1, "courseid": C1}])[
        "message"] == "Sorry, but you do not currently have permissions to do that (Enrol users)."
    assert err("core_user_create_users", users=[{"username": "x", "createpassword": 1, "firstname": "X",
                                                 "lastname": "Y", "email": "x@example.invalid"}])[
        "message"] == "Sorry, but you do not currently have permissions to do that (Create users)."
    # What the simulator does not answer for such a token, it refuses instead of answering as the admin.
    assert err("core_course_get_contents", courseid=C1)["errorcode"] == "notsimulated"
    # Each entry of a batch acts as the token's user too.
    batch = err("tool_mobile_call_external_functions", requests=[
        {"function": "core_completion_update_activity_completion_status_manually",
         "arguments": '{"cmid": %d, "completed": true}' % URL},
        {"function": "core_completion_get_activities_completion_status",
         "arguments": '{"courseid": %d, "userid": %d}' % (C1, STUDENT2)}])["responses"]
    assert batch[0] == {"error": False, "data": '{"status":true,"warnings":[]}'}
    assert batch[1]["error"] is True and '"errorcode":"nopermissions"' in batch[1]["exception"]
    assert box.state.get_completion(STUDENT1, URL)["state"] == 1


def test_tokens_of_users_who_cannot_log_in(box):
    token = box.token_for("student3")
    ws(box, "core_user_update_users", users=[{"id": STUDENT3, "suspended": 1}])
    assert ws(box, "core_webservice_get_site_info", token=token) == {
        "exception": "core\\exception\\moodle_exception", "errorcode": "wsaccessusersuspended",
        "message": "Refused web service access for suspended username: student3"}
    assert ws(box, "core_webservice_get_site_info", token="0" * 32)["errorcode"] == "invalidtoken"
    control(box, "forget", {"users": [STUDENT3]})
    assert ws(box, "core_webservice_get_site_info", token=token)["errorcode"] == "invalidtoken"
    assert box.token_for("admin") == "TOKEN"
    box.faults.set(reject_token=True)
    assert ws(box, "core_webservice_get_site_info", token=box.token_for("student1"))["errorcode"] == "invalidtoken"


def test_a_teacher_token_may_override_and_grade(box):
    teacher = control(box, "edit", {"op": "add_user", "username": "teacher1", "firstname": "Tea",
                                    "lastname": "Cher"})["userid"]
    control(box, "edit", {"op": "enrol_user", "userid": teacher, "courseid": C1, "roleid": 3})
    token = box.token_for("teacher1")
    box.state.set_clock(T1)
    done = ws(box, "core_completion_override_activity_completion_status", token=token, userid=STUDENT1, cmid=PAGE,
              newstate=1)
    assert (done["state"], done["overrideby"], done["timecompleted"]) == (1, teacher, T1)
    assert status_of(box, C1, STUDENT1, PAGE, token=token) == (1, T1, teacher)
    assert ws(box, "core_grades_update_grades", token=token, source="t", courseid=C1, component="mod_assign",
              activityid=ASSIGN, itemnumber=0, grades=[{"studentid": STUDENT1, "grade": 80}]) == 0
    assert box.state.get_grade(STUDENT1, ASSIGN)["grade"] == 80
    everyone = ws(box, "gradereport_user_get_grade_items", token=token, courseid=C1, userid=0)["usergrades"]
    assert [u["userid"] for u in everyone] == [23, 24, 25, 26, 27]    # teachers are not graded


# ---------------------------------------------------------------------------
# gradereport_user_get_grade_items with userid=0
# ---------------------------------------------------------------------------

def test_grade_report_for_every_graded_user(box):
    grade = dict(source="t", courseid=C1, component="mod_assign", activityid=ASSIGN, itemnumber=0)
    ws(box, "core_grades_update_grades", grades=[{"studentid": STUDENT1, "grade": 70},
                                                 {"studentid": STUDENT3, "grade": 45.5}], **grade)
    report = ws(box, "gradereport_user_get_grade_items", courseid=C1, userid=0)
    assert report["warnings"] == []
    rows = report["usergrades"]
    assert [u["userid"] for u in rows] == [23, 24, 25, 26, 27]
    assert {u["userid"]: u["gradeitems"][0]["graderaw"] for u in rows} == {23: 70, 24: None, 25: 45.5, 26: None,
                                                                           27: None}
    assert {u["gradeitems"][0]["cmid"] for u in rows} == {ASSIGN}
    for u in rows:    # each entry is that user's own report
        assert [u] == ws(box, "gradereport_user_get_grade_items", courseid=C1, userid=u["userid"])["usergrades"]

    # Who is in it: students with an active enrolment (suspended accounts too), by last name, first name, id.
    aaron = control(box, "edit", {"op": "add_user", "username": "aaron", "firstname": "Aaron",
                                  "lastname": "Aardvark"})["userid"]
    zed = control(box, "edit", {"op": "add_user", "username": "zed", "firstname": "Zed", "lastname": "Reference"})
    teacher = control(box, "edit", {"op": "add_user", "username": "teacher1"})["userid"]
    away = control(box, "edit", {"op": "add_user", "username": "away"})["userid"]
    control(box, "edit", {"op": "enrol_user", "username": "aaron", "courseid": C1})
    control(box, "edit", {"op": "enrol_user", "userid": zed["userid"], "courseid": C1})
    control(box, "edit", {"op": "enrol_user", "userid": teacher, "courseid": C1, "roleid": 3})
    control(box, "edit", {"op": "enrol_user", "userid": away, "courseid": C1, "suspended": True})
    ws(box, "core_user_update_users", users=[{"id": STUDENT2, "suspended": 1}])
    rows = ws(box, "gradereport_user_get_grade_items", courseid=C1, userid=0)["usergrades"]
    assert [u["userid"] for u in rows] == [aaron, 23, 24, 25, 26, 27, zed["userid"]]
    assert ws(box, "gradereport_user_get_grade_items", courseid=C3, userid=0)["usergrades"] == []


def test_grade_report_userid_0_on_the_server_seed(server):
    """The same rule on the recorded data: one entry per student, equal to each one's own report."""
    rows = ws(server, "gradereport_user_get_grade_items", courseid=2, userid=0)["usergrades"]
    assert [u["userid"] for u in rows] == [3, 4, 5, 6, 7]
    assert rows[0] == ws(server, "gradereport_user_get_grade_items", courseid=2, userid=3)["usergrades"][0]


# ---------------------------------------------------------------------------
# Control endpoints and the command line
# ---------------------------------------------------------------------------

def test_control_endpoints_for_tokens_access_users_and_enrolments(box):
    token = control(box, "tokens", {"username": "student2"})["token"]
    assert token == box.token_for("student2")
    assert ws(box, "core_webservice_get_site_info", token=token)["userid"] == STUDENT2
    assert "username: no user 'nobody'" in control(box, "tokens", {"username": "nobody"}, status=400)["error"]

    box.state.set_clock(T1)
    assert control(box, "access", {"username": "student2", "courseid": C2}) == {
        "userid": STUDENT2, "courseid": C2, "lastcourseaccess": T1}
    box.state.set_clock(T2)
    assert box.state.touch(STUDENT3, C2)["lastcourseaccess"] == T2
    access = last_access(box, C2)
    assert (access["student2"], access["student3"], access["student4"]) == ((T1, T1), (T2, T2), (0, 0))
    assert "courseid: no course 99" in control(box, "access", {"username": "student2", "courseid": 99},
                                               status=400)["error"]
    assert "courseid: no course 1" in control(box, "access", {"userid": STUDENT2, "courseid": 1}, status=400)["error"]

    new = control(box, "edit", {"op": "add_user", "username": "boxonly", "firstname": "Box", "lastname": "Only",
                                "email": "boxonly@example.invalid", "idnumber": "B001"})
    assert new == {"userid": 28, "username": "boxonly"}
    found = ws(box, "core_user_get_users_by_field", field="username", values=["boxonly"])[0]
    assert (found["id"], found["fullname"], found["email"], found["idnumber"]) == (
        28, "Box Only", "boxonly@example.invalid", "B001")
    assert control(box, "edit", {"op": "enrol_user", "username": "boxonly", "courseid": C1}) == {
        "userid": 28, "courseid": C1, "roleids": [5], "status": 0}
    enrolled = {u["username"]: u for u in ws(box, "core_enrol_get_enrolled_users", courseid=C1)}
    assert enrolled["boxonly"]["roles"][0]["shortname"] == "student" and enrolled["boxonly"]["lastcourseaccess"] == 0
    boxonly = box.token_for("boxonly")
    box.state.set_clock(T3)
    ws(box, "core_completion_update_activity_completion_status_manually", token=boxonly, cmid=PAGE, completed=1)
    assert status_of(box, C1, 28, PAGE) == (1, T3, None)
    state = requests.get(f"{box.url}/__sim/state?only=enrolments&userid=28").json()
    assert state["enrolments"][0]["lastcourseaccess"] == T3

    for spec, field in ((dict(op="add_user", username="boxonly"), "username"),
                        (dict(op="add_user", username="Capital"), "username"),
                        (dict(op="add_user", username="other", email="boxonly@example.invalid"), "email"),
                        (dict(op="enrol_user", username="nobody", courseid=C1), "username"),
                        (dict(op="enrol_user", userid=28, courseid=99), "courseid"),
                        (dict(op="enrol_user", userid=28, courseid=C1, roleid=42), "roleid"),
                        (dict(op="enrol_user", courseid=C1), "userid or username")):
        assert control(box, "edit", spec, status=400)["error"].startswith(f"ValueError: {field}"), spec

    control(box, "reset", {})
    assert set(last_access(box, C2).values()) == {(0, 0)}
    assert ws(box, "core_webservice_get_site_info", token=token)["userid"] == STUDENT2   # tokens outlive a reset
    assert ws(box, "core_webservice_get_site_info", token=boxonly)["errorcode"] == "invalidtoken"


def test_cli_box_mode():
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--host", "127.0.0.1", "--port", "0", "--token", "boxtok",
                             "--box"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.fullmatch(r"moodle-simulator ready on (http://127\.0\.0\.1:\d+) \(token set, box\)\n", line)
        assert m, line
        url = m.group(1)
        r = requests.post(url + WS, data={"wstoken": "boxtok", "wsfunction": "core_course_get_courses_by_field",
                                          "moodlewsrestformat": "json", "field": "shortname", "value": "C1"})
        assert [c["id"] for c in r.json()["courses"]] == [C1]
        token = requests.post(url + "/__sim/tokens", json={"username": "student1"}).json()["token"]
        r = requests.post(url + WS, data={"wstoken": token, "wsfunction": "core_webservice_get_site_info",
                                          "moodlewsrestformat": "json"})
        assert (r.json()["sitename"], r.json()["userid"]) == ("Classroom box Moodle", STUDENT1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0 and "boxtok" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
