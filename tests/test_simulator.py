"""Tests for scripts/moodle_simulator/.

Part 1 replays every real Moodle 4.5.6 recording in tests/recordings
against the simulator and compares the answers byte for byte.  That works
because the simulator can report the recorded site URL (wwwroot
http://127.0.0.1:8080) and its clock can be frozen at the recorded instants,
so even timestamps and URLs match.  Only 72_ (a PHP backtrace) is compared by
structure.

Part 2 checks each fault switch from the client side with plain requests,
part 3 the control endpoints, the CLI and Moodle behaviours that the
recordings do not show directly.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from moodle_simulator import REALISTIC_CALL_COST_MS, start_simulator
from tests.wsclient import WS, php_json, ws

HERE = Path(__file__).resolve()
RECORDED_WWWROOT = "http://127.0.0.1:8080"
T_OVERRIDE = 1795334554      # clock of recordings 12-32 (timecompleted, gradedategraded)
NOT_RECORDED = ["core_user_update_users", "core_enrol_get_users_courses", "core_user_get_course_user_profiles",
                # added to edge_sync after recording 01 (recordings 94-101), and mod_assign_save_grade
                "core_completion_get_course_completion_status", "core_badges_get_user_badges",
                "mod_assign_save_grades", "mod_assign_get_grades", "mod_assign_save_grade"]


# The recordings are part of the project (tests/recordings, with their README);
# MOODLE_RECORDINGS may point the replay at another copy of them.
PROJECT_RECORDINGS = HERE.parent / "recordings"
RECORDINGS = Path(os.environ.get("MOODLE_RECORDINGS") or PROJECT_RECORDINGS)
ALL_RECORDING_FILES = sorted(RECORDINGS.glob("*.json"))
# 01_ to 72_ replay here against the recorded server with the admin's token; the later files (other
# users, the box site) are replayed by their own tests (test_simulator_accounts.py: 80-93, 108;
# test_simulator_progress.py: 94-105, a later state of the server and the box's own Moodle, ids mapped).
RECORDING_FILES = [p for p in ALL_RECORDING_FILES if int(p.name[:p.name.index("_")].rstrip("bc")) < 80]
EXPECTED_RECORDINGS = 59     # 01_ to 72_, as listed in tests/recordings/README.md
REPLAYED_HERE = RECORDING_FILES


def load(name):
    path = next(p for p in RECORDING_FILES if p.name.startswith(name + "_"))
    return json.loads(path.read_text())


@pytest.fixture
def simulator():
    """The simulator with the recordings' token, "TOKEN" (conftest's has tests.helpers.TOKEN)."""
    sim = start_simulator()
    yield sim
    sim.stop()


# ---------------------------------------------------------------------------
# Part 1: replay of the recordings
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def replay_sim():
    # The recorded site URL is :8080, and its service lacks the functions the simulator adds.
    sim = start_simulator(wwwroot=RECORDED_WWWROOT, without_functions=NOT_RECORDED)
    yield sim
    sim.stop()


def send(sim, rec, session=None):
    http = session or requests
    method, url = rec["endpoint"].split(" ", 1)
    target = sim.url + urlsplit(url).path
    if method == "GET":
        return http.get(target, params=list(rec["request"].items()), timeout=10)
    if "request_raw_body" in rec:      # 52, 53: a JSON body, maybe with fields in the query string
        return http.post(target, params=list((rec.get("request_query_string") or {}).items()),
                         data=rec["request_raw_body"].encode(),
                         headers={"Content-Type": "application/json"}, timeout=10)
    return http.post(target, data=list(rec["request"].items()), timeout=10)   # fields in recorded order


def replay(sim, name, at=T_OVERRIDE):
    sim.state.set_clock(at)
    r = send(sim, load(name))
    assert r.status_code == 200, (name, r.text)
    return r


def edit_summary_at_568(sim):
    sim.state.set_clock(1795334568)
    sim.state.edit_course_settings(2, summary="Summary edited at 1795334568")


# Steps replayed before a recording, where it depends on earlier ones.
PREREQUISITES = {
    "13": ["12"], "14": ["12"], "15": ["12"], "19": ["12"],
    "18": ["17"],
    "22": ["17", "18"],
    "25": ["23"], "26": ["23"],
    "27": ["17", "18"], "29": ["17", "18"], "32": ["17", "18"],
    # 28 was captured after the course-settings edit of 67_ (its course has the edited summary).
    "28": ["17", "18", edit_summary_at_568],
}
DEBUG_DEVELOPER = {"70", "71", "72"}

# 60-67: one continuous experiment.  (step, clock, action): an action is a
# recording to replay and compare, or a content change done through the
# Python API at the recorded instant.
PAGE = "C1 Page (manual completion)"
SEQUENCE = [
    ("21", T_OVERRIDE, "replay"),      # admin's own completion of cmid 2 shows in 63_
    ("60", T_OVERRIDE, "compare"),
    (lambda s: s.state.edit_activity(1, name=f"{PAGE} (renamed @1795334559)"), 1795334559, "do"),
    ("61", 1795334559, "compare"),
    (lambda s: s.state.edit_activity(1, name=f"{PAGE} (renamed @1795334559) (edited @1795334562)",
                                     content="<p>edited</p>"), 1795334562, "do"),
    ("62", 1795334562, "compare"),
    ("63", 1795334562, "compare"),
    (lambda s: s.state.add_activity(2, "page", "C1 Page added", completion=1), 1795334564, "do"),
    ("64", 1795334564, "compare"),
    ("65", 1795334566, "compare"),
    ("66", 1795334566, "compare"),
    (lambda s: s.state.edit_course_settings(2, summary="Summary edited at 1795334568"), 1795334568, "do"),
    ("67", 1795334568, "compare"),
]
SEQUENCE_NAMES = {step for step, _, kind in SEQUENCE if kind == "compare"}

CHECKED_HEADERS = ("Content-Type", "Content-Length", "Cache-Control", "Expires", "Pragma",
                   "Accept-Ranges", "Access-Control-Allow-Origin")


def compare(rec, r, name):
    assert r.status_code == rec["http_status"]
    assert r.headers["Content-Type"] == rec["content_type"]
    recorded = rec["response"]
    expected = recorded.encode() if isinstance(recorded, str) else php_json(recorded)
    # Our PHP-style encoding of the recorded value has exactly the recorded length:
    assert len(expected) == int(rec["response_headers"]["Content-Length"])
    if name == "72":
        # A PHP backtrace can't be reproduced; compare everything else, and the types.
        got, want = r.json(), recorded
        assert [sorted(x) for x in got["responses"]] == [sorted(x) for x in want["responses"]]
        e_got = json.loads(got["responses"][0]["exception"])
        e_want = json.loads(want["responses"][0]["exception"])
        assert list(e_got) == list(e_want)
        assert isinstance(e_got.pop("backtrace"), str)
        e_want.pop("backtrace")
        assert e_got == e_want
        return
    assert r.content == expected, f"{name}: body differs\n got: {r.text[:600]}\nwant: {expected[:600]!r}"
    for h in CHECKED_HEADERS:
        assert r.headers[h] == rec["response_headers"][h], h


def test_recordings_are_in_the_project():
    """A fresh clone replays every recording: none may be missing, none left out of the replay."""
    in_project = sorted(p.name for p in PROJECT_RECORDINGS.glob("*.json")
                        if int(p.name.split("_")[0].rstrip("bc")) < 80)
    assert len(in_project) == EXPECTED_RECORDINGS, f"{PROJECT_RECORDINGS}: {len(in_project)} recordings"
    assert (PROJECT_RECORDINGS / "README.md").is_file()
    assert [p.name for p in RECORDING_FILES] == in_project, f"the replay reads {RECORDINGS}"
    named = set(PREREQUISITES) | {s for steps in PREREQUISITES.values() for s in steps if isinstance(s, str)}
    named |= SEQUENCE_NAMES | DEBUG_DEVELOPER
    assert named <= {name.split("_")[0] for name in in_project}


# An empty list with an ids function breaks collection on older pytest
# (Debian's 7.2): without recordings, one failing case stands in.
@pytest.mark.parametrize("path", RECORDING_FILES or [None], ids=lambda p: p.stem if p else "no-recordings")
def test_recording_replay(replay_sim, path):
    assert path is not None, f"no recordings in {RECORDINGS}"
    sim = replay_sim
    name = path.name.split("_")[0]
    sim.reset()
    sim.faults.debug = name in DEBUG_DEVELOPER
    rec = json.loads(path.read_text())
    if name in SEQUENCE_NAMES:
        for step, at, kind in SEQUENCE:
            sim.state.set_clock(at)
            if kind == "do":
                step(sim)
                continue
            r = send(sim, load(step))
            if step == name:
                compare(rec, r, name)
                return
            if kind == "compare":
                compare(load(step), r, step)
        raise AssertionError("unreachable")
    for step in PREREQUISITES.get(name, []):
        if callable(step):
            step(sim)
        else:
            replay(sim, step)
    sim.state.set_clock(T_OVERRIDE)
    compare(rec, send(sim, rec), name)


def test_batch_stops_at_first_error_and_keeps_earlier_commits(replay_sim):
    sim = replay_sim
    sim.reset()
    rec = load("28")
    # Same batch as 28_, but the first entry writes: it stays committed although the 2nd fails.
    fields = dict(rec["request"])
    fields["requests[0][function]"] = "core_completion_override_activity_completion_status"
    fields["requests[0][arguments]"] = json.dumps({"userid": 5, "cmid": 2, "newstate": 1})
    r = requests.post(sim.url + WS, data=fields)
    got = r.json()["responses"]
    assert [x["error"] for x in got] == [False, True]
    assert sim.state.get_completion(5, 2)["state"] == 1
    assert sim.stats.snapshot()["calls"].get("core_completion_get_activities_completion_status") is None


# ---------------------------------------------------------------------------
# Helpers for the other tests
# ---------------------------------------------------------------------------


def batch(sim, *calls, session=None):
    reqs = [{"function": f, "arguments": json.dumps(a)} for f, a in calls]
    return ws(sim, "tool_mobile_call_external_functions", session=session, requests=reqs)["responses"]


def control(sim, name, body=None):
    if body is None:
        r = requests.get(f"{sim.url}/__sim/{name}", timeout=10)
    else:
        r = requests.post(f"{sim.url}/__sim/{name}", json=body, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


# ---------------------------------------------------------------------------
# Part 2: fault switches, seen from the client
# ---------------------------------------------------------------------------

def test_latency(simulator):
    simulator.faults.set(latency_ms=150)
    t0 = time.monotonic()
    ws(simulator, "core_webservice_get_site_info")
    assert time.monotonic() - t0 >= 0.15


def test_reset_after_requests_drops_one_connection(simulator):
    simulator.faults.set(reset_after_requests=1)
    s = requests.Session()
    ws(simulator, "core_webservice_get_site_info", session=s)
    with pytest.raises(requests.ConnectionError):
        ws(simulator, "core_completion_override_activity_completion_status", session=s,
           userid=3, cmid=1, newstate=1)
    assert simulator.state.get_completion(3, 1) is None       # not processed
    ws(simulator, "core_webservice_get_site_info", session=s)  # fired once, then disarmed
    assert simulator.stats.snapshot()["faults_fired"]["reset_after_requests"] == 1


def test_reset_after_processing_commits_then_drops(simulator):
    simulator.faults.set(reset_after_requests=0, reset_after_processing=True)
    with pytest.raises(requests.ConnectionError):
        ws(simulator, "core_completion_override_activity_completion_status", userid=3, cmid=1, newstate=1)
    assert simulator.state.get_completion(3, 1)["state"] == 1   # the lost answer's write happened


def test_reset_mid_response(simulator):
    simulator.faults.set(reset_mid_response=1)
    try:
        r = requests.post(simulator.url + WS, data={"wstoken": "TOKEN", "moodlewsrestformat": "json",
                                                    "wsfunction": "core_course_get_courses_by_field"})
    except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError):
        pass        # urllib3 2.x notices the short body
    else:           # urllib3 1.26 (bookworm) hands over what arrived
        assert len(r.content) < int(r.headers["Content-Length"])
        with pytest.raises(ValueError):
            r.json()
    assert ws(simulator, "core_course_get_courses_by_field")["courses"]


@pytest.mark.parametrize("code", [500, 502, 503, 429])
def test_status_with_retry_after_for_next_n(simulator, code):
    simulator.faults.set(status=code, retry_after=7, status_count=2)
    for _ in range(2):
        r = requests.post(simulator.url + WS, data={"wstoken": "TOKEN"})
        assert r.status_code == code
        assert r.headers["Retry-After"] == "7"
        assert r.headers["Content-Type"].startswith("text/html")
    assert ws(simulator, "core_webservice_get_site_info")["userid"] == 2
    assert simulator.faults.status is None


def test_status_after_processing_commits_the_write(simulator):
    simulator.faults.set(status=504, status_after_processing=True, status_count=1)
    r = requests.post(simulator.url + WS, data={"wstoken": "TOKEN", "moodlewsrestformat": "json",
                                                "wsfunction": "core_completion_override_activity_completion_status",
                                                "userid": 3, "cmid": 2, "newstate": 1})
    assert r.status_code == 504
    assert simulator.state.get_completion(3, 2)["state"] == 1


def test_keepalive_limits_like_apache():
    sim = start_simulator(keepalive_timeout=0.3, max_keepalive_requests=3)
    try:
        s = requests.Session()
        for _ in range(7):
            ws(sim, "core_webservice_get_site_info", session=s)
        assert sim.stats.snapshot()["connections"] == 3        # a new connection after every 3 answers
        time.sleep(0.6)                                         # idle longer than KeepAliveTimeout
        ws(sim, "core_webservice_get_site_info", session=s)
        assert sim.stats.snapshot()["connections"] == 4
    finally:
        sim.stop()


def test_captive_portal_answers_any_path(simulator):
    simulator.faults.set(captive_portal=True)
    for path in (WS, "/", "/login/token.php"):
        r = requests.post(simulator.url + path, data={"wstoken": "TOKEN"})
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/html")
        assert "<html" in r.text.lower()
        with pytest.raises(ValueError):
            r.json()
    simulator.faults.set(captive_portal=False)
    ws(simulator, "core_webservice_get_site_info")


def test_redirect_to_portal(simulator):
    simulator.faults.set(redirect="http://portal.example.invalid/login?from=moodle")
    r = requests.post(simulator.url + WS, data={"wstoken": "TOKEN"}, allow_redirects=False)
    assert r.status_code == 302
    assert r.headers["Location"] == "http://portal.example.invalid/login?from=moodle"


def test_reject_token(simulator):
    simulator.faults.set(reject_token=True)
    assert ws(simulator, "core_webservice_get_site_info") == {
        "exception": "core\\exception\\moodle_exception", "errorcode": "invalidtoken",
        "message": "Invalid token - token not found"}


def test_truncated_json(simulator):
    simulator.faults.set(truncated_json=True)
    r = requests.post(simulator.url + WS, data={"wstoken": "TOKEN", "moodlewsrestformat": "json",
                                                "wsfunction": "core_course_get_courses_by_field"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert int(r.headers["Content-Length"]) == len(r.content)    # valid HTTP, broken JSON
    with pytest.raises(ValueError):
        json.loads(r.text)


def test_clock_offset_shifts_date_header(simulator):
    simulator.faults.set(clock_offset_s=-7200)
    r = requests.post(simulator.url + WS, data={"wstoken": "TOKEN"})
    shift = parsedate_to_datetime(r.headers["Date"]).timestamp() - time.time()
    assert -7205 < shift < -7195
    done = ws(simulator, "core_completion_override_activity_completion_status", userid=3, cmid=1, newstate=1)
    assert -7205 < done["timecompleted"] - time.time() < -7195      # the skewed server stamps its own time


def test_fail_function_top_level_and_in_batch(simulator):
    simulator.faults.set(fail_function={"core_completion_override_activity_completion_status": "dmlwriteexception"})
    err = ws(simulator, "core_completion_override_activity_completion_status", userid=3, cmid=1, newstate=1)
    assert err == {"exception": "dml_write_exception", "errorcode": "dmlwriteexception",
                   "message": "Error writing to database"}
    res = batch(simulator, ("core_completion_get_activities_completion_status", {"courseid": 2, "userid": 3}),
                ("core_completion_override_activity_completion_status", {"userid": 3, "cmid": 1, "newstate": 1}))
    assert [x["error"] for x in res] == [False, True]
    assert json.loads(res[1]["exception"])["errorcode"] == "dmlwriteexception"
    assert simulator.state.get_completion(3, 1) is None


def test_cost_model(simulator):
    simulator.faults.set(request_cost_ms=60, call_cost_ms=REALISTIC_CALL_COST_MS * 5)
    t0 = time.monotonic()
    ws(simulator, "core_webservice_get_site_info")
    single = time.monotonic() - t0
    assert single >= 0.06 + 0.04
    t0 = time.monotonic()
    batch(simulator, *[("core_completion_override_activity_completion_status",
                        {"userid": 3, "cmid": 1, "newstate": n % 2}) for n in range(4)])
    assert time.monotonic() - t0 >= 0.06 + 4 * 0.04


def test_keep_alive_reuses_one_connection(simulator):
    s = requests.Session()
    for _ in range(5):
        ws(simulator, "core_webservice_get_site_info", session=s)
    assert simulator.stats.snapshot()["connections"] == 1


def test_faults_endpoint(simulator):
    snap = control(simulator, "faults", {"status": 503, "status_count": 1})
    assert snap["status"] == 503
    assert requests.post(simulator.url + WS).status_code == 503
    assert control(simulator, "faults", {"clear": True})["status"] is None
    r = requests.post(f"{simulator.url}/__sim/faults", json={"no_such_switch": 1})
    assert r.status_code == 400


# ---------------------------------------------------------------------------
# Part 3: control endpoints, CLI, TLS and Moodle behaviour
# ---------------------------------------------------------------------------

def test_state_stats_reset_endpoints(simulator):
    ws(simulator, "core_completion_override_activity_completion_status", userid=4, cmid=1, newstate=1)
    batch(simulator, ("core_course_get_contents", {"courseid": 2}), ("core_course_get_contents", {"courseid": 3}))
    state = control(simulator, "state")
    assert {"users", "enrolments", "completions", "grades", "courses"} <= set(state)
    assert [c for c in state["completions"] if c["userid"] == 4] == [
        {"cmid": 1, "courseid": 2, "userid": 4, "state": 1, "timecompleted": state["completions"][0]["timecompleted"],
         "overrideby": 2}]
    assert [u["username"] for u in state["users"]] == ["admin"] + [f"student{i}" for i in range(1, 6)]
    only = requests.get(f"{simulator.url}/__sim/state?only=completions,enrolments&userid=4&courseid=2").json()
    assert set(only) == {"clock", "completions", "enrolments"}
    assert [(e["userid"], e["courseid"]) for e in only["enrolments"]] == [(4, 2)]
    stats = control(simulator, "stats")
    assert stats["requests"] == 2 and stats["batches"] == 1 and stats["batch_sizes"] == {"2": 1}
    assert stats["calls"]["core_course_get_contents"] == 2 and stats["bytes_out"] > stats["bytes_in"] > 0
    control(simulator, "reset", {})
    assert control(simulator, "state")["completions"] == []
    assert control(simulator, "stats")["requests"] == 0


def test_edit_endpoint_and_cacherev_rule(simulator):
    control(simulator, "clock", {"now": 1795334500})
    before = control(simulator, "state")["courses"][1]
    assert before["cacherev"] == 1795334435 and before["timemodified"] == 1795334424
    control(simulator, "edit", {"op": "edit_activity", "cmid": 1, "name": "Renamed"})
    c = ws(simulator, "core_course_get_courses_by_field", field="id", value=2)["courses"][0]
    assert (c["cacherev"], c["timemodified"]) == (1795334500, 1795334424)
    control(simulator, "edit", {"op": "edit_activity", "cmid": 2, "name": "Again"})   # same second: old + 1
    assert control(simulator, "state")["courses"][1]["cacherev"] == 1795334501
    ws(simulator, "core_completion_override_activity_completion_status", userid=3, cmid=1, newstate=1)
    ws(simulator, "core_grades_update_grades", source="t", courseid=2, component="mod_assign", activityid=3,
       itemnumber=0, grades=[{"studentid": 3, "grade": 50}])
    assert control(simulator, "state")["courses"][1]["cacherev"] == 1795334501   # completion/grades: no bump
    added = control(simulator, "edit", {"op": "add_activity", "courseid": 2, "modname": "url",
                                        "name": "New link", "completion": 1})
    assert added == {"cmid": 9}
    assert control(simulator, "state")["courses"][1]["cacherev"] == 1795334504   # three rebuilds
    control(simulator, "clock", {"now": 1795330000})   # clock went back by more than an hour: reset to now
    control(simulator, "edit", {"op": "edit_course_settings", "courseid": 2, "summary": "New"})
    c = ws(simulator, "core_course_get_courses_by_field", field="id", value=2)["courses"][0]
    assert (c["summary"], c["timemodified"], c["cacherev"]) == ("New", 1795330000, 1795330000)
    statuses = ws(simulator, "core_completion_get_activities_completion_status", courseid=2, userid=3)["statuses"]
    assert [s["cmid"] for s in statuses] == [1, 2, 9, 3]
    control(simulator, "edit", {"op": "delete_activity", "cmid": 1})
    assert [m["id"] for s in ws(simulator, "core_course_get_contents", courseid=2) for m in s["modules"]] == [2, 9, 3]
    control(simulator, "edit", {"op": "delete_course", "courseid": 4})
    assert ws(simulator, "core_course_get_courses_by_field", field="id", value=4)["courses"] == []
    assert ws(simulator, "core_course_get_contents", courseid=4)["errorcode"] == "invalidrecord"
    r = requests.post(f"{simulator.url}/__sim/edit", json={"op": "explode"})
    assert r.status_code == 400


def test_forget_endpoint(simulator):
    for uid in (3, 4):
        ws(simulator, "core_completion_override_activity_completion_status", userid=uid, cmid=1, newstate=1)
        ws(simulator, "core_grades_update_grades", source="t", courseid=2, component="mod_assign", activityid=3,
           itemnumber=0, grades=[{"studentid": uid, "grade": 70}])
    assert control(simulator, "forget", {"userid": 3, "courseid": 2}) == {"completions": 2, "grades": 1, "users": 0}
    assert simulator.state.get_completion(3, 1) is None and simulator.state.get_grade(3, 3) is None
    assert simulator.state.get_completion(4, 1)["state"] == 1
    assert simulator.state.get_grade(4, 3)["grade"] == 70
    control(simulator, "forget", {"grades": False})
    assert simulator.state.get_completion(4, 1) is None and simulator.state.get_grade(4, 3) is not None


def test_forget_users_with_id_reuse(simulator):
    new = ws(simulator, "core_user_create_users", users=[{"username": "late", "password": "Pass#word1",
                                                            "firstname": "L", "lastname": "A",
                                                            "email": "late@example.invalid"}])
    assert new == [{"id": 8, "username": "late"}]
    control(simulator, "forget", {"users": [8], "reuse_ids": True})
    assert ws(simulator, "core_user_get_users_by_field", field="id", values=[8]) == []
    again = ws(simulator, "core_user_create_users", users=[{"username": "other", "createpassword": 1,
                                                              "firstname": "O", "lastname": "T",
                                                              "email": "other@example.invalid"}])
    assert again == [{"id": 8, "username": "other"}]


def test_cli_prints_one_line_and_stops_on_sigterm(tmp_path):
    script = HERE.parents[1] / "scripts" / "moodle-simulator"
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(script), "--host", "127.0.0.1", "--port", str(port),
                             "--token", "s3cret-token", "--request-cost-ms", "1", "--calibrated-costs",
                             "--participants", "4=3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line == f"moodle-simulator ready on http://127.0.0.1:{port} (token set)\n"
        r = requests.post(f"http://127.0.0.1:{port}{WS}", data={"wstoken": "s3cret-token",
                                                               "wsfunction": "core_webservice_get_site_info",
                                                               "moodlewsrestformat": "json"})
        assert r.json()["siteurl"] == f"http://127.0.0.1:{port}"
        r = requests.post(f"http://127.0.0.1:{port}{WS}", data={"wstoken": "s3cret-token",
                                                               "wsfunction": "core_enrol_get_enrolled_users",
                                                               "moodlewsrestformat": "json", "courseid": 4})
        assert [u["username"] for u in r.json()] == ["c4-participant1", "c4-participant2", "c4-participant3"]
        stats = requests.get(f"http://127.0.0.1:{port}/__sim/stats").json()
        assert stats["cost_ms"]["(request)"] == 2 * (1 + 38)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert out == "" and "s3cret-token" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_refuses_participants_for_a_missing_course():
    script = HERE.parents[1] / "scripts" / "moodle-simulator"
    done = subprocess.run([sys.executable, str(script), "--port", "0", "--token", "t", "--participants", "99=5"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "courseid: no course 99" in done.stderr
    done = subprocess.run([sys.executable, str(script), "--port", "0", "--token", "t", "--participants", "4"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "expected COURSEID=N" in done.stderr


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tls(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("openssl is not available to make a test certificate")
    sim = start_simulator(tls_cert=str(cert), tls_key=str(key))
    try:
        assert sim.url.startswith("https://")
        s = requests.Session()
        s.verify = str(cert)
        s.trust_env = False     # REQUESTS_CA_BUNDLE would override verify
        for _ in range(3):
            info = ws(sim, "core_webservice_get_site_info", session=s)
        assert info["siteurl"] == sim.url
        assert sim.stats.snapshot()["connections"] == 1
    finally:
        sim.stop()


def test_site_info_lists_the_unrecorded_functions_last_by_default(simulator):
    names = [f["name"] for f in ws(simulator, "core_webservice_get_site_info")["functions"]]
    assert names[-8:] == NOT_RECORDED and len(names) == 22


def test_without_function_gives_accessexception(simulator):
    sim = start_simulator(without_functions=["core_grades_update_grades"])
    try:
        assert ws(sim, "core_grades_update_grades")["errorcode"] == "accessexception"
        res = batch(sim, ("core_grades_update_grades", {}))
        assert json.loads(res[0]["exception"]) == {"errorcode": "accessexception", "module": "webservice"}
    finally:
        sim.stop()
    assert ws(simulator, "core_grades_get_grades")["errorcode"] == "invalidrecord"   # not in Moodle 4.5


def test_override_is_idempotent_and_can_undo(simulator):
    simulator.state.set_clock(1000)
    first = ws(simulator, "core_completion_override_activity_completion_status", userid=3, cmid=1, newstate=1)
    simulator.state.set_clock(2000)
    again = ws(simulator, "core_completion_override_activity_completion_status", userid=3, cmid=1, newstate=1)
    assert first == again == {"cmid": 1, "userid": 3, "state": 1, "timecompleted": 1000, "overrideby": 2,
                              "tracking": 1}
    undo = ws(simulator, "core_completion_override_activity_completion_status", userid=3, cmid=1, newstate=0)
    assert undo == {"cmid": 1, "userid": 3, "state": 0, "timecompleted": 2000, "overrideby": 2, "tracking": 1}
    # newstate 0 when already incomplete is a no-op, not an error; 5 is always err_system
    assert ws(simulator, "core_completion_override_activity_completion_status", userid=5, cmid=2,
              newstate=0)["state"] == 0
    assert ws(simulator, "core_completion_override_activity_completion_status", userid=5, cmid=2,
              newstate=5)["errorcode"] == "err_system"


def test_grade_completes_assign_unless_overridden(simulator):
    grade = dict(source="t", courseid=2, component="mod_assign", activityid=3, itemnumber=0)
    assert ws(simulator, "core_grades_update_grades", grades=[{"studentid": 4, "grade": 120}], **grade) == 0
    assert simulator.state.get_completion(4, 3)["state"] == 1
    report = ws(simulator, "gradereport_user_get_grade_items", courseid=2, userid=4)["usergrades"][0]
    assert report["gradeitems"][0]["graderaw"] == 100 and report["gradeitems"][0]["percentageformatted"] == "100.00 %"
    # A graded student whose overridden "complete" must hold when the grade is removed:
    ws(simulator, "core_completion_override_activity_completion_status", userid=5, cmid=3, newstate=1)
    batch(simulator, ("core_grades_update_grades", dict(grade, grades=[{"studentid": 5, "grade": None}])))
    assert simulator.state.get_completion(5, 3)["overrideby"] == 2
    # ... while a grade-made completion goes back to incomplete.
    batch(simulator, ("core_grades_update_grades", dict(grade, grades=[{"studentid": 4, "grade": None}])))
    assert simulator.state.get_completion(4, 3)["state"] == 0
    # activityid must be a cmid of the component's module
    assert ws(simulator, "core_grades_update_grades", grades=[{"studentid": 4, "grade": 1}],
              **dict(grade, activityid=1))["errorcode"] == "invalidcoursemodule"


def test_ungraded_report_and_manual_update_rules(simulator):
    item = ws(simulator, "gradereport_user_get_grade_items", courseid=3, userid=3)["usergrades"][0]["gradeitems"][0]
    assert item["graderaw"] is None and item["gradeformatted"] == "-" and "weightraw" not in item
    assert item["cmid"] == 6
    assert ws(simulator, "core_completion_update_activity_completion_status_manually", cmid=3,
              completed=1)["errorcode"] == "cannotmanualctrack"
    assert ws(simulator, "core_completion_update_activity_completion_status_manually", cmid=2,
              completed="true")["errorcode"] == "invalidparameter"
    assert ws(simulator, "core_completion_get_activities_completion_status", courseid=2,
              userid=9999)["errorcode"] == "invaliduser"


def test_enrolment_and_user_lifecycle(simulator):
    new = [{"username": "student7", "password": "Student#Ref7", "firstname": "Student7",
            "lastname": "Reference", "email": "student7@example.invalid", "idnumber": "S007"}]
    assert ws(simulator, "core_user_create_users", users=new) == [{"id": 8, "username": "student7"}]
    # Same call with a duplicate inside is rolled back entirely.
    dup = [dict(new[0], username="student8", email="s8@example.invalid", idnumber="S008"),
           dict(new[0], username="student8", email="s8b@example.invalid")]
    assert ws(simulator, "core_user_create_users", users=dup)["errorcode"] == "invalidparameter"
    assert ws(simulator, "core_user_get_users_by_field", field="username", values=["student8"]) == []
    # A password against the policy: its HTML text is the error code (recording 93).
    assert ws(simulator, "core_user_create_users", users=[dict(new[0], username="weak", email="w@example.invalid",
                                                               password="weak")])["errorcode"].startswith("<div>")
    assert ws(simulator, "core_user_get_users_by_field", field="username",
              values=["Student7"])["errorcode"] == "invalidparameter"     # PARAM_USERNAME is lower case
    enrol = {"enrolments": [{"roleid": 5, "userid": 8, "courseid": 2}]}
    assert ws(simulator, "enrol_manual_enrol_users", **enrol) is None
    assert ws(simulator, "enrol_manual_enrol_users", **enrol) is None        # idempotent
    users = ws(simulator, "core_enrol_get_enrolled_users", courseid=2)
    assert [u["id"] for u in users] == [3, 4, 5, 6, 7, 8]
    assert users[-1]["roles"] == [{"roleid": 5, "name": "", "shortname": "student", "sortorder": 0}]
    assert users[-1]["enrolledcourses"] == [{"id": 2, "fullname": "Reference course C1", "shortname": "C1"}]
    assert ws(simulator, "enrol_manual_enrol_users",
              enrolments=[{"roleid": 5, "userid": 4242, "courseid": 2}])["errorcode"] == "codingerror"
    # In a batch, null data (enrol) leaves "data" out; 0 (update_grades) is "0".
    res = batch(simulator, ("enrol_manual_enrol_users", enrol),
                ("core_grades_update_grades", {"source": "t", "courseid": 2, "component": "mod_assign",
                                               "activityid": 3, "itemnumber": 0, "grades": []}))
    assert res == [{"error": False}, {"error": False, "data": "0"}]
    # core_user_update_users returns warnings, never throws for a bad user.
    upd = ws(simulator, "core_user_update_users", users=[{"id": 8, "idnumber": "S007b", "suspended": 1},
                                                         {"id": 4242, "firstname": "X"},
                                                         {"id": 3, "email": "student2@example.invalid"}])
    assert upd == {"warnings": [
        {"item": "user", "itemid": 4242, "warningcode": "invaliduserid", "message": "Invalid user id"},
        {"item": "user", "itemid": 3, "warningcode": "useremailduplicate", "message": "Duplicate address"}]}
    u = ws(simulator, "core_user_get_users_by_field", field="idnumber", values=["S007b"])[0]
    assert u["suspended"] is True and u["id"] == 8


def test_unexpected_and_wrong_shaped_parameters(simulator):
    assert ws(simulator, "core_course_get_contents", courseid=2, foo=1)["errorcode"] == "invalidparameter"
    assert ws(simulator, "core_course_get_contents", courseid=" 2")["errorcode"] == "invalidparameter"
    assert ws(simulator, "core_course_get_courses_by_field", field="bogus", value=1)["errorcode"] == "invalidparameter"
    assert ws(simulator, "core_webservice_get_site_info", token="")["errorcode"] == "invalidtoken"
    simulator.faults.debug = True
    err = ws(simulator, "core_course_get_contents", courseid="abc")
    assert err["debuginfo"] == ('courseid => Invalid parameter value detected: Invalid external api parameter: '
                                'the value is "abc", the server was expecting "int" type')
    assert ws(simulator, "core_webservice_get_site_info", moodlewssettingfilter="true")["userid"] == 2
    # PHP bracket forms: values[]=a&values[]=b works like values[0], values[1]
    r = requests.post(simulator.url + WS, data="wstoken=TOKEN&wsfunction=core_user_get_users_by_field&"
                      "moodlewsrestformat=json&field=idnumber&values[]=S001&values[]=S005",
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert [u["id"] for u in r.json()] == [3, 7]


def test_course_without_completion(simulator):
    cid = simulator.state.add_course("NC", enablecompletion=0)
    cmid = simulator.state.add_activity(cid, "page", "No completion here", completion=1)
    assert ws(simulator, "core_completion_get_activities_completion_status", courseid=cid,
              userid=3) == {"statuses": [], "warnings": []}
    assert ws(simulator, "core_completion_override_activity_completion_status", userid=3, cmid=cmid,
              newstate=1)["errorcode"] == "completionnotenabled"
    module = ws(simulator, "core_course_get_contents", courseid=cid)[1]["modules"][0]
    assert module["completion"] == 0 and "completiondata" not in module


def test_get_courses_by_field_variants(simulator):
    by = lambda **kw: ws(simulator, "core_course_get_courses_by_field", **kw)  # noqa: E731
    assert [c["id"] for c in by(field="ids", value="4,2")["courses"]] == [4, 2]
    missing = by(field="ids", value="2,99")
    assert [c["id"] for c in missing["courses"]] == [2]
    assert missing["warnings"][0]["itemid"] == 99
    assert [c["id"] for c in by(field="idnumber", value="REF-C3")["courses"]] == [4]
    assert [c["id"] for c in by(field="category", value=1)["courses"]] == [2, 3, 4]
    ws(simulator, "enrol_manual_enrol_users", enrolments=[{"roleid": 3, "userid": 7, "courseid": 4}])
    assert by(field="id", value=4)["courses"][0]["contacts"] == [{"id": 7, "fullname": "Student5 Reference"}]


def test_xml_format_for_other_functions(simulator):
    xml = ws(simulator, "core_grades_update_grades", fmt="xml", source="t", courseid=2, component="mod_assign",
             activityid=3, itemnumber=0)
    assert xml == '<?xml version="1.0" encoding="UTF-8" ?>\n<RESPONSE>\n<VALUE>0</VALUE>\n</RESPONSE>\n'
    xml = ws(simulator, "enrol_manual_enrol_users", fmt=None, enrolments=[{"roleid": 5, "userid": 3, "courseid": 4}])
    assert xml == '<?xml version="1.0" encoding="UTF-8" ?>\n<RESPONSE>\n</RESPONSE>\n'


def test_concurrent_batches_are_consistent(simulator):
    import threading

    def worker(uid):
        s = requests.Session()
        for start in range(0, 200, 50):
            batch(simulator, *[("core_completion_override_activity_completion_status",
                                {"userid": uid, "cmid": 1 + (n % 2), "newstate": (n // 2) % 2})
                               for n in range(start, start + 50)], session=s)

    threads = [threading.Thread(target=worker, args=(uid,)) for uid in range(100, 108)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = simulator.stats.snapshot()
    assert stats["calls"]["core_completion_override_activity_completion_status"] == 8 * 200
    assert len(simulator.state.dump()["completions"]) == 16


# ---------------------------------------------------------------------------
# Part 4: enrolment checks in proportion to the box's learners (answers as
# Moodle 4.5 gives them), big courses, and the calibrated cost model
# ---------------------------------------------------------------------------

def enrolled(sim, courseid, **options):
    opts = [{"name": k, "value": v} for k, v in options.items()]
    return ws(sim, "core_enrol_get_enrolled_users", courseid=courseid, options=opts)


def test_enrolled_users_options(simulator):
    assert enrolled(simulator, 2, userfields="id") == [
        {"id": uid, "fullname": f"Student{uid - 2} Reference"} for uid in range(3, 8)]
    # XML walks the returns description: every key, null (or an empty list) where JSON has none.
    xml = ws(simulator, "core_enrol_get_enrolled_users", fmt=None, courseid=2,
             options=[{"name": "userfields", "value": "id"}])
    assert xml.count("<SINGLE>") == 5 and xml.count('<KEY name="username"><VALUE null="null"/>\n</KEY>') == 5
    assert '<KEY name="customfields"><MULTIPLE>\n</MULTIPLE>\n</KEY>' in xml
    # clean_param(PARAM_ALPHANUMEXT) per field; the answer follows get_enrolled_users_returns' order.
    assert list(enrolled(simulator, 2, userfields="email, id,roles")[0]) == ["id", "fullname", "email", "roles"]
    assert [u["id"] for u in enrolled(simulator, 2, userfields="id", limitfrom=1, limitnumber=2)] == [4, 5]
    assert [u["id"] for u in enrolled(simulator, 2, userfields="id", limitfrom=-3, limitnumber=-1)] == [3, 4, 5, 6, 7]
    assert [u["id"] for u in enrolled(simulator, 2, userfields="id", sortby="firstname",
                                      sortdirection="desc")] == [7, 6, 5, 4, 3]
    # onlyactive is PHP's !empty(): "0" and "" are off, anything else on; it looks at enrolments only.
    ws(simulator, "enrol_manual_enrol_users", enrolments=[{"roleid": 5, "userid": 7, "courseid": 2, "suspend": 1}])
    ws(simulator, "core_user_update_users", users=[{"id": 6, "suspended": 1}])
    assert [u["id"] for u in enrolled(simulator, 2, userfields="id", onlyactive="0")] == [3, 4, 5, 6, 7]
    assert [u["id"] for u in enrolled(simulator, 2, userfields="id", onlyactive="false")] == [3, 4, 5, 6]
    # withcapability: the roles whose archetype has it.
    ws(simulator, "enrol_manual_enrol_users", enrolments=[{"roleid": 3, "userid": 3, "courseid": 4},
                                                           {"roleid": 5, "userid": 4, "courseid": 4}])
    assert [u["id"] for u in enrolled(simulator, 4, userfields="id",
                                      withcapability="moodle/course:isincompletionreports")] == [4]
    assert [u["id"] for u in enrolled(simulator, 4, userfields="id",
                                      withcapability="moodle/course:viewparticipants")] == [3, 4]
    assert enrolled(simulator, 4, groupid=1) == []          # no groups: nobody is in one
    err = enrolled(simulator, 2, userfields="id,bogus")
    assert err == {"exception": "core\\exception\\moodle_exception", "errorcode": "invaliduserfield",
                   "message": "Invalid user field: bogus"}
    assert enrolled(simulator, 2, sortby="email")["errorcode"] == "invalidparameter"
    assert enrolled(simulator, 2, sortdirection="up")["errorcode"] == "invalidparameter"
    assert enrolled(simulator, 99)["errorcode"] == "invalidrecord"


def test_users_courses(simulator):
    keys = ["id", "shortname", "fullname", "displayname", "enrolledusercount", "idnumber", "visible", "summary",
            "summaryformat", "format", "courseimage", "showgrades", "lang", "enablecompletion",
            "completionhascriteria", "completionusertracked", "category", "progress", "completed", "startdate",
            "enddate", "marker", "lastaccess", "isfavourite", "hidden", "overviewfiles", "showactivitydates",
            "showcompletionconditions", "timemodified"]
    ws(simulator, "core_completion_override_activity_completion_status", userid=3, cmid=1, newstate=1)
    courses = ws(simulator, "core_enrol_get_users_courses", userid=3)
    assert [c["id"] for c in courses] == [3, 2]             # visible first, then by sortorder (C2 before C1)
    c1 = courses[1]
    assert list(c1) == keys
    assert (c1["shortname"], c1["enrolledusercount"], c1["showgrades"], c1["enablecompletion"]) == ("C1", 5, True, True)
    assert c1["completionusertracked"] is True and c1["completed"] is False and c1["lastaccess"] is None
    assert c1["progress"] == pytest.approx(100 / 3)          # 1 of C1's 3 activities with completion
    assert courses[0]["progress"] == 0
    assert c1["courseimage"] == f"{simulator.url}/pluginfile.php/11/course/generated/course.svg"
    assert "enrolledusercount" not in ws(simulator, "core_enrol_get_users_courses", userid=3, returnusercount=0)[0]
    xml = ws(simulator, "core_enrol_get_users_courses", fmt=None, userid=3)
    assert '<KEY name="progress"><VALUE>33.333333333333</VALUE>' in xml      # PHP's 14 digits
    assert '<KEY name="lastaccess"><VALUE null="null"/>' in xml
    # Only active enrolments, hidden courses for those who may see them; an unknown user has no courses.
    ws(simulator, "enrol_manual_enrol_users", enrolments=[{"roleid": 5, "userid": 3, "courseid": 3, "suspend": 1},
                                                           {"roleid": 5, "userid": 3, "courseid": 4},
                                                           {"roleid": 3, "userid": 4, "courseid": 4}])
    simulator.state.edit_course_settings(4, visible=0)
    assert [c["id"] for c in ws(simulator, "core_enrol_get_users_courses", userid=3)] == [2]
    assert [c["id"] for c in ws(simulator, "core_enrol_get_users_courses", userid=4)] == [3, 2, 4]
    assert ws(simulator, "core_enrol_get_users_courses", userid=4242) == []
    assert ws(simulator, "core_enrol_get_users_courses")["errorcode"] == "invalidparameter"


def test_course_user_profiles(simulator):
    base = ws(simulator, "core_user_get_users_by_field", field="id", values=[3])[0]
    profiles = ws(simulator, "core_user_get_course_user_profiles",
                  userlist=[{"userid": 4242, "courseid": 2}, {"userid": 4, "courseid": 4}, {"userid": 3, "courseid": 2}])
    assert [p["id"] for p in profiles] == [3, 4]             # unknown users are left out
    assert profiles[0] == {**base, "roles": [{"roleid": 5, "name": "", "shortname": "student", "sortorder": 0}],
                           "enrolledcourses": [{"id": 3, "fullname": "Reference course C2", "shortname": "C2"},
                                               {"id": 2, "fullname": "Reference course C1", "shortname": "C1"}]}
    assert profiles[1]["roles"] == []                        # a profile even where the user is not enrolled
    missing = ws(simulator, "core_user_get_course_user_profiles", userlist=[{"userid": 3, "courseid": 99}])
    assert missing["errorcode"] == "invalidparameter"
    [res] = batch(simulator, ("core_user_get_course_user_profiles", {"userlist": []}))
    assert json.loads(res["exception"])["errorcode"] == "codingerror"


def test_participants_cost_no_records_and_behave_like_users():
    sim = start_simulator(participants={4: 30000})
    try:
        state = sim.state
        assert len(state.users) == 7 and state.enrolled_count(4) == 30000     # kept as one rule
        last = enrolled(sim, 4, userfields="id,username", limitfrom=29998, limitnumber=5)
        assert last == [{"id": 30006, "username": "c4-participant29999", "fullname": "Participant 29999"},
                        {"id": 30007, "username": "c4-participant30000", "fullname": "Participant 30000"}]
        found = ws(sim, "core_user_get_users_by_field", field="username", values=["c4-participant7", "c4-participant0"])
        assert [u["id"] for u in found] == [14]
        assert [c["id"] for c in ws(sim, "core_enrol_get_users_courses", userid=14)] == [4]
        assert ws(sim, "core_user_get_users_by_field", field="email",
                  values=["c4-participant8@example.invalid"])[0]["id"] == 15
        # Writing to one makes it an ordinary record; the others stay a rule.
        ws(sim, "enrol_manual_enrol_users", enrolments=[{"roleid": 5, "userid": 14, "courseid": 2}])
        assert len(state.users) == 8
        assert [c["id"] for c in ws(sim, "core_enrol_get_users_courses", userid=14)] == [4, 2]
        ws(sim, "core_user_update_users", users=[{"id": 15, "username": "renamed15"}])
        assert ws(sim, "core_user_get_users_by_field", field="username", values=["c4-participant8"]) == []
        assert ws(sim, "core_user_get_users_by_field", field="username", values=["renamed15"])[0]["id"] == 15
        assert ws(sim, "core_user_create_users", users=[{"username": "c4-participant9", "password": "Pass#word1",
                                                        "firstname": "A", "lastname": "B",
                                                        "email": "a@example.invalid"}])["errorcode"] == "invalidparameter"
        ws(sim, "core_completion_override_activity_completion_status", userid=16, cmid=7, newstate=1)
        assert state.get_completion(16, 7)["state"] == 1
        status = ws(sim, "core_completion_get_activities_completion_status", courseid=4, userid=16)["statuses"]
        assert status[0]["istrackeduser"] is True
        assert state.forget(users=[16])["users"] == 1 and state.enrolled_count(4) == 29999
        sim.reset()
        assert len(state.users) == 7 and state.enrolled_count(4) == 30000
        with pytest.raises(ValueError, match="courseid"):
            state.add_participants(99, 3)
        assert control(sim, "edit", {"op": "add_participants", "courseid": 2, "count": 3, "prefix": "extra"}) == {
            "courseid": 2, "prefix": "extra", "first_id": 30008, "last_id": 30010}
        assert state.enrolled_count(2) == 8
    finally:
        sim.stop()


def cost_of(sim, function, **params):
    """The simulated cost charged for one call, by part (what the server slept)."""
    sim.stats.reset()
    ws(sim, function, **params)
    return sim.stats.snapshot()["cost_ms"]


def test_calibrated_costs_grow_with_participants_and_fields():
    sim = start_simulator(calibrated_costs=True, participants={4: 200})
    try:
        full = cost_of(sim, "core_enrol_get_enrolled_users", courseid=2)
        ids = cost_of(sim, "core_enrol_get_enrolled_users", courseid=2,
                      options=[{"name": "userfields", "value": "id"}])
        # 5 participants; a full profile here has 15 fields, userfields=id gives id and fullname.
        assert full == {"(request)": 38.0, "core_enrol_get_enrolled_users": pytest.approx(5 * (0.01 + 15 * 0.27))}
        assert ids == {"(request)": 38.0, "core_enrol_get_enrolled_users": pytest.approx(5 * (0.01 + 2 * 0.27))}
        assert full["core_enrol_get_enrolled_users"] > 7 * ids["core_enrol_get_enrolled_users"]
        # In proportion to what is asked for, not to the course: 30 of 200 participants.
        some = cost_of(sim, "core_enrol_get_enrolled_users", courseid=4,
                       options=[{"name": "userfields", "value": "id"}, {"name": "limitnumber", "value": "30"}])
        assert some["core_enrol_get_enrolled_users"] == pytest.approx(30 * (0.01 + 2 * 0.27))
        # A batch of overrides: one request, 7.2 ms an entry; the old flat switches add to it.
        sim.faults.set(request_cost_ms=10, call_cost_ms=1)
        sim.stats.reset()
        batch(sim, *[("core_completion_override_activity_completion_status",
                      {"userid": 3, "cmid": 1, "newstate": n % 2}) for n in range(3)])
        assert sim.stats.snapshot()["cost_ms"] == {
            "(request)": 48.0, "core_completion_override_activity_completion_status": pytest.approx(3 * 8.2)}
        assert sim.stats.snapshot()["total_cost_ms"] == pytest.approx(48 + 3 * 8.2)
        # Off through the control endpoint, as the other cost switches.
        assert control(sim, "faults", {"calibrated_costs": False, "request_cost_ms": None,
                                       "call_cost_ms": None})["calibrated_costs"] is False
        assert cost_of(sim, "core_webservice_get_site_info") == {}
    finally:
        sim.stop()
