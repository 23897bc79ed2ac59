"""The simulator's accounts and rights: passwords, login/token.php, tokens bound to a user and a service,
capabilities from role presets (packaging/moodle/), the non-admin sync account.

Recordings 80-93 and 108 (tests/recordings) are replayed byte for byte where
their answers carry nothing site-specific (tokens are compared as "TOKEN",
as the recordings store them); 87 and 88 are compared by structure.
"""

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from moodle_simulator import start_simulator
from moodle_simulator.accounts import ADMIN_PASSWORD, LEARNER_PASSWORD, SYNC_PASSWORD, SYNC_USERNAME
from tests.wsclient import WS, load, php_json, ws

LOGIN = "/login/token.php"
SERVER_WWWROOT = "http://127.0.0.1:8080"
BOX_WWWROOT = "http://127.0.0.1:8081"
LOGIN_HEADERS = ("Content-Type", "Content-Length", "Cache-Control", "Expires", "Pragma", "Accept-Ranges",
                 "Access-Control-Allow-Origin")
WS_HEADERS = ("Content-Type", "Content-Length", "Cache-Control", "Expires", "Pragma", "Accept-Ranges",
              "Access-Control-Allow-Origin")
NOPERMISSIONS = "Sorry, but you do not currently have permissions to do that ({})."


def login(sim, username, password, service):
    r = requests.post(sim.url + LOGIN, data={"username": username, "password": password, "service": service},
                      timeout=10)
    assert r.status_code == 200
    return r


def edit(sim, op, **spec):
    r = requests.post(f"{sim.url}/__sim/edit", json={"op": op, **spec}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def replay(sim, name, fields=None):
    """Send a recording's request (fields: replacements), compare status, headers and body; the answer."""
    rec = load(name)
    request = dict(rec["request"], **(fields or {}))
    r = requests.post(sim.url + urlsplit(rec["endpoint"].split(" ", 1)[1]).path, data=list(request.items()),
                      timeout=10)
    assert r.status_code == rec["http_status"]
    body = r.content
    if rec["response"] is not None and isinstance(rec["response"], dict) and rec["response"].get("token") == "TOKEN":
        assert re.fullmatch(r"[0-9a-f]{32}", r.json()["token"]), r.text
        body = body.replace(r.json()["token"].encode(), b"TOKEN")
    assert body == php_json(rec["response"]), f"{name}: got {r.text}"
    for h in LOGIN_HEADERS if "login" in rec["endpoint"] else WS_HEADERS:
        assert r.headers[h] == rec["response_headers"][h], (name, h)
    return r


@pytest.fixture
def box():
    sim = start_simulator(box=True, wwwroot=BOX_WWWROOT, sync_account=True)
    yield sim
    sim.stop()


@pytest.fixture
def server():
    sim = start_simulator(wwwroot=SERVER_WWWROOT, sync_account=True)
    yield sim
    sim.stop()


# ---------------------------------------------------------------------------
# login/token.php and passwords: the recordings
# ---------------------------------------------------------------------------

def test_box_learner_login_password_change_and_policy(box):
    """80, 81, 82, 88, 89, 90, 91, 92 in the order they were captured."""
    learner = edit(box, "add_user", username="wslearner80", firstname="Wslearner", lastname="Tester",
                   password="Learner#2026")["userid"]
    first = replay(box, "80").json()["token"]
    replay(box, "81")
    replay(box, "82")
    # 88: the learner's mobile token acts as the learner (mobile web services on: rest:use for everyone).
    info = ws(box, "core_webservice_get_site_info", token=first)
    recorded = load("88")["response"]
    assert list(info) == list(recorded)
    assert (info["username"], info["userid"], info["userissiteadmin"]) == ("wslearner80", learner, False)
    assert info["functions"] and {f["name"] for f in info["functions"]} <= {f["name"] for f in recorded["functions"]}
    assert "core_user_create_users" not in {f["name"] for f in info["functions"]}
    replay(box, "89", {"users[0][id]": str(learner)})
    assert box.state.password_is("NewLearner#2027", userid=learner)
    assert replay(box, "91").json()["token"] == first       # the password change kept the token (91_)
    replay(box, "90", {"users[0][id]": str(learner)})
    assert not box.state.password_is("abc", userid=learner)
    assert box.state.password_is("NewLearner#2027", userid=learner)
    replay(box, "92")
    assert ws(box, "core_webservice_get_site_info", token=first)["userid"] == learner


def test_server_token_needs_createtoken_and_rest_use(server):
    """83, 84, 85, 86, 87: a server user, the disabled mobile service, a custom service, two capabilities."""
    user = edit(server, "add_user", username="wstokenuser80", firstname="Wstoken", lastname="Tester",
                password="Wstoken#2026")["userid"]
    edit(server, "add_service", shortname="edge_sync")
    replay(server, "83")
    replay(server, "84")
    edit(server, "define_role", xml='<?xml version="1.0" encoding="UTF-8"?>\n<role><shortname>wstokencreator80'
         '</shortname><name>WS token creator</name><description/><archetype/><contextlevels><level>system</level>'
         '</contextlevels><allowassign/><allowoverride/><allowswitch/><allowview/><permissions>'
         '<allow>moodle/webservice:createtoken</allow></permissions></role>\n')
    edit(server, "assign_role", role="wstokencreator80", username="wstokenuser80")
    token = replay(server, "85").json()["token"]
    assert replay(server, "85").json()["token"] == token          # the existing token again
    replay(server, "86", {"wstoken": token})
    # webservice/rest:use allowed in the same system role (87_).
    server.state.roles["wstokencreator80"].capabilities.add("webservice/rest:use")
    info = ws(server, "core_webservice_get_site_info", token=token)
    recorded = load("87")["response"]
    assert list(info) == list(recorded)
    assert (info["userid"], info["userissiteadmin"]) == (user, False)
    assert info["functions"] == ws(server, "core_webservice_get_site_info")["functions"]   # the service's list
    assert ws(server, "core_webservice_get_site_info")["userissiteadmin"] is True
    # 108: a course the user cannot enter.
    assert ws(server, "core_course_get_contents", token=token, courseid=2) == load("108")["response"]


def test_create_users_refuses_a_weak_password_and_writes_nothing(box):
    replay(box, "93")
    assert ws(box, "core_user_get_users_by_field", field="username", values=["wsweak80"]) == []
    # One transaction: a good user before the weak one is not created either.
    good = {"username": "good80", "password": "Good#2026x", "firstname": "G", "lastname": "T",
            "email": "good80@example.invalid"}
    weak = dict(good, username="weak81", password="ABCdefgh1", email="weak81@example.invalid")
    answer = ws(box, "core_user_create_users", users=[good, weak])
    assert answer["errorcode"] == ("<div>The password must have at least 1 special character(s) such as *, -, or "
                                   "#.</div>")
    assert answer["message"] == "error/" + answer["errorcode"]
    assert ws(box, "core_user_get_users_by_field", field="username", values=["good80"]) == []


def test_update_users_keeps_the_others_and_refuses_the_weak_one(box):
    ids = [edit(box, "add_user", username=f"multi{i}", password="Multi#2026")["userid"] for i in range(2)]
    answer = ws(box, "core_user_update_users", users=[{"id": ids[0], "password": "Other#2027", "lastname": "New"},
                                                      {"id": ids[1], "password": "short", "lastname": "Kept"}])
    assert answer == load("90")["response"]
    assert box.state.password_is("Other#2027", userid=ids[0])
    assert box.state.password_is("Multi#2026", userid=ids[1]) and not box.state.password_is("short", userid=ids[1])
    names = {u["id"]: u["lastname"] for u in ws(box, "core_user_get_users_by_field", field="id", values=ids)}
    assert names == {ids[0]: "New", ids[1]: "Test"}


def test_createpassword_account_has_no_password_until_one_is_set(box):
    new = ws(box, "core_user_create_users", users=[{"username": "later", "createpassword": 1, "firstname": "L",
                                                    "lastname": "A", "email": "later@example.invalid"}])
    uid = new[0]["id"]
    for password in ("", "Later#2026"):
        assert login(box, "later", password, "moodle_mobile_app").json()["errorcode"] == "invalidlogin"
    assert ws(box, "core_user_update_users", users=[{"id": uid, "password": "Later#2026"}]) == {"warnings": []}
    assert re.fullmatch(r"[0-9a-f]{32}", login(box, "later", "Later#2026", "moodle_mobile_app").json()["token"])
    # Usernames are matched in lower case, trimmed (PARAM_USERNAME), as login/token.php does.
    assert "token" in login(box, " LATER ", "Later#2026", "moodle_mobile_app").json()


def test_profile_fields_are_kept_and_updatable(box):
    uid = ws(box, "core_user_create_users", users=[{"username": "prof", "password": "Prof#2026", "firstname": "P",
                                                    "lastname": "Q", "email": "prof@example.invalid",
                                                    "idnumber": "X1"}])[0]["id"]
    assert ws(box, "core_user_update_users", users=[{"id": uid, "firstname": "Pat", "lastname": "Quinn",
                                                     "email": "pat@example.invalid", "idnumber": "X2"}]) == {
        "warnings": []}
    u = ws(box, "core_user_get_users_by_field", field="id", values=[uid])[0]
    assert (u["username"], u["firstname"], u["lastname"], u["email"], u["idnumber"]) == (
        "prof", "Pat", "Quinn", "pat@example.invalid", "X2")
    assert box.state.password_is("Prof#2026", userid=uid)      # untouched by a profile update


def test_login_errors_and_existing_tokens(box, server):
    assert login(box, "admin", ADMIN_PASSWORD, "moodle_sync_agent").json() == {"token": "TOKEN",
                                                                              "privatetoken": None}
    # A site admin never gets a new token this way for a custom service (it must be made by hand).
    edit(box, "add_service", shortname="other_sync")
    assert login(box, "admin", ADMIN_PASSWORD, "other_sync").json()["errorcode"] == "cannotcreatetoken"
    assert login(box, "student1", LEARNER_PASSWORD, "moodle_mobile_app").json()["privatetoken"] is None
    assert login(box, "nobody", "X#1abcdef", "moodle_mobile_app").json()["errorcode"] == "invalidlogin"
    edit(box, "add_service", shortname="off_sync", enabled=False)
    assert login(box, SYNC_USERNAME, SYNC_PASSWORD, "off_sync").json()["errorcode"] == "servicenotavailable"
    r = requests.post(box.url + LOGIN, data={"username": "student1", "service": "moodle_mobile_app"}, timeout=10)
    assert r.json() == {"error": "A required parameter (password) was missing", "errorcode": "missingparam",
                        "stacktrace": None, "debuginfo": None, "reproductionlink": None}
    # GET works too (required_param reads the query string).
    got = requests.get(server.url + LOGIN, params={"username": SYNC_USERNAME, "password": SYNC_PASSWORD,
                                                   "service": "moodle_sync_agent"}, timeout=10).json()
    assert got["token"] == login(server, SYNC_USERNAME, SYNC_PASSWORD, "moodle_sync_agent").json()["token"]
    # A suspended account cannot log in, and its token is refused.
    token = got["token"]
    ws(server, "core_user_update_users", users=[{"id": server.state.user_id(SYNC_USERNAME), "suspended": 1}])
    assert login(server, SYNC_USERNAME, SYNC_PASSWORD, "moodle_sync_agent").json()["errorcode"] == "invalidlogin"
    assert ws(server, "core_webservice_get_site_info", token=token)["errorcode"] == "wsaccessusersuspended"


# ---------------------------------------------------------------------------
# Tokens act as their user, within their service
# ---------------------------------------------------------------------------

def test_token_is_bound_to_its_service(box):
    learner = login(box, "student1", LEARNER_PASSWORD, "moodle_mobile_app").json()["token"]
    # core_user_create_users is not in the mobile service: the recorded "not in service" error (42_).
    assert ws(box, "core_user_create_users", token=learner, users=[{"username": "x", "createpassword": 1,
                                                                    "firstname": "X", "lastname": "Y",
                                                                    "email": "x@example.invalid"}]) == load(
        "42")["response"]
    batch = ws(box, "tool_mobile_call_external_functions", token=learner, requests=[
        {"function": "core_user_update_users", "arguments": json.dumps({"users": [{"id": 23, "firstname": "Z"}]})}])
    assert batch == {"responses": [{"error": True,
                                    "exception": '{"errorcode":"accessexception","module":"webservice"}'}]}
    sync = login(box, SYNC_USERNAME, SYNC_PASSWORD, "moodle_sync_agent").json()["token"]
    assert sync != learner
    assert "core_user_create_users" in {f["name"] for f in ws(box, "core_webservice_get_site_info",
                                                              token=sync)["functions"]}


def test_token_acts_as_its_user(server):
    token = login(server, SYNC_USERNAME, SYNC_PASSWORD, "moodle_sync_agent").json()["token"]
    sync = server.state.user_id(SYNC_USERNAME)
    info = ws(server, "core_webservice_get_site_info", token=token)
    assert (info["username"], info["userid"], info["userissiteadmin"]) == (SYNC_USERNAME, sync, False)
    done = ws(server, "core_completion_override_activity_completion_status", token=token, userid=3, cmid=1,
              newstate=1)
    assert done["overrideby"] == sync
    # The admin's token keeps every right.
    assert ws(server, "core_completion_override_activity_completion_status", userid=3, cmid=2,
              newstate=1)["overrideby"] == 2


# ---------------------------------------------------------------------------
# The non-admin sync account: everything the agent needs, nothing more
# ---------------------------------------------------------------------------

def agent_calls(sim, token, courseid, cmid, assign_cmid, student):
    """One call of each function the agent uses on the server (simulated here), each expected to succeed."""
    ok = {}
    ok["site_info"] = ws(sim, "core_webservice_get_site_info", token=token)["userissiteadmin"] is False
    course = ws(sim, "core_course_get_courses_by_field", token=token, field="id", value=courseid)["courses"][0]
    ok["courses"] = course["cacherev"] is not None and course["timemodified"] > 0
    ok["contents"] = len(ws(sim, "core_course_get_contents", token=token, courseid=courseid)) > 0
    found = ws(sim, "core_user_get_users_by_field", token=token, field="username", values=["student1"])
    ok["users"] = [(u["username"], u["idnumber"], u["firstname"]) for u in found] == [
        ("student1", "S001", "Student1")]
    created = ws(sim, "core_user_create_users", token=token, users=[{
        "username": "kid1", "password": "Kid1#pass-word", "firstname": "K", "lastname": "One",
        "email": "kid1@example.invalid", "idnumber": "K001"}])
    ok["create"] = created[0]["username"] == "kid1"
    kid = created[0]["id"]
    ok["update"] = ws(sim, "core_user_update_users", token=token, users=[{"id": kid, "password": "Kid1#new-pass",
                                                                          "lastname": "Uno"}]) == {"warnings": []}
    ok["enrol"] = ws(sim, "enrol_manual_enrol_users", token=token,
                     enrolments=[{"roleid": 5, "userid": kid, "courseid": courseid}]) is None
    profiles = ws(sim, "core_user_get_course_user_profiles", token=token,
                  userlist=[{"userid": kid, "courseid": courseid}])
    ok["profiles"] = [p["username"] for p in profiles] == ["kid1"]
    enrolled = ws(sim, "core_enrol_get_enrolled_users", token=token, courseid=courseid,
                  options=[{"name": "userfields", "value": "id,username"}])
    ok["enrolled"] = "kid1" in [u["username"] for u in enrolled]
    ok["completion"] = len(ws(sim, "core_completion_get_activities_completion_status", token=token,
                              courseid=courseid, userid=student)["statuses"]) > 0
    ok["override"] = ws(sim, "core_completion_override_activity_completion_status", token=token, userid=student,
                        cmid=cmid, newstate=1)["state"] == 1
    ok["grades"] = ws(sim, "core_grades_update_grades", token=token, source="sync", courseid=courseid,
                      component="mod_assign", activityid=assign_cmid, itemnumber=0,
                      grades=[{"studentid": student, "grade": 70}]) == 0
    report = ws(sim, "gradereport_user_get_grade_items", token=token, courseid=courseid, userid=student)
    ok["report"] = report["usergrades"][0]["userid"] == student
    # Assignment grades through the assignment, course completion and badges (issue 22).
    instance = next(m["instance"] for s in ws(sim, "core_course_get_contents", token=token, courseid=courseid)
                    for m in s["modules"] if m["id"] == assign_cmid)
    ok["assign_save"] = ws(sim, "mod_assign_save_grades", token=token, assignmentid=instance, applytoall=0,
                           grades=[{"userid": student, "grade": 71, "attemptnumber": -1, "addattempt": 0,
                                    "workflowstate": ""}]) is None
    got = ws(sim, "mod_assign_get_grades", token=token, assignmentids=[instance])
    ok["assign_get"] = [(g["userid"], g["grade"]) for g in got["assignments"][0]["grades"]] == [
        (student, "71.00000")]
    edit(sim, "set_completion_criteria", courseid=courseid, cmids=[cmid])
    edit(sim, "set_course_badge", courseid=courseid)
    status = ws(sim, "core_completion_get_course_completion_status", token=token, courseid=courseid,
                userid=student)
    ok["course_completion"] = status["completionstatus"]["completed"] is True
    badges = ws(sim, "core_badges_get_user_badges", token=token, userid=student, courseid=courseid)["badges"]
    # Another user's badge without moodle/badges:configuredetails: part of it (core_badges_external).
    ok["badges"] = len(badges) == 1 and badges[0]["uniquehash"] and "recipientid" not in badges[0]
    batch = ws(sim, "tool_mobile_call_external_functions", token=token, requests=[
        {"function": "core_completion_get_activities_completion_status",
         "arguments": json.dumps({"courseid": courseid, "userid": student})}])
    ok["batch"] = batch["responses"][0]["error"] is False
    return ok


def test_sync_account_does_what_the_agent_needs_on_the_server(server):
    token = login(server, SYNC_USERNAME, SYNC_PASSWORD, "moodle_sync_agent").json()["token"]
    ok = agent_calls(server, token, courseid=2, cmid=1, assign_cmid=3, student=3)
    assert all(ok.values()), ok


def test_sync_account_does_what_the_agent_needs_on_the_box(box):
    token = login(box, SYNC_USERNAME, SYNC_PASSWORD, "moodle_sync_agent").json()["token"]
    ok = agent_calls(box, token, courseid=12, cmid=101, assign_cmid=103, student=23)
    assert all(ok.values()), ok


def test_sync_account_cannot_do_what_only_an_admin_may(server):
    token = login(server, SYNC_USERNAME, SYNC_PASSWORD, "moodle_sync_agent").json()["token"]
    # Another role than student: refused as Moodle refuses it (15_).
    refused = ws(server, "enrol_manual_enrol_users", token=token,
                 enrolments=[{"roleid": 3, "userid": 3, "courseid": 2}])
    assert refused == {"exception": "core\\exception\\moodle_exception", "errorcode": "wsusercannotassign",
                       "message": "You don't have the permission to assign this role (3) to this user (3) in this "
                                  "course (2)."}
    # Admin accounts are out of reach, password included.
    assert ws(server, "core_user_update_users", token=token, users=[{"id": 2, "password": "Stolen#2026"}]) == {
        "warnings": [{"item": "user", "itemid": 2, "warningcode": "usernotupdatedadmin",
                      "message": "Cannot update admin accounts"}]}
    assert login(server, "admin", ADMIN_PASSWORD, "moodle_sync_agent").json()["token"] == "TOKEN"
    # Grade items (moodle/grade:manage) are not the agent's business.
    changed = ws(server, "core_grades_update_grades", token=token, source="sync", courseid=2, component="mod_assign",
                 activityid=3, itemnumber=0, grades=[], itemdetails={"itemname": "Renamed"})
    assert changed == {"exception": "core\\exception\\moodle_exception", "errorcode": "nopermissiontoviewgrades",
                       "message": "Can not view grades."}
    # A course outside the category the role is assigned in cannot be entered (108_'s answer).
    other = server.state.add_course("OTHER", categoryid=2)
    assert ws(server, "core_course_get_contents", token=token, courseid=other) == load("108")["response"]
    listed = ws(server, "core_course_get_courses_by_field", token=token, field="id", value=other)["courses"][0]
    assert "cacherev" not in listed and "format" not in listed and listed["shortname"] == "OTHER"
    assert ws(server, "enrol_manual_enrol_users", token=token,
              enrolments=[{"roleid": 5, "userid": 3, "courseid": other}])["errorcode"] == "requireloginerror"
    # What the simulator does not answer for this account, it refuses rather than answer as the admin would.
    assert ws(server, "core_enrol_get_users_courses", token=token, userid=3)["errorcode"] == "notsimulated"


def test_a_missing_optional_capability_gives_moodles_error():
    with start_simulator(sync_account=True, sync_without=["moodle/user:update"]) as sim:
        token = login(sim, SYNC_USERNAME, SYNC_PASSWORD, "moodle_sync_agent").json()["token"]
        answer = ws(sim, "core_user_update_users", token=token, users=[{"id": 3, "lastname": "X"}])
        assert answer == {"exception": "core\\exception\\required_capability_exception",
                          "errorcode": "nopermissions", "message": NOPERMISSIONS.format("Update user profiles")}
        # Everything else still works.
        assert ws(sim, "enrol_manual_enrol_users", token=token,
                  enrolments=[{"roleid": 5, "userid": 3, "courseid": 4}]) is None
    with pytest.raises(ValueError, match="not an optional capability"):
        start_simulator(sync_account=True, sync_without=["moodle/user:create"])


def test_removing_a_capability_through_the_control_endpoint(server):
    token = login(server, SYNC_USERNAME, SYNC_PASSWORD, "moodle_sync_agent").json()["token"]
    assert edit(server, "remove_capability", capability="moodle/course:overridecompletion") == {"roles": 1}
    assert ws(server, "core_completion_override_activity_completion_status", token=token, userid=3, cmid=1,
              newstate=1) == {"exception": "core\\exception\\required_capability_exception",
                              "errorcode": "nopermission", "message": "error/nopermission"}
    assert edit(server, "remove_capability", capability="webservice/rest:use") == {"roles": 1}
    assert ws(server, "core_webservice_get_site_info", token=token) == load("86")["response"]
    requests.post(f"{server.url}/__sim/reset", json={}, timeout=10)
    token = login(server, SYNC_USERNAME, SYNC_PASSWORD, "moodle_sync_agent").json()["token"]
    assert ws(server, "core_webservice_get_site_info", token=token)["username"] == SYNC_USERNAME


def test_sync_account_is_opt_in():
    """Without sync_account the seed is the recorded one (student6 is user 8, as in 12_)."""
    with start_simulator() as sim:
        assert sim.state.user_id(SYNC_USERNAME) is None
        assert login(sim, "student1", LEARNER_PASSWORD, "moodle_sync_agent").json()["errorcode"] == (
            "cannotcreatetoken")
        assert login(sim, "student1", LEARNER_PASSWORD, "moodle_mobile_app").json()["errorcode"] == (
            "servicenotavailable")


def test_without_viewalldetails_usernames_are_hidden_as_moodle_hides_them(server):
    token = login(server, SYNC_USERNAME, SYNC_PASSWORD, "moodle_sync_agent").json()["token"]
    edit(server, "remove_capability", capability="moodle/user:viewalldetails")
    found = ws(server, "core_user_get_users_by_field", token=token, field="idnumber", values=["S001"])
    assert [u["id"] for u in found] == [3]
    assert "username" not in found[0] and "idnumber" not in found[0] and found[0]["firstname"] == "Student1"
    edit(server, "remove_capability", capability="moodle/user:viewdetails")
    assert ws(server, "core_user_get_users_by_field", token=token, field="idnumber", values=["S001"]) == []


def test_cli_sync_account_and_mobile_services():
    script = Path(__file__).resolve().parents[1] / "scripts" / "moodle-simulator"
    proc = subprocess.Popen([sys.executable, str(script), "--port", "0", "--token", "T0K", "--sync-account",
                             "--sync-without", "moodle/user:update", "--mobile-services", "on"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = re.search(r"(http://\S+)", proc.stdout.readline()).group(1)
        sync = requests.post(url + LOGIN, data={"username": SYNC_USERNAME, "password": SYNC_PASSWORD,
                                                "service": "moodle_sync_agent"}, timeout=10).json()["token"]
        r = requests.post(url + WS, data={"wstoken": sync, "wsfunction": "core_user_update_users",
                                          "moodlewsrestformat": "json", "users[0][id]": "3",
                                          "users[0][lastname]": "X"}, timeout=10)
        assert r.json()["message"] == NOPERMISSIONS.format("Update user profiles")
        mobile = requests.post(url + LOGIN, data={"username": "student1", "password": LEARNER_PASSWORD,
                                                  "service": "moodle_mobile_app"}, timeout=10).json()
        assert re.fullmatch(r"[0-9a-f]{32}", mobile["token"])
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0 and SYNC_PASSWORD not in out + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
