"""Moodle 4.5 Web Services (REST) simulator for moodle-sync-agent.

Standard library only, so it runs anywhere Python 3.11 does.  It answers
``/webservice/rest/server.php`` the way the recorded Moodle 4.5.6 does (see
``tests/recordings``): same status codes, headers, JSON bytes (PHP
``json_encode`` style, ``\\/`` escaped), exception classes, error codes and
messages, XML by default, and the recorded test data (courses C1-C3, students
3-7, the edge_sync service plus core_user_update_users,
core_enrol_get_users_courses, core_user_get_course_user_profiles,
core_completion_get_course_completion_status, core_badges_get_user_badges,
mod_assign_save_grades, mod_assign_get_grades and mod_assign_save_grade).

Grades and completion (issues 21, 22): an assignment keeps its own grade
table (assign.py; mod_assign_get_grades reads it), which
mod_assign_save_grades writes together with the grade book, and the grade
book's change completes the activity ("receive a grade");
core_grades_update_grades writes the grade book only.  An activity
completion change completes the course at once when its criteria are met
(coursecompletion.py; seeded courses require all their activities with
completion), and the course's completion badge is issued then (badges.py).

Python API (for tests)::

    with start_simulator(token="TOKEN") as sim:      # port 0: a free port
        sim.url                                      # http://127.0.0.1:<port>
        sim.state.set_clock(1795334554)              # freeze the site clock (None: real time)
        sim.state.edit_activity(1, name="Renamed")   # add_activity, delete_activity,
                                                     # edit_course_settings, delete_course, add_course
        sim.state.forget(userid=3, courseid=2)       # drop completions/grades (restored backup)
        sim.state.get_completion(3, 1); sim.state.get_grade(4, 3); sim.state.dump()
        sim.state.get_assign_grade(4, 3); sim.state.get_course_completion(3, 2)
        sim.state.set_completion_criteria(2, None)   # "all" (the seed's), [cmids] or None: nocriteriaset
        sim.state.set_course_badge(2, present=False) # each seeded course has a completion badge
        sim.state.add_participants(2, 30000)         # a big course, kept as one rule (no memory)
        sim.state.add_user("boxonly", "Box", "Only")  # -> {"userid", "username"}; enrol_user(userid=|username=,
                                                     #    courseid=, roleid=5, suspended=False)
        token = sim.token_for("student1")            # that user's token: every function acts as them
        sim.state.touch(23, 12)                      # lastcourseaccess of (user, course) := the site's now
        sim.faults.set(status=503, retry_after=5, status_count=2)
        sim.stats.snapshot()                         # with cost_ms: the simulated cost, by function
        sim.reset()                                  # seed data, default faults, zero stats

Box mode (``box=True``, ``--box``): the classroom box's own Moodle of issue 12,
the same content as the default seed with every id different (seed.BOX:
courses +10, so C1 = 12; cmids +100; users +20, so student1 = 23; sections,
contexts, instances and grade items offset too); its site is "Classroom box
Moodle". The admin (2) and the site course (1) are the same on both.

Tokens: the token given at start is the admin's; sim.token_for(username) or
POST /__sim/tokens gives any other user's. The token's user is the acting
user (access.py): their own completion, Moodle's capability errors for what
their roles lack, lastcourseaccess moved when they enter a course; functions
not simulated for such a user answer notsimulated.

Accounts and rights (accounts.py, rights.py; recordings 80-93): passwords are
stored as hashes and must meet Moodle's default policy (create_users answers
the policy's HTML text as the error code, update_users invalidresponse);
``POST/GET /login/token.php`` (username, password, service) answers like
Moodle, with a token bound to its user and its service: the custom service
``moodle_sync_agent`` (the functions of the admin's token) or
``moodle_mobile_app`` (enabled on the box only, as mobile web services are).
Non-admins need webservice/rest:use for any call (the box's authenticated
users have it).  Seeded passwords: accounts.ADMIN_PASSWORD, LEARNER_PASSWORD
(student1..5).  ``sync_account=True`` (``--sync-account``) seeds the
non-admin ``syncagent`` (accounts.SYNC_PASSWORD, the next user id, so
student6 is no longer 8) with the roles read from packaging/moodle/*.xml:
on the server the two system presets in the system context and the category
preset in the seeded courses' category, on the box the box preset in the
system context; ``sync_without=["moodle/user:update"]`` takes an optional
capability out.  Python: sim.state.set_password(pw, username=),
password_is(pw, username=), define_role(xml), assign_role(role, username=,
contextlevel="system"|"coursecat", instanceid=), remove_capability(cap,
role=None), add_service(shortname, functions=None, enabled=True); the same
as /__sim/edit ops.

Options of start_simulator/SimServer: box, request_cost_ms, call_cost_ms,
calibrated_costs (the cost model of faults.py, fitted to a real Moodle 4.5), seed,
participants ({courseid: N}: N more students, cN-participant1..N, kept after
reset), without_functions, wwwroot (site URL to report), tls_cert/tls_key, debug
(DEVELOPER debug level: debuginfo in errors), max_input_vars (5000),
post_max_size (8 MiB), keepalive_timeout (5 s), max_keepalive_requests (100),
sync_account, sync_without, mobile_services (default: on for the box only).

Fault switches (``sim.faults.set(...)`` or POST /__sim/faults, null = off):
latency_ms; reset_after_requests=N (answer N more, then close the next
connection without answering; once) with reset_after_processing (the write
happens first); reset_mid_response (True or next N: headers + half the body,
then RST); status + retry_after + status_count, status_after_processing;
captive_portal; redirect (URL or True); reject_token; truncated_json (True or
next N); clock_offset_s (the server's clock: Date header and the times it writes, unless
frozen); fail_function {function: errorcode or
{errorcode, message, exception, when}} (``when``: {key: value}, only the calls whose
parameters hold a record with these values fail, e.g. the update_grades call grading
{"studentid": 4}); request_cost_ms / call_cost_ms (flat cost
model, REALISTIC_* = 32 / 8 ms) and calibrated_costs (true: the calibrated
one, added to the flat one); debug; chunked_over=N (answers over N bytes
go chunked, without Content-Length, as Apache sent recordings 102-103; null:
never); hostile_grade {cmid, userid, value} and hostile_user {userid, fields}
(or lists of them): a hostile box's bad values for one learner (hostile.py;
NaN/Infinity as bare JSON words).

Control endpoints (no token):
  GET  /__sim/state[?only=completions,grades&userid=3&courseid=2]   (also assign_grades,
                               course_completions, badges)
  GET  /__sim/stats            requests, connections, calls per function, errors,
                               bytes in/out, batches and batch sizes, faults fired,
                               cost_ms (simulated cost slept, by function) and total_cost_ms
  GET  /__sim/faults           POST /__sim/faults {"status": 503, ...} or {"clear": true}
  POST /__sim/reset            {} or {"seed": false}
  POST /__sim/stats/reset
  POST /__sim/clock            {"now": 1795334554} or {"now": null}
  POST /__sim/edit             {"op": "edit_activity", "cmid": 1, "name": "x", "content": "..."}
                               {"op": "add_activity", "courseid": 2, "modname": "page|url|assign",
                                "name": "x", "completion": 0|1|2, "section": 1}
                               {"op": "delete_activity", "cmid": 1}
                               {"op": "edit_course_settings", "courseid": 2, "summary": "x", ...}
                               {"op": "delete_course", "courseid": 4}
                               {"op": "add_course", "shortname": "C4", "fullname": "..."}
                               {"op": "add_participants", "courseid": 2, "count": 30000,
                                "prefix": "participant"}
                               {"op": "add_user", "username": "boxonly", "firstname": "Box",
                                "lastname": "Only", "email": "...", "idnumber": "", "auth": "manual",
                                "suspended": false, "password": "..."}  -> {"userid", "username"}
                               {"op": "set_password", "username": "x", "password": "..."|null}
                               {"op": "define_role", "xml": "<?xml ...><role>...</role>"}
                               {"op": "assign_role", "role": "shortname", "username": "x",
                                "contextlevel": "system"|"coursecat", "instanceid": 1}
                               {"op": "remove_capability", "capability": "...", "role": null}
                               {"op": "add_service", "shortname": "edge_sync", "functions": null,
                                "enabled": true}
                               {"op": "enrol_user", "username": "boxonly" (or "userid": 28),
                                "courseid": 12, "roleid": 5, "suspended": false}
                               {"op": "set_completion_criteria", "courseid": 12,
                                "cmids": "all" | [101, 103] | null}
                               {"op": "set_course_badge", "courseid": 12, "present": true}
  POST /__sim/tokens           {"username": "student1"}  -> {"token": "..."}
  POST /__sim/access           {"username": "student1" (or "userid": 23), "courseid": 12}
                               -> {"userid", "courseid", "lastcourseaccess"}
  POST /__sim/forget           {"userid": 3, "courseid": 2, "cmid": 1, "completions": true,
                                "grades": true, "users": [8], "reuse_ids": false}

Command line: ``scripts/moodle-simulator --host H --port P --token T``
[--box] [--calibrated-costs] [--participants COURSEID=N] ... (or ``python -m
moodle_simulator`` with scripts/ on the path).

Modules, in the order they build on each other: php (PHP's printing),
config (the site's settings), errors, params (form decoding, clean_param,
validate_parameters), xml_output, participants (big courses as a rule),
state (records, indexes, clock), access (the acting
user: capabilities, entering a course), badges, seed (the recorded test data
and the box's layout of it), one module per Moodle component (course, user,
enrol, coursecompletion, completion, grades, assign, tool_mobile; webservice
holds core_webservice and the REST logic), changes (the Moodle class: what
people do in Moodle's pages), hostile, faults and stats, server (HTTP), cli.
"""

from .changes import Moodle
from .cli import main
from .config import WS_PATH
from .errors import MoodleException
from .faults import REALISTIC_CALL_COST_MS, REALISTIC_REQUEST_COST_MS, Faults
from .server import SimServer, start_simulator
from .stats import Stats

__all__ = [
    "Moodle", "MoodleException", "Faults", "Stats", "SimServer", "start_simulator", "main",
    "REALISTIC_REQUEST_COST_MS", "REALISTIC_CALL_COST_MS", "WS_PATH",
]
