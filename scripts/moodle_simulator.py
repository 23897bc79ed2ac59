"""Moodle 4.5 Web Services (REST) simulator for moodle-sync-agent.

Standard library only, so it runs anywhere Python 3.11 does.  It answers
``/webservice/rest/server.php`` the way the recorded Moodle 4.5.6 does (see
``shared/moodle-recordings``): same status codes, headers, JSON bytes (PHP
``json_encode`` style, ``\\/`` escaped), exception classes, error codes and
messages, XML by default, and the recorded test data (courses C1-C3, students
3-7, the edge_sync service plus core_user_update_users).

Python API (for tests)::

    with start_simulator(token="TOKEN") as sim:      # port 0: a free port
        sim.url                                      # http://127.0.0.1:<port>
        sim.state.set_clock(1795334554)              # freeze the site clock (None: real time)
        sim.state.edit_activity(1, name="Renamed")   # add_activity, delete_activity,
                                                     # edit_course_settings, delete_course, add_course
        sim.state.forget(userid=3, courseid=2)       # drop completions/grades (restored backup)
        sim.state.get_completion(3, 1); sim.state.get_grade(4, 3); sim.state.dump()
        sim.faults.set(status=503, retry_after=5, status_count=2)
        sim.stats.snapshot()
        sim.reset()                                  # seed data, default faults, zero stats

Options of start_simulator/SimServer: request_cost_ms, call_cost_ms, seed,
without_functions, wwwroot (site URL to report), tls_cert/tls_key, debug
(DEVELOPER debug level: debuginfo in errors), max_input_vars (5000),
post_max_size (8 MiB), keepalive_timeout (5 s), max_keepalive_requests (100).

Fault switches (``sim.faults.set(...)`` or POST /__sim/faults, null = off):
latency_ms; reset_after_requests=N (answer N more, then close the next
connection without answering; once) with reset_after_processing (the write
happens first); reset_mid_response (True or next N: headers + half the body,
then RST); status + retry_after + status_count, status_after_processing;
captive_portal; redirect (URL or True); reject_token; truncated_json (True or
next N); clock_offset_s (the server's clock: Date header and the times it writes, unless
frozen); fail_function {function: errorcode or
{errorcode, message, exception}}; request_cost_ms / call_cost_ms (cost model,
REALISTIC_* = 32 / 8 ms); debug.

Control endpoints (no token):
  GET  /__sim/state[?only=completions,grades&userid=3&courseid=2]
  GET  /__sim/stats            requests, connections, calls per function, errors,
                               bytes in/out, batches and batch sizes, faults fired
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
  POST /__sim/forget           {"userid": 3, "courseid": 2, "cmid": 1, "completions": true,
                                "grades": true, "users": [8], "reuse_ids": false}

Command line: ``scripts/moodle-simulator --host H --port P --token T``.
"""

from __future__ import annotations

import argparse
import copy
import email.utils
import json
import math
import re
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "Moodle", "MoodleException", "Faults", "Stats", "SimServer",
    "start_simulator", "main", "php_json_encode", "parse_php_form",
    "REALISTIC_REQUEST_COST_MS", "REALISTIC_CALL_COST_MS", "WS_PATH",
]

WS_PATH = "/webservice/rest/server.php"
CONTROL_PREFIX = "/__sim/"

#: Cost model measured on a real Moodle 4.5: one completion override alone
#: takes about 40 ms, each entry of a 50-200 entry batch about 8 ms.
REALISTIC_REQUEST_COST_MS = 32
REALISTIC_CALL_COST_MS = 8

RELEASE = "4.5.6 (Build: 20250811)"
VERSION = "2024100706"
THEMEREV = 1795334364
SITENAME = "Moodle Reference Server"
ADMIN_ID = 2
GUEST_ID = 1
DOCS = "https://docs.moodle.org/405/en/"
PRIVATE_ACCESS_KEY = "adfc3a6eee923cee9a4762c81ab6b4e8"

# The recorded external service "edge_sync" (recording 01), in order, with
# the component version Moodle reports.  core_user_update_users is not in the
# recorded service but exists in Moodle 4.5; the simulator's default service
# adds it at the end (remove it with without_functions=[...]).
SERVICE_FUNCTIONS = [
    ("core_webservice_get_site_info", VERSION),
    ("core_course_get_courses_by_field", VERSION),
    ("core_course_get_contents", VERSION),
    ("core_user_get_users_by_field", VERSION),
    ("core_user_create_users", VERSION),
    ("enrol_manual_enrol_users", "2024100700"),
    ("core_enrol_get_enrolled_users", VERSION),
    ("core_completion_get_activities_completion_status", VERSION),
    ("core_completion_override_activity_completion_status", VERSION),
    ("core_completion_update_activity_completion_status_manually", VERSION),
    ("core_grades_update_grades", VERSION),
    ("core_grades_get_gradeitems", VERSION),
    ("gradereport_user_get_grade_items", "2024100700"),
    ("tool_mobile_call_external_functions", "2024100700"),
    ("core_user_update_users", VERSION),
]

# Functions that exist in Moodle 4.5 but are not implemented here (so never in
# the service): calling them gives accessexception, not invalidrecord.
OTHER_MOODLE_FUNCTIONS = frozenset("""
core_course_create_courses core_course_update_courses core_course_delete_courses
core_course_get_courses core_course_get_categories core_course_search_courses
core_course_get_course_module core_course_get_course_module_by_instance
core_course_view_course core_course_get_recent_courses core_course_duplicate_course
core_course_delete_modules core_course_edit_module core_course_get_updates_since
core_course_check_updates core_user_delete_users core_user_get_users
core_user_get_course_user_profiles core_user_update_user_preferences
core_user_get_user_preferences core_user_add_user_private_files
core_enrol_get_users_courses core_enrol_get_course_enrolment_methods
core_enrol_search_users core_enrol_get_enrolled_users_with_capability
enrol_manual_unenrol_users enrol_self_enrol_user
core_completion_get_course_completion_status core_completion_mark_course_self_completed
core_grades_get_gradable_users core_grades_get_enrolled_users_for_selector
core_grades_create_gradecategories core_grades_get_grade_tree
gradereport_user_get_grades_table gradereport_user_view_grade_report
gradereport_overview_get_course_grades gradereport_grader_get_users_in_report
core_group_get_course_groups core_group_create_groups core_group_add_group_members
core_role_assign_roles core_role_unassign_roles core_cohort_get_cohorts
core_calendar_get_calendar_events core_message_send_instant_messages
core_notes_create_notes core_files_get_files core_files_upload
mod_assign_get_assignments mod_assign_save_grade mod_assign_save_grades
mod_assign_get_grades mod_assign_get_submissions mod_page_get_pages_by_courses
mod_url_get_urls_by_courses mod_quiz_get_quizzes_by_courses
tool_mobile_get_config tool_mobile_get_public_config tool_mobile_get_plugins_supporting_mobile
core_webservice_get_site_info core_block_get_course_blocks
""".split())

FILTERS = [
    {"filter": "displayh5p", "localstate": 0, "inheritedstate": 1},
    {"filter": "activitynames", "localstate": 0, "inheritedstate": 1},
    {"filter": "mathjaxloader", "localstate": 0, "inheritedstate": 1},
    {"filter": "emoticon", "localstate": 0, "inheritedstate": 1},
    {"filter": "urltolink", "localstate": 0, "inheritedstate": 1},
    {"filter": "mediaplugin", "localstate": 0, "inheritedstate": 1},
]
COURSE_FORMAT_OPTIONS = [
    {"name": "hiddensections", "value": 1},
    {"name": "coursedisplay", "value": 0},
    {"name": "indentation", "value": "1"},
]
ADVANCED_FEATURES = [
    ("usecomments", 1), ("usetags", 1), ("enablenotes", 1), ("messaging", 1),
    ("enableblogs", 1), ("enablecompletion", 1), ("enablebadges", 1),
    ("messagingallusers", 0), ("enablecustomreports", 1), ("enableglobalsearch", 0),
    ("mnet_dispatcher_mode", 0), ("enablecompetencies", 1),
]

MODULES = {
    # modname: (purpose, plural, customdata, has contents)
    "page": ("content", "Pages", '""', True),
    "url": ("content", "URLs", '{"display":4,"filtericon":true}', True),
    "assign": ("assessment", "Assignments",
               '{"customcompletionrules":{"completionsubmit":"0"}}', False),
}
GRADED_MODULES = {"assign"}

ROLES = {1: "manager", 2: "coursecreator", 3: "editingteacher", 4: "teacher",
         5: "student", 6: "guest", 7: "user", 8: "frontpage"}
# Roles the token user may assign in a course (enrol_manual_enrol_users).
ASSIGNABLE_ROLES = (3, 4, 5)
STUDENT_ROLE = 5
CONTACT_ROLE = 3        # $CFG->coursecontact default: editingteacher

AUTH_PLUGINS = {"manual", "nologin", "email", "cas", "db", "ldap", "lti", "oauth2", "shibboleth"}
LANGS = {"en"}
THEMES = {"boost", "classic"}

COMPLETION_INCOMPLETE, COMPLETION_COMPLETE = 0, 1
TRACKING_NONE, TRACKING_MANUAL, TRACKING_AUTOMATIC = 0, 1, 2

_ERROR_DOC_MODULE = {"error": "moodle"}


# ---------------------------------------------------------------------------
# PHP-compatible encoding helpers
# ---------------------------------------------------------------------------

def php_json_encode(value) -> str:
    """json_encode() as PHP does it: compact, ASCII only, '/' escaped."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/")


def phpnum(x):
    """A float as PHP's json_encode prints it (100.0 -> 100, 87.5 -> 87.5)."""
    if isinstance(x, float) and math.isfinite(x) and x.is_integer() and abs(x) < 1e15:
        return int(x)
    return x


def php_str(value) -> str:
    """(string)$value in PHP."""
    if value is True:
        return "1"
    if value is False or value is None:
        return ""
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        r = repr(value)
        if "e" in r:
            mant, exp = r.split("e")
            if "." not in mant:
                mant += ".0"
            sign = "-" if exp.startswith("-") else "+"
            r = f"{mant}E{sign}{exp.lstrip('+-')}"
        return r
    return str(value)


def htmlspecialchars(s: str) -> str:
    return (s.replace("&", "&amp;").replace('"', "&quot;")
            .replace("<", "&lt;").replace(">", "&gt;"))


def format_float(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


def var_export_list(params) -> str:
    lines = []
    for i, p in enumerate(params):
        if isinstance(p, str):
            v = "'" + p.replace("\\", "\\\\").replace("'", "\\'") + "'"
        elif p is None:
            v = "NULL"
        elif isinstance(p, bool):
            v = "true" if p else "false"
        else:
            v = php_str(p)
        lines.append(f"  {i} => {v},\n")
    return "array (\n" + "".join(lines) + ")"


# ---------------------------------------------------------------------------
# PHP-style form decoding: values[0]=a, users[0][username]=x, a[]=1
# ---------------------------------------------------------------------------

def _php_key_parts(name: str):
    """Split 'a[b][]' into ('a', ['b', None]) following PHP's rules."""
    name = name.lstrip(" ")
    i = name.find("[")
    if i <= 0:
        if i == 0:
            return None, []
        base = name
        rest = ""
    else:
        base, rest = name[:i], name[i:]
    parts = []
    while rest.startswith("["):
        j = rest.find("]")
        if j < 0:
            # Unbalanced '[': PHP turns it into '_' and keeps the rest literal.
            if not parts:
                base = base + "_" + rest[1:]
            break
        seg = rest[1:j]
        parts.append(seg if seg != "" else None)
        rest = rest[j + 1:]
    base = base.replace(".", "_").replace(" ", "_")
    if "[" in base:
        base = base.replace("[", "_", 1)
    return base, parts


def _next_index(d: dict) -> str:
    idx = -1
    for k in d:
        if re.fullmatch(r"-?(0|[1-9][0-9]*)", k):
            idx = max(idx, int(k))
    return str(idx + 1)


def parse_php_form(pairs, max_input_vars=None) -> dict:
    """Decode (name, value) pairs into nested dicts the way PHP fills $_POST.

    PHP arrays become dicts with string keys (insertion ordered), so both
    ``values[0]=a`` and ``values[]=a`` give ``{"values": {"0": "a"}}``.
    """
    result: dict = {}
    count = 0
    for name, value in pairs:
        count += 1
        if max_input_vars is not None and count > max_input_vars:
            break
        base, parts = _php_key_parts(name)
        if not base:
            continue
        if not parts:
            result[base] = value
            continue
        node = result.get(base)
        if not isinstance(node, dict):
            node = {}
            result[base] = node
        for pos, seg in enumerate(parts):
            key = _next_index(node) if seg is None else seg
            if pos == len(parts) - 1:
                node[key] = value
            else:
                child = node.get(key)
                if not isinstance(child, dict):
                    child = {}
                    node[key] = child
                node = child
    return result


# ---------------------------------------------------------------------------
# Exceptions, the way Moodle reports them
# ---------------------------------------------------------------------------

class MoodleException(Exception):
    def __init__(self, exception, errorcode, message, debuginfo=None, module="error", link=None):
        super().__init__(message)
        self.exception = exception
        self.errorcode = errorcode
        self.message = message
        self.debuginfo = debuginfo
        self.module = module
        self.link = link

    def rest_object(self, debug=False):
        obj = {"exception": self.exception, "errorcode": self.errorcode, "message": self.message}
        if debug and self.debuginfo is not None and self.errorcode != "invalidtoken":
            obj["debuginfo"] = self.debuginfo
        return obj

    def batch_object(self, wwwroot, debug=False):
        """get_exception_info() as tool_mobile_call_external_functions returns it."""
        obj = {"message": self.message, "errorcode": self.errorcode}
        if debug:
            obj["backtrace"] = ("* line ? of unknownfile: simulated by moodle-simulator\n"
                                "* line 253 of /lib/external/classes/external_api.php: "
                                "call to call_user_func_array()\n")
        obj["link"] = self.link or (wwwroot + "/")
        mod = _ERROR_DOC_MODULE.get(self.module, self.module)
        obj["moreinfourl"] = f"{DOCS}error/{mod}/{self.errorcode}"
        if debug:
            info = self.debuginfo if self.debuginfo is not None else ""
            obj["debuginfo"] = (info + "\n" if info else "") + f"Error code: {self.errorcode}"
        return obj

    def __repr__(self):
        return f"MoodleException({self.errorcode!r}, {self.message!r})"


def invalid_parameter(debuginfo=None):
    return MoodleException("core\\exception\\invalid_parameter_exception", "invalidparameter",
                           "Invalid parameter value detected", debuginfo, module="debug")


def missing_record(table, sql, params):
    if table == "course_modules":
        code, msg = "invalidcoursemodule", "Invalid course module ID"
    elif table == "user":
        code, msg = "invaliduser", "Invalid user"
    else:
        code, msg = "invalidrecord", f"Can't find data record in database table {table}."
    return MoodleException("dml_missing_record_exception", code, msg,
                           f"{sql}\n[{var_export_list(params)}]")


def moodle_exception(errorcode, message, debuginfo=None, module="error", link=None):
    return MoodleException("core\\exception\\moodle_exception", errorcode, message, debuginfo, module, link)


def coding_exception(hint, debuginfo=None):
    return MoodleException("core\\exception\\coding_exception", "codingerror",
                           "Coding error detected, it must be fixed by a programmer: " + hint,
                           debuginfo, module="debug")


def invalid_token():
    return moodle_exception("invalidtoken", "Invalid token - token not found", module="webservice")


def access_exception(fname):
    return MoodleException(
        "webservice_access_exception", "accessexception", "Access control exception",
        f"Access to the function {fname}() is not allowed. There could be multiple reasons for this: "
        "1. The service linked to the user token does not contain the function. "
        "2. The service is user-restricted and the user is not listed. "
        "3. The service is IP-restricted and the user IP is not listed. "
        "4. The service is time-restricted and the time has expired. "
        "5. The token is time-restricted and the time has expired. "
        "6. The service requires a specific capability which the user does not have. "
        "7. The function is called with username/password (no user token is sent) and "
        "none of the services has the function to allow the user. "
        "These settings can be found in Administration > Site administration > Server > "
        "Web services > External services and Manage tokens.",
        module="webservice")


# Used by the fail_function fault switch.
KNOWN_ERRORS = {
    "invalidtoken": ("core\\exception\\moodle_exception", "Invalid token - token not found", "webservice"),
    "accessexception": ("webservice_access_exception", "Access control exception", "webservice"),
    "invalidparameter": ("core\\exception\\invalid_parameter_exception",
                         "Invalid parameter value detected", "debug"),
    "invalidrecord": ("dml_missing_record_exception",
                      "Can't find data record in database table course.", "error"),
    "invalidcoursemodule": ("dml_missing_record_exception", "Invalid course module ID", "error"),
    "invaliduser": ("dml_missing_record_exception", "Invalid user", "error"),
    "err_system": ("core\\exception\\moodle_exception",
                   "An internal error occurred in the completion system. (System administrators "
                   "can enable debugging information to see more detail.)", "completion"),
    "dmlwriteexception": ("dml_write_exception", "Error writing to database", "error"),
    "dmlreadexception": ("dml_read_exception", "Error reading from database", "error"),
    "servicerequireslogin": ("core\\exception\\moodle_exception",
                             "Web service login required", "webservice"),
    "sitemaintenance": ("core\\exception\\moodle_exception",
                        "The site is undergoing maintenance and is currently not available", "admin"),
}


def simulated_error(spec) -> MoodleException:
    if isinstance(spec, dict):
        code = spec.get("errorcode", "generalexceptionmessage")
        cls, msg, module = KNOWN_ERRORS.get(code, ("core\\exception\\moodle_exception", None, "error"))
        return MoodleException(spec.get("exception", cls), code,
                               spec.get("message", msg or f"Simulated failure ({code})"),
                               spec.get("debuginfo"), spec.get("module", module))
    code = str(spec)
    cls, msg, module = KNOWN_ERRORS.get(code, ("core\\exception\\moodle_exception",
                                               f"Simulated failure ({code})", "error"))
    return MoodleException(cls, code, msg, None, module)


# ---------------------------------------------------------------------------
# Parameter descriptions and validation (external_api::validate_parameters)
# ---------------------------------------------------------------------------

REQUIRED, OPTIONAL, DEFAULT = 1, 2, 0
_MISSING = object()


class Value:
    def __init__(self, ptype, required=REQUIRED, default=None):
        self.type, self.required, self.default = ptype, required, default


class Single:
    def __init__(self, keys, required=REQUIRED, default=None):
        self.keys, self.required, self.default = keys, required, default


class Multiple:
    def __init__(self, content, required=REQUIRED, default=None):
        self.content, self.required, self.default = content, required, default


_INT_PREFIX = re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_FLOAT_FORM = re.compile(r"^[+-]?[0-9]*\.?[0-9]*(e[-+]?[0-9]+)?$", re.I)
_EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
_TAG = re.compile(r"<[^>]*>?")


def php_intval(v):
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if math.isfinite(v) else 0
    m = _INT_PREFIX.match(str(v))
    if not m:
        return 0
    try:
        return int(float(m.group(0))) if (m.group(2) or m.group(3)) else int(m.group(0))
    except (ValueError, OverflowError):
        return 0


def php_is_numeric(v) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return True
    s = str(v).strip(" \t\n\r\v\f")
    return bool(re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", s))


def validate_email(address) -> bool:
    return bool(address) and bool(_EMAIL.match(address)) and not re.search(r"[<>]", address)


def clean_param(value, ptype):
    """clean_param() for the types the simulated functions use."""
    if ptype == "int":
        return php_intval(value)
    if ptype == "float":
        try:
            return float(value)
        except (TypeError, ValueError):
            return 0.0
    s = php_str(value)
    if ptype == "raw":
        return s
    if ptype in ("text", "notags"):
        return _TAG.sub("", s)
    if ptype == "alpha":
        return re.sub(r"[^a-zA-Z]", "", s)
    if ptype == "alphanum":
        return re.sub(r"[^A-Za-z0-9]", "", s)
    if ptype == "alphanumext":
        return re.sub(r"[^A-Za-z0-9_-]", "", s)
    if ptype == "safedir":
        return re.sub(r"[^a-zA-Z0-9_-]", "", s)
    if ptype == "username":
        s = s.strip().lower().replace(" ", "")
        return re.sub(r"[^-.@_a-z0-9]", "", s)
    if ptype == "email":
        return s if validate_email(s) else ""
    if ptype == "plugin":
        return s if re.fullmatch(r"[a-z][a-z0-9_]*[a-z0-9]", s) and "__" not in s else ""
    if ptype == "component":
        ok = re.fullmatch(r"[a-z][a-z0-9]*(_[a-z][a-z0-9_]*)?[a-z0-9]+", s) and "__" not in s
        return s if ok else ""
    if ptype == "lang":
        return s if s in LANGS or s == "" else ""
    if ptype == "timezone":
        ok = re.fullmatch(r"([+-]?(0?[0-9](\.[50])?|1[0-3](\.0)?|1[0-2]\.5))|99|[A-Za-z0-9]+(/?[A-Za-z_-])+", s)
        return s if ok else ""
    return s


_CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]{0,17})")


def validate_value(desc: Value, value):
    t = type(value)
    if t is str:        # fast paths for the common cases (form fields, JSON strings)
        if desc.type == "raw":
            return value
        if desc.type == "int" and _CANONICAL_INT.fullmatch(value) and value != "-0":
            return int(value)
    elif t is int and desc.type == "int":
        return value
    if isinstance(value, (dict, list)):
        raise invalid_parameter("Scalar type expected, array or object received.")
    if desc.type == "bool":
        if isinstance(value, bool) or value in (0, 1) or value in ("0", "1"):
            return bool(int(value)) if not isinstance(value, bool) else value
    debuginfo = (f'Invalid external api parameter: the value is "{php_str(value)}", '
                 f'the server was expecting "{desc.type}" type')
    if value is None:
        return None            # NULL_ALLOWED is the default for external_value
    if desc.type == "bool":
        raise invalid_parameter(debuginfo)
    cleaned = clean_param(value, desc.type)
    if desc.type == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if not php_is_numeric(value) or not _FLOAT_FORM.match(php_str(value)):
            raise invalid_parameter(debuginfo)
        return cleaned
    if php_str(value) != php_str(cleaned):
        raise invalid_parameter(debuginfo)
    return cleaned


def _as_php_array(value):
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return value


def validate_parameters(desc, params):
    if isinstance(desc, Value):
        return validate_value(desc, params)
    if isinstance(desc, Single):
        params = _as_php_array(params)
        if not isinstance(params, dict):
            raise invalid_parameter(f"Only arrays accepted. The bad value is: '{php_str(params)}'")
        params = dict(params)
        result = {}
        for key, sub in desc.keys.items():
            if key not in params:
                if sub.required == REQUIRED:
                    raise invalid_parameter(f"Missing required key in single structure: {key}")
                if sub.required == DEFAULT:
                    try:
                        result[key] = validate_parameters(sub, copy.deepcopy(sub.default))
                    except MoodleException as e:
                        raise invalid_parameter(f"{key} => {e.message}: {e.debuginfo}")
            else:
                try:
                    result[key] = validate_parameters(sub, params[key])
                except MoodleException as e:
                    raise invalid_parameter(f"{key} => {e.message}: {e.debuginfo}")
            params.pop(key, None)
        if params:
            raise invalid_parameter(f"Unexpected keys ({', '.join(params)}) detected in parameter array.")
        return result
    if isinstance(desc, Multiple):
        params = _as_php_array(params)
        if not isinstance(params, dict):
            raise invalid_parameter(f"Only arrays accepted. The bad value is: '{php_str(params)}'")
        return [validate_parameters(desc.content, v) for v in params.values()]
    raise TypeError(desc)


def _opt(t):
    return Value(t, OPTIONAL)


USER_CUSTOM = Multiple(Single({"type": Value("alphanumext"), "value": Value("raw")}), OPTIONAL)
USER_PREFS = Multiple(Single({"type": Value("raw"), "value": Value("raw")}), OPTIONAL)

PARAMS = {
    "core_webservice_get_site_info": {
        "serviceshortnames": Multiple(Value("alphanumext"), DEFAULT, []),
    },
    "core_course_get_courses_by_field": {
        "field": Value("alpha", DEFAULT, ""),
        "value": Value("raw", DEFAULT, ""),
    },
    "core_course_get_contents": {
        "courseid": Value("int"),
        "options": Multiple(Single({"name": Value("alphanum"), "value": Value("raw")}), DEFAULT, []),
    },
    "core_user_get_users_by_field": {
        "field": Value("alpha"),
        "values": Multiple(Value("raw")),
    },
    "core_user_create_users": {
        "users": Multiple(Single({
            "createpassword": _opt("bool"),
            "username": Value("username"),
            "auth": Value("plugin", DEFAULT, "manual"),
            "password": _opt("raw"),
            "firstname": Value("notags"),
            "lastname": Value("notags"),
            "email": Value("email"),
            "maildisplay": _opt("int"),
            "city": _opt("notags"),
            "country": _opt("alpha"),
            "timezone": _opt("timezone"),
            "description": _opt("raw"),
            "firstnamephonetic": _opt("notags"),
            "lastnamephonetic": _opt("notags"),
            "middlename": _opt("notags"),
            "alternatename": _opt("notags"),
            "interests": _opt("text"),
            "idnumber": Value("raw", DEFAULT, ""),
            "institution": _opt("text"),
            "department": _opt("text"),
            "phone1": _opt("notags"),
            "phone2": _opt("notags"),
            "address": _opt("text"),
            "lang": Value("safedir", DEFAULT, "en"),
            "calendartype": Value("plugin", DEFAULT, "gregorian"),
            "theme": _opt("plugin"),
            "mailformat": _opt("int"),
            "customfields": USER_CUSTOM,
            "preferences": USER_PREFS,
        })),
    },
    "core_user_update_users": {
        "users": Multiple(Single({
            "id": Value("int"),
            "username": _opt("username"),
            "auth": _opt("plugin"),
            "suspended": _opt("bool"),
            "password": _opt("raw"),
            "firstname": _opt("notags"),
            "lastname": _opt("notags"),
            "email": _opt("email"),
            "maildisplay": _opt("int"),
            "city": _opt("notags"),
            "country": _opt("alpha"),
            "timezone": _opt("timezone"),
            "description": _opt("raw"),
            "userpicture": _opt("int"),
            "firstnamephonetic": _opt("notags"),
            "lastnamephonetic": _opt("notags"),
            "middlename": _opt("notags"),
            "alternatename": _opt("notags"),
            "interests": _opt("text"),
            "idnumber": _opt("raw"),
            "institution": _opt("text"),
            "department": _opt("text"),
            "phone1": _opt("notags"),
            "phone2": _opt("notags"),
            "address": _opt("text"),
            "lang": _opt("safedir"),
            "calendartype": _opt("plugin"),
            "theme": _opt("plugin"),
            "mailformat": _opt("int"),
            "customfields": USER_CUSTOM,
            "preferences": USER_PREFS,
        })),
    },
    "enrol_manual_enrol_users": {
        "enrolments": Multiple(Single({
            "roleid": Value("int"),
            "userid": Value("int"),
            "courseid": Value("int"),
            "timestart": _opt("int"),
            "timeend": _opt("int"),
            "suspend": _opt("int"),
        })),
    },
    "core_enrol_get_enrolled_users": {
        "courseid": Value("int"),
        "options": Multiple(Single({"name": Value("alphanumext"), "value": Value("raw")}), DEFAULT, []),
    },
    "core_completion_get_activities_completion_status": {
        "courseid": Value("int"),
        "userid": Value("int"),
    },
    "core_completion_override_activity_completion_status": {
        "userid": Value("int"),
        "cmid": Value("int"),
        "newstate": Value("int"),
    },
    "core_completion_update_activity_completion_status_manually": {
        "cmid": Value("int"),
        "completed": Value("bool"),
    },
    "core_grades_update_grades": {
        "source": Value("text"),
        "courseid": Value("int"),
        "component": Value("component"),
        "activityid": Value("int"),
        "itemnumber": Value("int"),
        "grades": Multiple(Single({
            "studentid": Value("int"),
            "grade": Value("float"),
            "str_feedback": _opt("text"),
        }), DEFAULT, []),
        "itemdetails": Single({
            "itemname": _opt("alphanumext"),
            "idnumber": _opt("int"),
            "gradetype": _opt("int"),
            "grademax": _opt("float"),
            "grademin": _opt("float"),
            "scaleid": _opt("int"),
            "multfactor": _opt("float"),
            "plusfactor": _opt("float"),
            "deleted": _opt("bool"),
            "hidden": _opt("bool"),
        }, DEFAULT, []),
    },
    "core_grades_get_gradeitems": {
        "courseid": Value("int"),
    },
    "gradereport_user_get_grade_items": {
        "courseid": Value("int"),
        "userid": Value("int", DEFAULT, 0),
        "groupid": Value("int", DEFAULT, 0),
    },
    "tool_mobile_call_external_functions": {
        "requests": Multiple(Single({
            "function": Value("alphanumext"),
            "arguments": Value("raw", DEFAULT, "{}"),
            "settingraw": Value("bool", DEFAULT, False),
            "settingfilter": Value("bool", DEFAULT, False),
            "settingfileurl": Value("bool", DEFAULT, True),
            "settinglang": Value("lang", DEFAULT, ""),
        })),
    },
}
PARAM_DESCS = {name: Single(keys) for name, keys in PARAMS.items()}


def check_password_policy(password: str) -> bool:
    """Moodle's default password policy."""
    return (len(password) >= 8 and re.search(r"[0-9]", password) is not None
            and re.search(r"[a-z]", password) is not None
            and re.search(r"[A-Z]", password) is not None
            and re.search(r"[^a-zA-Z0-9]", password) is not None)


# ---------------------------------------------------------------------------
# XML output (webservice_rest_server::xmlize_result)
# ---------------------------------------------------------------------------

def xmlize(value) -> str:
    if isinstance(value, dict):
        return "<SINGLE>\n" + "".join(
            f'<KEY name="{k}">{xmlize(v)}</KEY>\n' for k, v in value.items()) + "</SINGLE>\n"
    if isinstance(value, list):
        return "<MULTIPLE>\n" + "".join(xmlize(v) for v in value) + "</MULTIPLE>\n"
    if value is None:
        return '<VALUE null="null"/>\n'
    if isinstance(value, bool):
        value = int(value)
    return "<VALUE>" + htmlspecialchars(php_str(value)) + "</VALUE>\n"


def xml_response(result, has_desc=True) -> str:
    body = xmlize(result) if (has_desc and result is not None) else ""
    return '<?xml version="1.0" encoding="UTF-8" ?>\n<RESPONSE>\n' + body + "</RESPONSE>\n"


def xml_error(ex: MoodleException, debug=False) -> str:
    out = '<?xml version="1.0" encoding="UTF-8" ?>\n'
    out += f'<EXCEPTION class="{ex.exception}">\n'
    out += f"<ERRORCODE>{htmlspecialchars(ex.errorcode)}</ERRORCODE>\n"
    out += f"<MESSAGE>{htmlspecialchars(ex.message)}</MESSAGE>\n"
    if debug and ex.debuginfo is not None and ex.errorcode != "invalidtoken":
        out += f"<DEBUGINFO>{htmlspecialchars(ex.debuginfo)}</DEBUGINFO>\n"
    return out + "</EXCEPTION>\n"


# ---------------------------------------------------------------------------
# Seed data (recordings 02-11, 16, 24, 25)
# ---------------------------------------------------------------------------

T_SITE_CREATED = 1795334312
T_COURSES = 1795334424


def _seed_courses():
    site = {
        "id": 1, "fullname": SITENAME, "shortname": "moodleref", "contextid": 2,
        "categoryid": 0, "categoryname": "", "sortorder": 1, "summary": "Loopback reference server",
        "showcompletionconditions": None, "idnumber": "", "format": "site", "newsitems": 3,
        "startdate": 0, "enddate": 0, "visible": 1, "enablecompletion": 0,
        "timecreated": T_SITE_CREATED, "timemodified": 1795334375, "cacherev": THEMEREV,
    }
    courses = [site]
    for cid, short, sortorder, ctx, cacherev in ((2, "C1", 10003, 11, 1795334435),
                                                  (3, "C2", 10002, 15, 1795334435),
                                                  (4, "C3", 10001, 19, 1795334432)):
        courses.append({
            "id": cid, "fullname": f"Reference course {short}", "shortname": short, "contextid": ctx,
            "categoryid": 1, "categoryname": "Category 1", "sortorder": sortorder,
            "summary": f"Course {short} for edge sync validation", "showcompletionconditions": True,
            "idnumber": f"REF-{short}", "format": "topics", "newsitems": 0, "startdate": 1795305600,
            "enddate": 0, "visible": 1, "enablecompletion": 1, "timecreated": T_COURSES,
            "timemodified": T_COURSES, "cacherev": cacherev,
        })
    return courses


# (cmid, courseid, section number, modname, instance, contextid, name, completion)
_SEED_CMS = [
    (1, 2, 1, "page", 1, 12, "C1 Page (manual completion)", TRACKING_MANUAL),
    (2, 2, 1, "url", 1, 13, "C1 URL (manual completion)", TRACKING_MANUAL),
    (3, 2, 2, "assign", 1, 14, "C1 Assignment (graded, completion on grade)", TRACKING_AUTOMATIC),
    (4, 3, 1, "page", 2, 16, "C2 Page (manual completion)", TRACKING_MANUAL),
    (5, 3, 1, "url", 2, 17, "C2 URL (manual completion)", TRACKING_MANUAL),
    (6, 3, 2, "assign", 2, 18, "C2 Assignment (graded, completion on grade)", TRACKING_AUTOMATIC),
    (7, 4, 1, "page", 3, 20, "C3 Page (manual completion)", TRACKING_MANUAL),
    (8, 4, 1, "url", 3, 21, "C3 URL (manual completion)", TRACKING_MANUAL),
]
# courseid -> list of (section id, section number)
_SEED_SECTIONS = {2: [(1, 0), (2, 1), (3, 2)], 3: [(4, 0), (5, 1), (6, 2)], 4: [(7, 0), (8, 1)]}


class _Obj(dict):
    """A dict with attribute access (internal records)."""
    __getattr__ = dict.__getitem__
    __setattr__ = dict.__setitem__


# ---------------------------------------------------------------------------
# The Moodle state
# ---------------------------------------------------------------------------

class Moodle:
    """In-memory Moodle site.  All public methods take ``self.lock``."""

    def __init__(self, seed=True, wwwroot="http://127.0.0.1", service_functions=None):
        self.lock = threading.RLock()
        self.wwwroot = wwwroot
        self._frozen_time = None
        self.clock_offset = lambda: 0     # seconds; SimServer links it to the clock_offset_s fault
        self.service = dict(service_functions if service_functions is not None else SERVICE_FUNCTIONS)
        self.reset(seed=seed)

    # -- clock -------------------------------------------------------------
    def now(self) -> int:
        if self._frozen_time is not None:
            return self._frozen_time
        return int(time.time() + (self.clock_offset() or 0))

    def set_clock(self, timestamp=None):
        """Freeze the site clock at ``timestamp`` (None: follow the real clock)."""
        with self.lock:
            self._frozen_time = None if timestamp is None else int(timestamp)

    # -- seed / reset --------------------------------------------------------
    def reset(self, seed=True):
        with self.lock:
            self.courses = {}
            self.sections = {}          # courseid -> list of section records (by number)
            self.cms = {}               # cmid -> cm record
            self.users = {}
            self.users_by_username = {}   # username -> id
            self.users_by_idnumber = {}   # idnumber -> set(ids)
            self.users_by_email = {}      # lower-case email -> set(ids)
            self.enrolments = {}        # courseid -> {userid: enrolment}
            self.user_courses = {}      # userid -> set(courseid)
            self.completions = {}       # (cmid, userid) -> {state, timemodified, overrideby}
            self.grade_items = {}       # itemid -> item
            self.grade_item_keys = {}   # (courseid, itemmodule, iteminstance, itemnumber) -> itemid
            self.course_items = {}      # courseid -> itemid of the course total
            self.grades = {}            # (itemid, userid) -> grade
            self.next_ids = {"user": 3, "course": 5, "cm": 9, "section": 9, "context": 22,
                             "gradeitem": 5, "gradecategory": 3,
                             "instance": {"page": 4, "url": 4, "assign": 3}}
            for c in _seed_courses()[:1 if not seed else None]:
                self.courses[c["id"]] = _Obj(c, enrol_manual=c["id"] != 1)
            self._add_user_record(GUEST_ID, "guest", "Guest user", " ", "root@localhost", "", hidden=True)
            self._add_user_record(ADMIN_ID, "admin", "Admin", "User", "admin@example.invalid", "")
            if not seed:
                self.next_ids.update({"course": 2, "cm": 1, "section": 1, "context": 3, "gradeitem": 1,
                                      "gradecategory": 1, "instance": {"page": 1, "url": 1, "assign": 1}})
                return
            for cid, secs in _SEED_SECTIONS.items():
                self.sections[cid] = [_Obj(id=sid, section=num, name="General" if num == 0 else "New section",
                                           sequence=[]) for sid, num in secs]
            for cmid, cid, secnum, modname, inst, ctx, name, completion in _SEED_CMS:
                cm = _Obj(id=cmid, course=cid, modname=modname, instance=inst, contextid=ctx, name=name,
                          completion=completion, completionview=False,
                          completionusegrade=(modname in GRADED_MODULES and completion == TRACKING_AUTOMATIC),
                          timemodified=T_COURSES, content=f"<p>{name}</p>", externalurl=None,
                          visible=1, section=secnum)
                self.cms[cmid] = cm
                self.sections[cid][secnum].sequence.append(cmid)
            for i in range(1, 6):
                uid = i + 2
                self._add_user_record(uid, f"student{i}", f"Student{i}", "Reference",
                                      f"student{i}@example.invalid", f"S00{i}")
                for cid in (2, 3):
                    self._enrol(cid, uid, STUDENT_ROLE)
            self.next_ids["user"] = 8
            # Grade book: C1 category 1, course item 1, assign item 2; C2 category 2, items 3, 4.
            for cid, catid, courseitem, cmid in ((2, 1, 1, 3), (3, 2, 3, 6)):
                self.grade_items[courseitem] = _Obj(id=courseitem, courseid=cid, itemtype="course",
                                                    itemmodule=None, iteminstance=catid, itemnumber=None,
                                                    categoryid=None, itemname=None, idnumber=None,
                                                    grademax=100.0, grademin=0.0, cmid=None)
                self.course_items[cid] = courseitem
                cm = self.cms[cmid]
                self._add_grade_item(courseitem + 1, cid, "assign", cm.instance, 0, catid, cm.name, cmid)

    # -- internal helpers -----------------------------------------------------
    def _add_user_record(self, uid, username, firstname, lastname, email, idnumber, hidden=False, **extra):
        u = _Obj(id=uid, username=username, firstname=firstname, lastname=lastname, email=email,
                 idnumber=idnumber, auth="manual", suspended=False, confirmed=True, lang="en", theme="",
                 timezone="99", mailformat=1, department="", hidden=hidden, password=None,
                 city="", country="", description="", institution="", calendartype="gregorian")
        u.update(extra)
        self.users[uid] = u
        self._index_user(u)
        return u

    def _index_user(self, u):
        self.users_by_username[u.username] = u.id
        self.users_by_idnumber.setdefault(php_str(u.idnumber), set()).add(u.id)
        self.users_by_email.setdefault(u.email.lower(), set()).add(u.id)

    def _unindex_user(self, u):
        if self.users_by_username.get(u.username) == u.id:
            del self.users_by_username[u.username]
        for index, key in ((self.users_by_idnumber, php_str(u.idnumber)), (self.users_by_email, u.email.lower())):
            ids = index.get(key)
            if ids is not None:
                ids.discard(u.id)
                if not ids:
                    del index[key]

    def _enrol(self, courseid, userid, roleid, timestart=0, timeend=0, status=0):
        enrol = self.enrolments.setdefault(courseid, {})
        e = enrol.get(userid)
        if e is None:
            e = _Obj(userid=userid, courseid=courseid, roles=[], status=status,
                     timestart=timestart, timeend=timeend, timecreated=self.now())
            enrol[userid] = e
            self.user_courses.setdefault(userid, set()).add(courseid)
        else:
            e.status, e.timestart, e.timeend = status, timestart, timeend
        if roleid not in e.roles:
            e.roles.append(roleid)
        return e

    def _add_grade_item(self, itemid, courseid, itemmodule, iteminstance, itemnumber, categoryid, itemname, cmid,
                        grademax=100.0):
        item = _Obj(id=itemid, courseid=courseid, itemtype="mod", itemmodule=itemmodule,
                    iteminstance=iteminstance, itemnumber=itemnumber, categoryid=categoryid,
                    itemname=itemname, idnumber="", grademax=float(grademax), grademin=0.0, cmid=cmid)
        self.grade_items[itemid] = item
        self.grade_item_keys[(courseid, itemmodule, iteminstance, itemnumber)] = itemid
        return item

    def _ensure_course_item(self, courseid):
        if courseid in self.course_items:
            itemid = self.course_items[courseid]
            return itemid, self.grade_items[itemid].iteminstance
        catid = self.next_ids["gradecategory"]
        self.next_ids["gradecategory"] += 1
        itemid = self._next("gradeitem")
        self.grade_items[itemid] = _Obj(id=itemid, courseid=courseid, itemtype="course", itemmodule=None,
                                        iteminstance=catid, itemnumber=None, categoryid=None, itemname=None,
                                        idnumber=None, grademax=100.0, grademin=0.0, cmid=None)
        self.course_items[courseid] = itemid
        return itemid, catid

    def _next(self, kind):
        v = self.next_ids[kind]
        self.next_ids[kind] = v + 1
        return v

    def _bump_cacherev(self, courseid, times=1):
        """increment_revision_number(): now if old < now, now if old > now + 1h, else old + 1."""
        c = self.courses[courseid]
        for _ in range(times):
            now = self.now()
            old = c.cacherev
            c.cacherev = now if (old is None or old < now or old > now + 3600) else old + 1

    @staticmethod
    def _record_or_fail(records, key, table, sql):
        """Moodle's get_record(..., MUST_EXIST), with the query its error quotes."""
        record = records.get(key)
        if record is None:
            raise missing_record(table, sql, [key])
        return record

    def _course_or_fail(self, courseid):
        return self._record_or_fail(self.courses, courseid, "course", "SELECT * FROM {course} WHERE id = ?")

    def _user_or_fail(self, userid):
        return self._record_or_fail(self.users, userid, "user", "SELECT * FROM {user} WHERE id = ?")

    def _cm_or_fail(self, cmid):
        return self._record_or_fail(self.cms, cmid, "course_modules",
                                    "SELECT id,course FROM {course_modules} WHERE id = ?")

    def _course_cms(self, courseid):
        for sec in self.sections.get(courseid, []):
            for cmid in sec.sequence:
                yield self.cms[cmid]

    def _is_active_enrolment(self, e, now=None):
        now = self.now() if now is None else now
        return (e.status == 0 and (not e.timestart or e.timestart <= now)
                and (not e.timeend or e.timeend > now))

    def _is_tracked(self, courseid, userid):
        e = self.enrolments.get(courseid, {}).get(userid)
        u = self.users.get(userid)
        return bool(e and u and not u.suspended and STUDENT_ROLE in e.roles and self._is_active_enrolment(e))

    def _pic(self, size):
        return f"{self.wwwroot}/theme/image.php/boost/core/{THEMEREV}/u/{size}"

    # -- completion model (completion_info::update_state) ------------------------
    def _has_grade(self, cm, userid):
        itemid = self.grade_item_keys.get((cm.course, cm.modname, cm.instance, 0))
        if itemid is None:
            return False
        g = self.grades.get((itemid, userid))
        return g is not None and g.finalgrade is not None

    def _internal_state(self, cm, userid):
        """Automatic completion state computed from the rules."""
        if cm.completionusegrade:
            return COMPLETION_COMPLETE if self._has_grade(cm, userid) else COMPLETION_INCOMPLETE
        return COMPLETION_INCOMPLETE   # completionview: views are not simulated

    def _update_state(self, cm, possible, userid, override=False, by=ADMIN_ID):
        if cm.completion == TRACKING_NONE or not self.courses[cm.course].enablecompletion:
            return
        cur = self.completions.get((cm.id, userid))
        curstate = cur["state"] if cur else COMPLETION_INCOMPLETE
        if possible == curstate or (possible == COMPLETION_COMPLETE and curstate in (2, 3)):
            return
        if (cm.completion == TRACKING_AUTOMATIC and cur and cur["overrideby"] is not None
                and curstate == COMPLETION_COMPLETE and not override):
            return
        if cm.completion == TRACKING_MANUAL or override:
            if possible not in (COMPLETION_COMPLETE, COMPLETION_INCOMPLETE):
                raise moodle_exception(
                    "err_system",
                    "An internal error occurred in the completion system. (System administrators can "
                    "enable debugging information to see more detail.)",
                    f"Unexpected manual completion state for {cm.id}: {possible}", module="completion",
                    link=f"{self.wwwroot}/course/view.php?id={cm.course}")
            newstate = possible
        else:
            newstate = self._internal_state(cm, userid)
        if newstate != curstate:
            self.completions[(cm.id, userid)] = {"state": newstate, "timemodified": self.now(),
                                                 "overrideby": by if override else None}

    def _completion_details(self, cm, userid):
        data = self.completions.get((cm.id, userid))
        state = data["state"] if data else 0
        overrideby = data["overrideby"] if data else None
        automatic = cm.completion == TRACKING_AUTOMATIC
        details = []
        if automatic:
            if cm.completionview:
                details.append({"rulename": "completionview",
                                "rulevalue": {"status": state if overrideby else 0, "description": "View"}})
            if cm.completionusegrade:
                status = state if overrideby else (1 if self._has_grade(cm, userid) else 0)
                details.append({"rulename": "completionusegrade",
                                "rulevalue": {"status": status, "description": "Receive a grade"}})
        complete = state in ((1, 2, 3) if automatic else (1,))
        return {
            "state": state,
            "timecompleted": data["timemodified"] if data else 0,
            "overrideby": overrideby,
            "valueused": False,
            "hascompletion": cm.completion != TRACKING_NONE,
            "isautomatic": automatic,
            "istrackeduser": self._is_tracked(cm.course, userid),
            "uservisible": True,
            "details": details,
            "isoverallcomplete": complete,
        }

    # =====================================================================
    # Web service functions.  Each takes validated params and the token user.
    # =====================================================================

    def ws_core_webservice_get_site_info(self, p, userid):
        u = self.users[userid]
        return {
            "sitename": SITENAME, "username": u.username, "firstname": u.firstname,
            "lastname": u.lastname, "fullname": f"{u.firstname} {u.lastname}", "lang": "en",
            "userid": userid, "siteurl": self.wwwroot, "userpictureurl": self._pic("f1"),
            "functions": [{"name": n, "version": v} for n, v in self.service.items()],
            "downloadfiles": 1, "uploadfiles": 1, "release": RELEASE, "version": VERSION,
            "mobilecssurl": "",
            "advancedfeatures": [{"name": n, "value": v} for n, v in ADVANCED_FEATURES],
            "usercanmanageownfiles": True, "userquota": 0, "usermaxuploadfilesize": -1,
            "userhomepage": 1, "userprivateaccesskey": PRIVATE_ACCESS_KEY, "siteid": 1,
            "sitecalendartype": "gregorian", "usercalendartype": "gregorian",
            "userissiteadmin": userid == ADMIN_ID, "theme": "boost", "limitconcurrentlogins": 0,
            "policyagreed": 0,
        }

    @staticmethod
    def xml_site_info(result):
        """The XML form lists the optional keys json_encode leaves out."""
        out = {}
        for k, v in result.items():
            out[k] = v
            if k == "userhomepage":
                out["userhomepageurl"] = None
            if k == "limitconcurrentlogins":
                out["usersessionscount"] = None
        return out

    # -- courses ---------------------------------------------------------------
    def _contacts(self, courseid):
        out = []
        for uid, e in sorted(self.enrolments.get(courseid, {}).items()):
            if CONTACT_ROLE in e.roles and self._is_active_enrolment(e):
                u = self.users[uid]
                out.append({"id": uid, "fullname": f"{u.firstname} {u.lastname}"})
        return out

    def _course_out(self, c):
        ww = self.wwwroot
        out = {
            "id": c.id, "fullname": c.fullname, "displayname": c.fullname, "shortname": c.shortname,
            "courseimage": f"{ww}/pluginfile.php/{c.contextid}/course/generated/course.svg",
            "categoryid": c.categoryid, "categoryname": c.categoryname, "sortorder": c.sortorder,
            "summary": c.summary, "summaryformat": 1, "summaryfiles": [], "overviewfiles": [],
            "showactivitydates": False, "showcompletionconditions": c.showcompletionconditions,
            "contacts": self._contacts(c.id), "enrollmentmethods": ["manual"] if c.enrol_manual else [],
            "idnumber": c.idnumber, "format": c.format, "showgrades": 1, "newsitems": c.newsitems,
            "startdate": c.startdate, "enddate": c.enddate, "maxbytes": 0, "showreports": 0,
            "visible": c.visible, "groupmode": 0, "groupmodeforce": 0, "defaultgroupingid": 0,
            "enablecompletion": c.enablecompletion, "completionnotify": 0, "lang": "", "theme": "",
            "marker": 0, "legacyfiles": 0, "calendartype": "", "timecreated": c.timecreated,
            "timemodified": c.timemodified, "requested": 0, "cacherev": c.cacherev,
            "filters": copy.deepcopy(FILTERS),
        }
        if c.format != "site":
            out["courseformatoptions"] = copy.deepcopy(COURSE_FORMAT_OPTIONS)
        return out

    def ws_core_course_get_courses_by_field(self, p, userid):
        field, value = p["field"], p["value"]
        warnings = []
        if field == "":
            courses = [self.courses[k] for k in sorted(self.courses)]
        elif field in ("id", "category", "sectionid"):
            v = php_intval(value)           # clean_param(PARAM_INT) is (int)$value: "2abc" -> 2
            if field == "id":
                courses = [self.courses[v]] if v in self.courses else []
            elif field == "category":
                courses = [self.courses[k] for k in sorted(self.courses) if self.courses[k].categoryid == v]
            else:
                courses = [self.courses[cid] for cid in sorted(self.sections)
                           if any(s.id == v for s in self.sections[cid]) and cid in self.courses]
        elif field == "ids":
            seq = re.sub(r"[^0-9,]", "", value)
            ids = []
            for part in seq.split(","):
                if part != "" and int(part) not in ids:
                    ids.append(int(part))
            courses = []
            for cid in ids:
                if cid in self.courses:
                    courses.append(self.courses[cid])
                else:
                    warnings.append({"item": "course", "itemid": cid, "warningcode": "unknowncourseidnumber",
                                     "message": f"Unknown course ID {cid}"})
        elif field == "shortname":
            v = _TAG.sub("", value)
            courses = [self.courses[k] for k in sorted(self.courses) if self.courses[k].shortname == v]
        elif field == "idnumber":
            courses = [self.courses[k] for k in sorted(self.courses) if self.courses[k].idnumber == value]
        else:
            raise invalid_parameter("Invalid field name")
        return {"courses": [self._course_out(c) for c in courses], "warnings": warnings}

    def _module_out(self, cm, userid):
        ww = self.wwwroot
        purpose, plural, customdata, has_contents = MODULES[cm.modname]
        m = {
            "id": cm.id, "url": f"{ww}/mod/{cm.modname}/view.php?id={cm.id}", "name": cm.name,
            "instance": cm.instance, "contextid": cm.contextid, "visible": cm.visible, "uservisible": True,
            "visibleoncoursepage": 1,
            "modicon": f"{ww}/theme/image.php/boost/{cm.modname}/{THEMEREV}/monologo?filtericon=1",
            "modname": cm.modname, "purpose": purpose, "branded": False, "modplural": plural,
            "availability": None, "indent": 0, "onclick": "", "afterlink": None, "customdata": customdata,
            "noviewlink": False, "completion": cm.completion,
        }
        if cm.completion != TRACKING_NONE and self.courses[cm.course].enablecompletion:
            m["completiondata"] = self._completion_details(cm, userid)
        m.update({"downloadcontent": 1, "dates": [], "groupmode": 0})
        if has_contents:
            if cm.modname == "page":
                content = {"type": "file", "filename": "index.html", "filepath": "/", "filesize": 0,
                           "fileurl": f"{ww}/webservice/pluginfile.php/{cm.contextid}/mod_page/content/"
                                      "index.html?forcedownload=1",
                           "timecreated": None, "timemodified": cm.timemodified, "sortorder": 1,
                           "userid": None, "author": None, "license": None}
            else:
                content = {"type": "url", "filename": cm.name, "filepath": None, "filesize": 0,
                           "fileurl": cm.externalurl or f"{ww}/", "timecreated": None,
                           "timemodified": cm.timemodified, "sortorder": None, "userid": None,
                           "author": None, "license": None}
            m["contents"] = [content]
            m["contentsinfo"] = {"filescount": 1, "filessize": 0, "lastmodified": cm.timemodified,
                                 "mimetypes": [], "repositorytype": ""}
        return m

    def ws_core_course_get_contents(self, p, userid):
        self._course_or_fail(p["courseid"])
        opts = {o["name"].lower(): o["value"] for o in p["options"]}
        excludemodules = opts.get("excludemodules") in ("1", "true")
        excludecontents = opts.get("excludecontents") in ("1", "true")
        only_section = opts.get("sectionnumber")
        only_sectionid = opts.get("sectionid")
        only_cmid = opts.get("cmid")
        only_modname = opts.get("modname")
        out = []
        for sec in self.sections.get(p["courseid"], []):
            if only_section is not None and str(sec.section) != str(only_section):
                continue
            if only_sectionid is not None and str(sec.id) != str(only_sectionid):
                continue
            modules = []
            if not excludemodules:
                for cmid in sec.sequence:
                    cm = self.cms[cmid]
                    if only_cmid is not None and str(cmid) != str(only_cmid):
                        continue
                    if only_modname is not None and cm.modname != only_modname:
                        continue
                    m = self._module_out(cm, userid)
                    if excludecontents:
                        m.pop("contents", None)
                    modules.append(m)
            out.append({"id": sec.id, "name": sec.name, "visible": 1, "summary": "", "summaryformat": 1,
                        "section": sec.section, "hiddenbynumsections": 0, "uservisible": True,
                        "component": None, "itemid": None, "modules": modules})
        return out

    # -- users -------------------------------------------------------------------
    def _user_details(self, u):
        d = {"id": u.id, "username": u.username, "firstname": u.firstname, "lastname": u.lastname,
             "fullname": f"{u.firstname} {u.lastname}", "email": u.email, "department": u.department}
        if u.institution:
            d["institution"] = u.institution
        d.update({"idnumber": u.idnumber, "firstaccess": 0, "lastaccess": 0, "auth": u.auth,
                  "suspended": bool(u.suspended), "confirmed": True, "lang": u.lang, "theme": u.theme,
                  "timezone": u.timezone, "mailformat": u.mailformat, "trackforums": 0})
        if u.description:
            d["description"] = u.description
            d["descriptionformat"] = 1
        if u.city:
            d["city"] = u.city
        if u.country:
            d["country"] = u.country
        d["profileimageurlsmall"] = self._pic("f2")
        d["profileimageurl"] = self._pic("f1")
        return d

    def ws_core_user_get_users_by_field(self, p, userid):
        field = p["field"]
        ptype = {"id": "int", "idnumber": "raw", "username": "username", "email": "email"}.get(field)
        if ptype is None:
            raise coding_exception("invalid field parameter",
                                   f"The search field '{field}' is not supported, look at the web service "
                                   "documentation")
        values = []
        for value in p["values"]:
            cleaned = clean_param(value, ptype)
            if php_str(value) != php_str(cleaned):
                raise invalid_parameter(f"The field '{field}' value is invalid: {value}(cleaned value: "
                                        f"{php_str(cleaned)})")
            values.append(php_str(cleaned))
        wanted = set(values)
        if field == "id":
            ids = {int(v) for v in wanted if int(v) in self.users}
        elif field == "username":
            ids = {self.users_by_username[v] for v in wanted if v in self.users_by_username}
        elif field == "idnumber":
            ids = {i for v in wanted for i in self.users_by_idnumber.get(v, ())}
        else:   # email: exact match (PostgreSQL compares case-sensitively)
            ids = {i for v in wanted for i in self.users_by_email.get(v.lower(), ()) if self.users[i].email == v}
        found = [self.users[i] for i in ids]
        found = [u for u in found if not u.hidden and u[field] not in ("", None)]
        return [self._user_details(u) for u in sorted(found, key=lambda u: u.id)]

    def _email_taken(self, email, exclude=None):
        return any(i != exclude for i in self.users_by_email.get(email.lower(), ()))

    def ws_core_user_create_users(self, p, userid):
        # One transaction: check everything first, then write.
        pending_names, pending_emails = set(), set()
        for user in p["users"]:
            for fname in ("username", "firstname", "lastname"):
                if user[fname].strip() == "":
                    raise invalid_parameter(f"The field {fname} cannot be blank")
            if user["username"] in self.users_by_username or user["username"] in pending_names:
                raise invalid_parameter(f"Username already exists: {user['username']}")
            if user["auth"] not in AUTH_PLUGINS:
                raise invalid_parameter(f"Invalid authentication type: {user['auth']}")
            if user["lang"] not in LANGS:
                raise invalid_parameter(f"Invalid language code: {user['lang']}")
            if user.get("theme") and user["theme"] not in THEMES:
                raise invalid_parameter(f"Invalid theme: {user['theme']}")
            if not user.get("password") and not user.get("createpassword"):
                raise invalid_parameter("Invalid password: you must provide a password, or set createpassword.")
            if not validate_email(user["email"]):
                raise invalid_parameter(f"Email address is invalid: {user['email']}")
            if self._email_taken(user["email"]) or user["email"].lower() in pending_emails:
                raise invalid_parameter(f"Email address already exists: {user['email']}")
            if not user.get("createpassword") and user["auth"] == "manual" \
                    and not check_password_policy(user.get("password") or ""):
                raise invalid_parameter("Passwords must be at least 8 characters long. Passwords must have at "
                                        "least 1 digit(s). Passwords must have at least 1 lower case letter(s). "
                                        "Passwords must have at least 1 upper case letter(s). Passwords must "
                                        "have at least 1 special character(s) such as *, -, or #.")
            pending_names.add(user["username"])
            pending_emails.add(user["email"].lower())
        created = []
        for user in p["users"]:
            uid = self._next("user")
            extra = {k: user[k] for k in ("auth", "lang", "department", "institution", "city", "country",
                                           "description", "calendartype", "theme", "timezone", "mailformat")
                     if user.get(k) not in (None, "")}
            extra["password"] = None if user.get("createpassword") else user.get("password")
            self._add_user_record(uid, user["username"], user["firstname"], user["lastname"], user["email"],
                                  php_str(user["idnumber"]), **extra)
            created.append({"id": uid, "username": user["username"]})
        return created

    def ws_core_user_update_users(self, p, userid):
        warnings = []
        for user in p["users"]:
            uid = user["id"]
            try:
                existing = self.users.get(uid)
                if existing is None or existing.hidden:
                    raise moodle_exception("invaliduserid", "Invalid user id", "Invalid user ID")
                if "email" in user and user["email"] != existing.email:
                    if not validate_email(user["email"]):
                        raise moodle_exception("useremailinvalid", "Invalid email address", "Invalid email address")
                    if self._email_taken(user["email"], exclude=uid):
                        raise moodle_exception("useremailduplicate", "Duplicate address", "Duplicate email address")
                if "username" in user and user["username"] != existing.username:
                    if user["username"] in self.users_by_username:
                        raise MoodleException("dml_write_exception", "dmlwriteexception",
                                              "Error writing to database")
                if "password" in user and existing.auth == "manual" and not check_password_policy(user["password"]):
                    raise invalid_parameter("password policy")
                self._unindex_user(existing)
                for k, v in user.items():
                    if k in ("id", "customfields", "preferences", "userpicture", "interests"):
                        continue
                    existing[k] = bool(v) if k == "suspended" else (php_str(v) if k == "idnumber" else v)
                self._index_user(existing)
            except MoodleException as e:
                warnings.append({"item": "user", "itemid": uid, "warningcode": e.errorcode, "message": e.message})
        return {"warnings": warnings}

    # -- enrolments ---------------------------------------------------------------
    def ws_enrol_manual_enrol_users(self, p, userid):
        # One transaction: validate every enrolment, then apply them all.
        for en in p["enrolments"]:
            cid = en["courseid"]
            if cid not in self.courses:
                raise invalid_parameter("Context does not exist")
            if en["roleid"] not in ASSIGNABLE_ROLES:
                raise moodle_exception(
                    "wsusercannotassign",
                    f"You don't have the permission to assign this role ({en['roleid']}) to this user "
                    f"({en['userid']}) in this course ({cid}).", module="enrol_manual")
            if not self.courses[cid].enrol_manual:
                # Moodle passes the placeholder data as the link, so {$a->courseid} stays unreplaced.
                raise moodle_exception("wsnoinstance",
                                       "Manual enrolment plugin instance doesn't exist or is disabled for the "
                                       "course (id = {$a->courseid})", module="enrol_manual")
            u = self.users.get(en["userid"])
            if u is None or u.hidden:
                raise coding_exception("User ID does not exist or is deleted!", f"userid:{en['userid']}")
        for en in p["enrolments"]:
            self._enrol(en["courseid"], en["userid"], en["roleid"], en.get("timestart") or 0,
                        en.get("timeend") or 0, 1 if en.get("suspend") else 0)
        return None

    def ws_core_enrol_get_enrolled_users(self, p, userid):
        cid = p["courseid"]
        self._course_or_fail(cid)
        opts = {o["name"]: o["value"] for o in p["options"]}
        onlyactive = opts.get("onlyactive") in ("1", "true")
        fields = [f.strip() for f in opts["userfields"].split(",")] if opts.get("userfields") else None
        rows = []
        for uid, e in self.enrolments.get(cid, {}).items():
            u = self.users.get(uid)
            if u is None or (onlyactive and (not self._is_active_enrolment(e) or u.suspended)):
                continue
            rows.append((u, e))
        sortby = opts.get("sortby", "id")
        keyf = {"firstname": lambda r: (r[0].firstname, r[0].id), "lastname": lambda r: (r[0].lastname, r[0].id)}
        rows.sort(key=keyf.get(sortby, lambda r: r[0].id),
                  reverse=str(opts.get("sortdirection", "ASC")).upper() == "DESC")
        if opts.get("limitfrom") or opts.get("limitnumber"):
            start = php_intval(opts.get("limitfrom", 0))
            n = php_intval(opts.get("limitnumber", 0))
            rows = rows[start:start + n] if n else rows[start:]
        out = []
        for u, e in rows:
            d = {"id": u.id, "username": u.username, "firstname": u.firstname, "lastname": u.lastname,
                 "fullname": f"{u.firstname} {u.lastname}", "email": u.email, "department": u.department,
                 "idnumber": u.idnumber, "firstaccess": 0, "lastaccess": 0, "lastcourseaccess": 0,
                 "profileimageurlsmall": self._pic("f2"), "profileimageurl": self._pic("f1"),
                 # get_user_roles(): ordered by the roles' sortorder (same order as the ids by default)
                 "roles": [{"roleid": r, "name": "", "shortname": ROLES.get(r, f"role{r}"), "sortorder": 0}
                           for r in sorted(e.roles)]}
            # enrol_get_users_courses($userid, true): active enrolments only, by course sortorder
            mine = sorted((self.courses[x] for x in self.user_courses.get(u.id, ())
                           if x in self.courses and self._is_active_enrolment(self.enrolments[x][u.id])),
                          key=lambda c: (-c.visible, c.sortorder))
            if mine:
                d["enrolledcourses"] = [{"id": c.id, "fullname": c.fullname, "shortname": c.shortname}
                                        for c in mine]
            if fields is not None:
                d = {k: v for k, v in d.items() if k in fields or k == "id"}
            out.append(d)
        return out

    # -- completion ------------------------------------------------------------------
    def ws_core_completion_get_activities_completion_status(self, p, userid):
        c = self._course_or_fail(p["courseid"])
        u = self._user_or_fail(p["userid"])
        statuses = []
        if c.enablecompletion:
            for cm in self._course_cms(c.id):
                if cm.completion == TRACKING_NONE:
                    continue
                d = self._completion_details(cm, u.id)
                statuses.append({"cmid": cm.id, "modname": cm.modname, "instance": cm.instance,
                                 "state": d["state"], "timecompleted": d["timecompleted"],
                                 "tracking": cm.completion, "overrideby": d["overrideby"],
                                 "valueused": False, "hascompletion": True,
                                 "isautomatic": d["isautomatic"], "istrackeduser": d["istrackeduser"],
                                 "uservisible": True, "details": d["details"],
                                 "isoverallcomplete": d["isoverallcomplete"]})
        return {"statuses": statuses, "warnings": []}

    def ws_core_completion_override_activity_completion_status(self, p, userid):
        cm = self._cm_or_fail(p["cmid"])
        if not self.courses[cm.course].enablecompletion:
            raise moodle_exception("completionnotenabled", "Completion is not enabled", module="completion")
        self._update_state(cm, p["newstate"], p["userid"], override=True, by=userid)
        data = self.completions.get((cm.id, p["userid"]))
        return {"cmid": cm.id, "userid": p["userid"], "state": data["state"] if data else 0,
                "timecompleted": data["timemodified"] if data else 0,
                "overrideby": data["overrideby"] if data else None, "tracking": cm.completion}

    def ws_core_completion_update_activity_completion_status_manually(self, p, userid):
        cm = self._cm_or_fail(p["cmid"])
        if not self.courses[cm.course].enablecompletion:
            raise moodle_exception("completionnotenabled", "Completion is not enabled", module="completion")
        if cm.completion != TRACKING_MANUAL:
            raise moodle_exception("cannotmanualctrack", "Activity does not provide manual completion tracking")
        self._update_state(cm, COMPLETION_COMPLETE if p["completed"] else COMPLETION_INCOMPLETE, userid)
        return {"status": True, "warnings": []}

    # -- grades -------------------------------------------------------------------------
    def ws_core_grades_update_grades(self, p, userid):
        component = p["component"]
        itemmodule = component[4:] if component.startswith("mod_") else (
            component if "_" not in component else None)
        cm = self.cms.get(p["activityid"])
        if cm is None or itemmodule is None or cm.modname != itemmodule:
            raise moodle_exception("invalidcoursemodule", "Invalid course module ID")
        courseid = p["courseid"]
        self._course_or_fail(courseid)
        key = (courseid, itemmodule, cm.instance, p["itemnumber"])
        itemid = self.grade_item_keys.get(key)
        details = p["itemdetails"]
        if itemid is None:
            if details.get("deleted"):
                return 0
            _, catid = self._ensure_course_item(courseid)
            itemid = self._next("gradeitem")
            name = details.get("itemname") or (cm.name if cm.course == courseid else None)
            self._add_grade_item(itemid, courseid, itemmodule, cm.instance, p["itemnumber"], catid, name,
                                 cm.id if cm.course == courseid else None)
        item = self.grade_items[itemid]
        for k in ("grademax", "grademin"):
            if details.get(k) is not None:
                item[k] = float(details[k])
        now = self.now()
        for g in p["grades"]:
            raw = g["grade"]
            final = None if raw is None else min(max(raw, item.grademin), item.grademax)
            # Moodle 4.5 ignores str_feedback here (the grade structure only has userid and rawgrade).
            prev = self.grades.get((itemid, g["studentid"]))
            self.grades[(itemid, g["studentid"])] = _Obj(
                rawgrade=raw, finalgrade=final, timemodified=now,
                feedback=prev.feedback if prev else None, feedbackformat=2)
            if cm.course == courseid and p["itemnumber"] == 0 and cm.completionusegrade \
                    and cm.completion == TRACKING_AUTOMATIC:
                possible = COMPLETION_COMPLETE if final is not None else COMPLETION_INCOMPLETE
                self._update_state(cm, possible, g["studentid"])
        return 0

    def ws_core_grades_get_gradeitems(self, p, userid):
        self._course_or_fail(p["courseid"])
        out = []
        for itemid in sorted(self.grade_items):
            item = self.grade_items[itemid]
            if item.courseid != p["courseid"] or item.itemtype != "mod":
                continue
            out.append({"id": str(item.id), "itemname": item.itemname or "",
                        "category": self.courses[p["courseid"]].fullname})
        return {"gradeItems": out, "warnings": []}

    def _user_report(self, course, user):
        courseitem, catid = self._ensure_course_item(course.id)
        items = [self.grade_items[i] for i in sorted(self.grade_items)
                 if self.grade_items[i].courseid == course.id and self.grade_items[i].itemtype == "mod"]
        grades = {it.id: self.grades.get((it.id, user.id)) for it in items}
        graded = [it for it in items if grades[it.id] is not None and grades[it.id].finalgrade is not None]
        summax = sum(it.grademax for it in graded)
        rows = []

        def grade_fields(value, gmin, gmax, dategraded):
            d = {"graderaw": phpnum(value) if value is not None else None, "gradedatesubmitted": None,
                 "gradedategraded": dategraded, "gradehiddenbydate": False, "gradeneedsupdate": False,
                 "gradeishidden": False, "gradeislocked": False, "gradeisoverridden": False,
                 "gradeformatted": format_float(value, 2) if value is not None else "-",
                 "grademin": phpnum(gmin), "grademax": phpnum(gmax),
                 "rangeformatted": f"{format_float(gmin, 0)}&ndash;{format_float(gmax, 0)}",
                 "percentageformatted": (format_float((value - gmin) * 100.0 / (gmax - gmin), 2) + " %")
                 if value is not None and gmax != gmin else "-",
                 "feedback": "", "feedbackformat": 2}
            return d

        for it in items:
            g = grades[it.id]
            row = {"id": it.id, "itemname": it.itemname, "itemtype": "mod", "itemmodule": it.itemmodule,
                   "iteminstance": it.iteminstance, "itemnumber": it.itemnumber, "idnumber": it.idnumber,
                   "categoryid": it.categoryid, "outcomeid": None, "scaleid": None, "locked": False}
            if it.cmid is not None:
                row["cmid"] = it.cmid
            if g is not None and g.finalgrade is not None and summax:
                w = it.grademax / summax
                row["weightraw"] = phpnum(w)
                row["weightformatted"] = format_float(w * 100.0, 2) + " %"
            value = g.finalgrade if g is not None else None
            row.update(grade_fields(value, it.grademin, it.grademax, g.timemodified if value is not None else None))
            if g is not None and g.feedback:
                row["feedback"] = g.feedback
            rows.append(row)
        total = sum(grades[it.id].finalgrade for it in graded) if graded else None
        dategraded = max((grades[it.id].timemodified for it in graded), default=None)
        course_row = {"id": courseitem, "itemname": None, "itemtype": "course", "itemmodule": None,
                      "iteminstance": catid, "itemnumber": None, "idnumber": None, "categoryid": None,
                      "outcomeid": None, "scaleid": None, "locked": False}
        coursemax = summax if graded else (sum(it.grademax for it in items) if items else 100.0)
        course_row.update(grade_fields(total, 0.0, coursemax, dategraded))
        rows.append(course_row)
        return {"courseid": course.id, "courseidnumber": course.idnumber, "userid": user.id,
                "userfullname": f"{user.firstname} {user.lastname}", "useridnumber": user.idnumber,
                "maxdepth": 2, "gradeitems": rows}

    def ws_gradereport_user_get_grade_items(self, p, userid):
        course = self._course_or_fail(p["courseid"])
        if p["userid"]:
            users = [self._user_or_fail(p["userid"])]
        else:
            users = [self.users[uid] for uid in sorted(self.enrolments.get(course.id, {}))
                     if uid in self.users and self._is_tracked(course.id, uid)]
        return {"usergrades": [self._user_report(course, u) for u in users], "warnings": []}

    # =====================================================================
    # Content changes (what a teacher does in the Moodle UI), README sec. 9
    # =====================================================================

    def edit_activity(self, cmid, name=None, content=None, completion=None, visible=None):
        """Rename (inline) or edit an activity: bumps cacherev once, not course timemodified."""
        with self.lock:
            cm = self.cms[cmid]
            if name is not None:
                cm.name = name
                itemid = self.grade_item_keys.get((cm.course, cm.modname, cm.instance, 0))
                if itemid is not None:
                    self.grade_items[itemid].itemname = name
            if content is not None:
                if cm.modname == "url":
                    cm.externalurl = content
                else:
                    cm.content = content
            if completion is not None:
                cm.completion = int(completion)
                cm.completionusegrade = cm.modname in GRADED_MODULES and cm.completion == TRACKING_AUTOMATIC
                cm.completionview = cm.modname not in GRADED_MODULES and cm.completion == TRACKING_AUTOMATIC
            if visible is not None:
                cm.visible = 1 if visible else 0
            cm.timemodified = self.now()
            self._bump_cacherev(cm.course)
            return self._cm_summary(cm)

    def add_activity(self, courseid, modname, name, completion=TRACKING_MANUAL, section=1, grademax=100):
        """Add an activity (add_moduleinfo rebuilds the course cache three times)."""
        with self.lock:
            if modname not in MODULES:
                raise ValueError(f"unsupported module {modname!r} (use one of {sorted(MODULES)})")
            c = self.courses[courseid]
            secs = self.sections.setdefault(courseid, [])
            while len(secs) <= section:
                secs.append(_Obj(id=self._next("section"), section=len(secs),
                                 name="General" if not secs else "New section", sequence=[]))
            cmid = self._next("cm")
            inst = self.next_ids["instance"][modname]
            self.next_ids["instance"][modname] += 1
            # add_moduleinfo() only keeps completion settings when the course has completion enabled
            completion = int(completion) if c.enablecompletion else TRACKING_NONE
            cm = _Obj(id=cmid, course=courseid, modname=modname, instance=inst, contextid=self._next("context"),
                      name=name, completion=completion,
                      completionview=modname not in GRADED_MODULES and completion == TRACKING_AUTOMATIC,
                      completionusegrade=modname in GRADED_MODULES and completion == TRACKING_AUTOMATIC,
                      timemodified=self.now(), content=f"<p>{name}</p>", externalurl=None, visible=1,
                      section=section)
            self.cms[cmid] = cm
            secs[section].sequence.append(cmid)
            if modname in GRADED_MODULES:
                _, catid = self._ensure_course_item(courseid)
                self._add_grade_item(self._next("gradeitem"), courseid, modname, inst, 0, catid, name, cmid,
                                     grademax)
            self._bump_cacherev(c.id, times=3)
            return cmid

    def delete_activity(self, cmid):
        with self.lock:
            cm = self.cms.pop(cmid)
            for sec in self.sections.get(cm.course, []):
                if cmid in sec.sequence:
                    sec.sequence.remove(cmid)
            for key in [k for k in self.completions if k[0] == cmid]:
                del self.completions[key]
            itemid = self.grade_item_keys.pop((cm.course, cm.modname, cm.instance, 0), None)
            if itemid is not None:
                del self.grade_items[itemid]
                for key in [k for k in self.grades if k[0] == itemid]:
                    del self.grades[key]
            self._bump_cacherev(cm.course)

    COURSE_SETTINGS = ("fullname", "shortname", "summary", "idnumber", "visible", "startdate", "enddate",
                       "enablecompletion", "categoryid", "categoryname", "newsitems", "format")

    def edit_course_settings(self, courseid, **fields):
        """update_course(): sets timemodified and bumps cacherev."""
        with self.lock:
            c = self.courses[courseid]
            for k, v in fields.items():
                if k not in self.COURSE_SETTINGS:
                    raise ValueError(f"unknown course setting {k!r}")
                c[k] = v
            c.timemodified = self.now()
            self._bump_cacherev(courseid)
            return self._course_out(c)

    def add_course(self, shortname, fullname=None, idnumber="", summary="", categoryid=1,
                   enablecompletion=1):
        with self.lock:
            cid = self._next("course")
            for other in self.courses.values():
                if other.categoryid == categoryid and other.format != "site":
                    other.sortorder += 1
            now = self.now()
            self.courses[cid] = _Obj(
                id=cid, fullname=fullname or shortname, shortname=shortname, contextid=self._next("context"),
                categoryid=categoryid, categoryname=f"Category {categoryid}", sortorder=10000 + categoryid,
                summary=summary, showcompletionconditions=True, idnumber=idnumber, format="topics",
                newsitems=0, startdate=now - now % 86400, enddate=0, visible=1,
                enablecompletion=enablecompletion, timecreated=now, timemodified=now, cacherev=now,
                enrol_manual=True)
            self.sections[cid] = [_Obj(id=self._next("section"), section=0, name="General", sequence=[])]
            return cid

    def delete_course(self, courseid):
        with self.lock:
            self.courses.pop(courseid)
            for cmid in [cm.id for cm in self._course_cms(courseid)]:
                cm = self.cms.pop(cmid)
                for key in [k for k in self.completions if k[0] == cmid]:
                    del self.completions[key]
                del cm
            self.sections.pop(courseid, None)
            for uid in self.enrolments.pop(courseid, {}):
                self.user_courses.get(uid, set()).discard(courseid)
            for itemid in [i for i, it in self.grade_items.items() if it.courseid == courseid]:
                it = self.grade_items.pop(itemid)
                self.grade_item_keys.pop((courseid, it.itemmodule, it.iteminstance, it.itemnumber), None)
                for key in [k for k in self.grades if k[0] == itemid]:
                    del self.grades[key]
            self.course_items.pop(courseid, None)

    def forget(self, userid=None, courseid=None, cmid=None, completions=True, grades=True, users=None,
               reuse_ids=False):
        """Drop completions/grades (and optionally users), like a server restored from a backup.

        Selectors combine with AND; none given means everything.  ``users``
        deletes those accounts with their enrolments; ``reuse_ids`` then lets
        new accounts get the freed ids again, as a restored sequence would.
        """
        with self.lock:
            dropped = {"completions": 0, "grades": 0, "users": 0}

            def match(cm_id, uid, cid):
                return ((userid is None or uid == userid) and (courseid is None or cid == courseid)
                        and (cmid is None or cm_id == cmid))
            if completions:
                for key in list(self.completions):
                    cm = self.cms.get(key[0])
                    if match(key[0], key[1], cm.course if cm else None):
                        del self.completions[key]
                        dropped["completions"] += 1
            if grades:
                for key in list(self.grades):
                    it = self.grade_items.get(key[0])
                    if it is not None and match(it.cmid, key[1], it.courseid):
                        del self.grades[key]
                        dropped["grades"] += 1
            for uid in users or ():
                u = self.users.get(uid)
                if u is None or uid in (ADMIN_ID, GUEST_ID):
                    continue
                del self.users[uid]
                self._unindex_user(u)
                for cid in self.user_courses.pop(uid, set()):
                    self.enrolments.get(cid, {}).pop(uid, None)
                for key in [k for k in self.completions if k[1] == uid]:
                    del self.completions[key]
                for key in [k for k in self.grades if k[1] == uid]:
                    del self.grades[key]
                dropped["users"] += 1
            if reuse_ids:
                self.next_ids["user"] = max(self.users) + 1
            return dropped

    # -- convenience for tests ----------------------------------------------------------
    def add_user(self, username, firstname=None, lastname="Test", email=None, idnumber=""):
        with self.lock:
            uid = self._next("user")
            self._add_user_record(uid, username, firstname or username.capitalize(), lastname,
                                  email or f"{username}@example.invalid", idnumber)
            return uid

    def enrol_user(self, userid, courseid, roleid=STUDENT_ROLE, suspended=False):
        with self.lock:
            self._enrol(courseid, userid, roleid, status=1 if suspended else 0)

    def get_completion(self, userid, cmid):
        with self.lock:
            d = self.completions.get((cmid, userid))
            return dict(d) if d else None

    def get_grade(self, userid, cmid, itemnumber=0):
        with self.lock:
            cm = self.cms.get(cmid)
            if cm is None:
                return None
            itemid = self.grade_item_keys.get((cm.course, cm.modname, cm.instance, itemnumber))
            g = self.grades.get((itemid, userid)) if itemid else None
            return {"grade": g.finalgrade, "rawgrade": g.rawgrade, "timemodified": g.timemodified} if g else None

    def _cm_summary(self, cm):
        return {"cmid": cm.id, "courseid": cm.course, "modname": cm.modname, "instance": cm.instance,
                "name": cm.name, "completion": cm.completion, "section": cm.section,
                "timemodified": cm.timemodified, "visible": cm.visible}

    def dump(self, only=None, userid=None, courseid=None):
        """Everything as plain JSON data; ``only`` picks sections, userid/courseid filter rows."""
        full = self._dump()

        def keep(section, row):
            uid = row["id"] if section == "users" else row.get("userid", userid)
            cid = row["id"] if section == "courses" else row.get("courseid", courseid)
            return (userid is None or uid == userid) and (courseid is None or cid == courseid)
        for section in ("users", "enrolments", "completions", "grades", "courses"):
            full[section] = [row for row in full[section] if keep(section, row)]
        if only:
            full = {k: v for k, v in full.items() if k in set(only) | {"clock"}}
        return full

    def _dump(self):
        with self.lock:
            return {
                "clock": self.now(),
                "courses": [{"id": c.id, "shortname": c.shortname, "fullname": c.fullname,
                             "idnumber": c.idnumber, "summary": c.summary, "visible": c.visible,
                             "timemodified": c.timemodified, "cacherev": c.cacherev,
                             "activities": [self._cm_summary(cm) for cm in self._course_cms(c.id)]}
                            for c in (self.courses[k] for k in sorted(self.courses))],
                "users": [{"id": u.id, "username": u.username, "firstname": u.firstname, "lastname": u.lastname,
                           "email": u.email, "idnumber": u.idnumber, "auth": u.auth, "suspended": u.suspended}
                          for u in (self.users[k] for k in sorted(self.users)) if not u.hidden],
                "enrolments": [{"courseid": cid, "userid": uid, "roleids": list(e.roles), "status": e.status,
                                "timestart": e.timestart, "timeend": e.timeend}
                               for cid in sorted(self.enrolments)
                               for uid, e in sorted(self.enrolments[cid].items())],
                "completions": [{"cmid": k[0], "courseid": self.cms[k[0]].course if k[0] in self.cms else None,
                                 "userid": k[1], "state": v["state"], "timecompleted": v["timemodified"],
                                 "overrideby": v["overrideby"]}
                                for k, v in sorted(self.completions.items())],
                "grades": [{"courseid": self.grade_items[k[0]].courseid, "cmid": self.grade_items[k[0]].cmid,
                            "itemid": k[0], "userid": k[1], "grade": phpnum(g.finalgrade),
                            "rawgrade": phpnum(g.rawgrade) if g.rawgrade is not None and math.isfinite(g.rawgrade)
                            else None, "timemodified": g.timemodified}
                           for k, g in sorted(self.grades.items())],
            }

    # -- control endpoint /__sim/edit ------------------------------------------------------
    def apply_edit(self, spec: dict):
        spec = dict(spec)
        op = spec.pop("op", None)
        if op == "edit_activity":
            return self.edit_activity(**spec)
        if op == "add_activity":
            return {"cmid": self.add_activity(**spec)}
        if op == "delete_activity":
            self.delete_activity(**spec)
            return {"deleted": spec.get("cmid")}
        if op == "edit_course_settings":
            cid = spec.pop("courseid")
            return self.edit_course_settings(cid, **spec)
        if op == "delete_course":
            self.delete_course(**spec)
            return {"deleted": spec.get("courseid")}
        if op == "add_course":
            return {"courseid": self.add_course(**spec)}
        raise ValueError(f"unknown op {op!r}")


# ---------------------------------------------------------------------------
# Fault switches and statistics
# ---------------------------------------------------------------------------

class Faults:
    """Fault switches.  Set with ``faults.set(name=value)`` or POST /__sim/faults.

    Count-limited switches (``reset_mid_response``, ``truncated_json``) take
    True (every request) or an int (only the next N requests); ``status``
    takes an HTTP code with optional ``retry_after`` and ``status_count``.
    """

    FIELDS = {
        "latency_ms": 0,
        "reset_after_requests": None,
        "reset_after_processing": False,
        "reset_mid_response": False,
        "status": None,
        "retry_after": None,
        "status_count": None,
        "status_after_processing": False,
        "captive_portal": False,
        "redirect": None,
        "reject_token": False,
        "truncated_json": False,
        "clock_offset_s": 0,
        "fail_function": None,
        "request_cost_ms": 0,
        "call_cost_ms": 0,
        "debug": False,
    }

    def __init__(self, **defaults):
        self._lock = threading.Lock()
        self._defaults = dict(self.FIELDS)
        for k, v in defaults.items():
            if k not in self.FIELDS:
                raise ValueError(f"unknown fault switch {k!r}")
            self._defaults[k] = v
        self.clear()

    def clear(self):
        with self._lock:
            for k, v in self._defaults.items():
                object.__setattr__(self, k, copy.deepcopy(v))

    def set(self, **switches):
        with self._lock:
            for k, v in switches.items():
                if k not in self.FIELDS:
                    raise ValueError(f"unknown fault switch {k!r}")
                if v is None:
                    v = copy.deepcopy(self.FIELDS[k])
                object.__setattr__(self, k, v)
        return self.snapshot()

    def __setattr__(self, key, value):
        if key.startswith("_"):
            object.__setattr__(self, key, value)
        else:
            self.set(**{key: value})

    def snapshot(self):
        return {k: copy.deepcopy(getattr(self, k)) for k in self.FIELDS}

    def _take_count(self, name):
        v = getattr(self, name)
        if v is True:
            return True
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            object.__setattr__(self, name, v - 1 if v > 1 else False)
            return True
        return False

    def take(self):
        """Decide, atomically, which faults apply to the request being served."""
        with self._lock:
            f = {"latency_ms": self.latency_ms or 0, "reset": False, "reset_after_processing": False,
                 "status": None, "retry_after": None, "status_after_processing": False,
                 "captive_portal": bool(self.captive_portal),
                 "redirect": self.redirect, "mid_response": False, "truncated": False,
                 "clock_offset_s": self.clock_offset_s or 0}
            n = self.reset_after_requests
            if n is not None and not isinstance(n, bool):
                if n <= 0:
                    f["reset"] = True
                    f["reset_after_processing"] = bool(self.reset_after_processing)
                    object.__setattr__(self, "reset_after_requests", None)
                else:
                    object.__setattr__(self, "reset_after_requests", n - 1)
            if not f["reset"] and self.status:
                f["status"], f["retry_after"] = int(self.status), self.retry_after
                f["status_after_processing"] = bool(self.status_after_processing)
                if self.status_count is not None:
                    left = int(self.status_count) - 1
                    if left <= 0:
                        object.__setattr__(self, "status", None)
                        object.__setattr__(self, "retry_after", None)
                        object.__setattr__(self, "status_count", None)
                    else:
                        object.__setattr__(self, "status_count", left)
            if not f["reset"] and not f["status"]:
                f["mid_response"] = self._take_count("reset_mid_response")
                if not f["mid_response"]:
                    f["truncated"] = self._take_count("truncated_json")
            return f


class Stats:
    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self):
        with getattr(self, "_lock", threading.Lock()):
            self.requests = 0
            self.control_requests = 0
            self.connections = 0
            self.calls = {}
            self.errors = {}
            self.bytes_in = 0
            self.bytes_out = 0
            self.batches = 0
            self.batch_sizes = {}
            self.faults_fired = {}
            self.started = time.time()

    def add(self, **kw):
        with self._lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)

    def count(self, table, key, n=1):
        with self._lock:
            d = getattr(self, table)
            d[key] = d.get(key, 0) + n

    def snapshot(self):
        with self._lock:
            return {"requests": self.requests, "control_requests": self.control_requests,
                    "connections": self.connections, "calls": dict(self.calls),
                    "total_calls": sum(self.calls.values()), "errors": dict(self.errors),
                    "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "batches": self.batches,
                    "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                    "faults_fired": dict(self.faults_fired),
                    "uptime_s": round(time.time() - self.started, 3)}


# ---------------------------------------------------------------------------
# The REST server logic (independent of the HTTP plumbing)
# ---------------------------------------------------------------------------

def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")   # PHP's json_decode() does not accept NaN/Infinity


class WebService:
    def __init__(self, state: Moodle, token: str, faults: Faults, stats: Stats,
                 max_input_vars=5000, post_max_size=8 * 1024 * 1024):
        self.state = state
        self.token = token
        self.faults = faults
        self.stats = stats
        self.max_input_vars = max_input_vars
        self.post_max_size = post_max_size

    def known_function(self, name):
        return name in PARAMS or name in OTHER_MOODLE_FUNCTIONS

    def call(self, fname, params, userid, calls):
        """external_api::call_external_function for one function; returns its result."""
        calls.append(fname)
        self.stats.count("calls", fname)
        spec = (self.faults.fail_function or {}).get(fname) if isinstance(self.faults.fail_function, dict) else None
        if spec is not None:
            self.stats.count("faults_fired", "fail_function")
            raise simulated_error(spec)
        clean = validate_parameters(PARAM_DESCS[fname], params)
        if fname == "tool_mobile_call_external_functions":
            return self.batch(clean, userid, calls)
        with self.state.lock:
            return getattr(self.state, "ws_" + fname)(clean, userid)

    def batch(self, p, userid, calls):
        debug = bool(self.faults.debug)
        responses = []
        self.stats.add(batches=1)
        self.stats.count("batch_sizes", len(p["requests"]))
        for req in p["requests"]:
            try:
                args = json.loads(req["arguments"], parse_constant=_reject_constant)
            except (ValueError, TypeError, RecursionError):
                args = {}
            if not isinstance(args, (dict, list)):
                args = {}
            if req["function"] in self.state.service:
                try:
                    try:
                        data = self.call(req["function"], args, userid, calls)
                    except MoodleException:
                        raise
                    except Exception as e:   # a simulator bug: report it like PHP reports a Throwable
                        traceback.print_exc()
                        raise MoodleException(type(e).__name__, "generalexceptionmessage", f"Exception - {e}")
                    resp = {"error": False}
                    if data is not None:
                        resp["data"] = php_json_encode(data)
                except MoodleException as e:
                    self.stats.count("errors", e.errorcode)
                    resp = {"error": True,
                            "exception": php_json_encode(e.batch_object(self.state.wwwroot, debug))}
            else:
                exc = {"errorcode": "accessexception", "module": "webservice"}
                if debug:
                    exc["debuginfo"] = "Access to the function is not allowed."
                self.stats.count("errors", "accessexception")
                resp = {"error": True, "exception": php_json_encode(exc)}
            responses.append(resp)
            if resp["error"]:
                break
        return {"responses": responses}

    def handle(self, method, query: str, body: bytes, content_type: str):
        """Serve one request to server.php.  Returns (content_type, body bytes, function calls)."""
        limit = self.max_input_vars
        get_vars = parse_php_form(parse_qsl(query, keep_blank_values=True), limit)
        post_vars = {}
        if method == "POST" and body and (content_type or "").split(";")[0].strip().lower() \
                == "application/x-www-form-urlencoded" and len(body) <= self.post_max_size:
            post_vars = parse_php_form(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True), limit)
        variables = {**get_vars, **post_vars}
        for k in [k for k in variables if k.startswith("moodlewssetting")]:
            del variables[k]
        fmt = variables.pop("moodlewsrestformat", None)
        fmt = fmt if fmt in ("xml", "json") else "xml"
        token = variables.pop("wstoken", None)
        fname = variables.pop("wsfunction", None)
        calls = []
        debug = bool(self.faults.debug)
        try:
            if not isinstance(token, str) or token != self.token or self.faults.reject_token:
                raise invalid_token()
            userid = ADMIN_ID
            if not fname:
                raise invalid_parameter("Missing function name")
            if not isinstance(fname, str) or not self.known_function(fname):
                raise missing_record("external_functions",
                                     "SELECT * FROM {external_functions} WHERE name = ?", [php_str(fname)])
            if fname not in self.state.service:
                raise access_exception(fname)
            result = self.call(fname, variables, userid, calls)
        except MoodleException as e:
            self.stats.count("errors", e.errorcode)
            if fmt == "json":
                return "application/json", php_json_encode(e.rest_object(debug)).encode(), calls
            return "application/xml; charset=utf-8", xml_error(e, debug).encode(), calls
        except Exception as e:      # a simulator bug: answer like Moodle does for a PHP Error
            traceback.print_exc()
            self.stats.count("errors", "simulator_bug")
            if fmt == "json":
                body = php_json_encode({"exception": type(e).__name__, "message": str(e)})
                return "application/json", body.encode(), calls
            return "application/xml; charset=utf-8", xml_error(
                MoodleException(type(e).__name__, "", str(e))).encode(), calls
        if fmt == "json":
            return "application/json", php_json_encode(result).encode(), calls
        if fname == "core_webservice_get_site_info":
            result = Moodle.xml_site_info(result)
        has_desc = fname != "enrol_manual_enrol_users"
        return "application/xml; charset=utf-8", xml_response(result, has_desc).encode(), calls


# ---------------------------------------------------------------------------
# HTTP plumbing
# ---------------------------------------------------------------------------

CAPTIVE_PORTAL_HTML = b"""<!DOCTYPE html>
<html><head><title>Welcome to the school network</title>
<meta http-equiv="refresh" content="0; url=http://portal.example.invalid/login"></head>
<body><h1>Sign in to the school Wi-Fi</h1>
<p>Please accept the terms of use to access the Internet.</p>
<form method="post" action="http://portal.example.invalid/login"><button>Accept</button></form>
</body></html>
"""

STATUS_TEXT = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
               503: "Service Unavailable", 504: "Gateway Timeout", 404: "Not Found"}


def _status_page(code):
    text = STATUS_TEXT.get(code, "Error")
    return (f'<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n<title>{code} {text}</title>\n'
            f"</head><body>\n<h1>{text}</h1>\n<p>The server is temporarily unable to service your request.</p>\n"
            "</body></html>\n").encode()


class _Counting:
    """A file wrapper that adds the bytes read or written to a counter."""

    def __init__(self, raw, wire: dict, key: str):
        self._raw, self._wire, self._key = raw, wire, key

    def read(self, *args):
        data = self._raw.read(*args)
        self._wire[self._key] += len(data)
        return data

    def readline(self, *args):
        data = self._raw.readline(*args)
        self._wire[self._key] += len(data)
        return data

    def write(self, data):
        self._wire[self._key] += len(data)
        return self._raw.write(data)

    def __getattr__(self, name):
        return getattr(self._raw, name)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Apache"
    sys_version = ""
    timeout = 120
    wbufsize = 256 * 1024     # headers and body leave in one write (no Nagle/delayed-ACK stall)

    def setup(self):
        sock = self.request
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if isinstance(sock, ssl.SSLSocket):
            sock.settimeout(30)
            try:
                sock.do_handshake()
            except (ssl.SSLError, OSError):
                self.server.sim.stats.add(connections=1)
                raise
        super().setup()
        self.connection.settimeout(self.server.sim.keepalive_timeout)   # KeepAliveTimeout
        self._wire = {"in": 0, "out": 0, "count": False}
        self.rfile = _Counting(self.rfile, self._wire, "in")
        self.wfile = _Counting(self.wfile, self._wire, "out")
        self.server.sim.stats.add(connections=1)
        self.server.sim._track(self.connection, True)
        self._clock_offset = 0

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.sim._track(self.connection, False)

    def log_message(self, fmt, *args):
        if self.server.sim.verbose:
            sys.stderr.write("moodle-simulator: %s - %s\n" % (self.address_string(), fmt % args))

    def version_string(self):
        return self.server_version

    def date_time_string(self, timestamp=None):
        if timestamp is None:
            timestamp = time.time()
        return email.utils.formatdate(timestamp + getattr(self, "_clock_offset", 0), usegmt=True)

    def handle_one_request(self):
        # Bytes are counted at the socket, request line and headers included,
        # so the agent's own count of bytes on the wire can be checked.
        self._wire.update({"in": 0, "out": 0, "count": False})
        try:
            super().handle_one_request()
        except (ConnectionError, ssl.SSLError, socket.timeout, TimeoutError):
            self.close_connection = True
        finally:
            if self._wire["count"]:
                self.server.sim.stats.add(bytes_in=self._wire["in"], bytes_out=self._wire["out"])

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, status, ctype, body: bytes, extra=(), partial=None):
        self.send_response(status)
        self._served = getattr(self, "_served", 0) + 1
        limit = self.server.sim.max_keepalive_requests
        if limit and self._served >= limit and not self.close_connection:
            self.send_header("Connection", "close")      # MaxKeepAliveRequests reached
            self.close_connection = True
        for k, v in extra:
            self.send_header(k, v)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        out = body if partial is None else body[:partial]
        if self.command != "HEAD":
            self.wfile.write(out)
        self.wfile.flush()

    def _send_status_fault(self, f):
        self.server.sim.stats.count("faults_fired", f"status_{f['status']}")
        extra = [("Retry-After", str(int(f["retry_after"])))] if f["retry_after"] is not None else []
        self._send(f["status"], "text/html; charset=iso-8859-1", _status_page(f["status"]), extra)

    def _reset_connection(self):
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True

    def _dispatch(self, method):
        sim = self.server.sim
        self._clock_offset = 0
        url = urlsplit(self.path)
        body = self._read_body()
        if url.path.startswith(CONTROL_PREFIX):
            sim.stats.add(control_requests=1)
            return self._control(method, url.path, body, url.query)
        stats = sim.stats
        self._wire["count"] = True
        stats.add(requests=1)
        f = sim.faults.take()
        self._clock_offset = f["clock_offset_s"]
        if f["latency_ms"]:
            time.sleep(f["latency_ms"] / 1000.0)
        if f["reset"] and not f["reset_after_processing"]:
            stats.count("faults_fired", "reset_after_requests")
            return self._reset_connection()
        if f["captive_portal"] and not f["reset"]:
            stats.count("faults_fired", "captive_portal")
            return self._send(200, "text/html; charset=utf-8", CAPTIVE_PORTAL_HTML,
                              [("Cache-Control", "no-cache")])
        if f["redirect"] and not f["reset"]:
            stats.count("faults_fired", "redirect")
            target = f["redirect"] if isinstance(f["redirect"], str) else "http://portal.example.invalid/login"
            return self._send(302, "text/html; charset=utf-8",
                              b"<html><body>Redirecting to the login portal</body></html>\n",
                              [("Location", target), ("Cache-Control", "no-cache")])
        if f["status"] and not f["status_after_processing"]:
            return self._send_status_fault(f)
        if url.path != WS_PATH:
            return self._send(404, "text/html; charset=iso-8859-1", _status_page(404))
        ctype, payload, calls = sim.ws.handle(method if method != "HEAD" else "GET", url.query, body,
                                              self.headers.get("Content-Type", ""))
        cost = (sim.faults.request_cost_ms or 0) + (sim.faults.call_cost_ms or 0) * sum(
            1 for c in calls if c != "tool_mobile_call_external_functions")
        if cost:
            time.sleep(cost / 1000.0)
        if f["reset"]:
            stats.count("faults_fired", "reset_after_requests")
            return self._reset_connection()
        if f["status"]:            # status_after_processing: e.g. a proxy timed out, the write went through
            return self._send_status_fault(f)
        headers = [("Cache-Control", "private, must-revalidate, pre-check=0, post-check=0, max-age=0"),
                   ("Expires", "Thu, 01 Jan 1970 00:00:00 GMT"), ("Pragma", "no-cache"),
                   ("Accept-Ranges", "none"), ("Access-Control-Allow-Origin", "*")]
        if ctype.startswith("application/xml"):
            headers.insert(0, ("Content-Disposition", 'inline; filename="response.xml"'))
        if f["mid_response"]:
            stats.count("faults_fired", "reset_mid_response")
            self._send(200, ctype, payload, headers, partial=len(payload) // 2)
            return self._reset_connection()
        if f["truncated"]:
            stats.count("faults_fired", "truncated_json")
            payload = payload[:max(1, len(payload) // 2)]
        self._send(200, ctype, payload, headers)

    # -- /__sim/ control endpoints --------------------------------------------------------
    def _control(self, method, path, body, url_query=""):
        sim = self.server.sim
        name = path[len(CONTROL_PREFIX):].strip("/")
        try:
            data = json.loads(body.decode("utf-8")) if body.strip() else {}
            if not isinstance(data, dict):
                raise ValueError("the JSON body must be an object")
            if method in ("GET", "HEAD") and name == "state":
                q = dict(parse_qsl(url_query))
                result = sim.state.dump(only=q["only"].split(",") if q.get("only") else None,
                                        userid=int(q["userid"]) if q.get("userid") else None,
                                        courseid=int(q["courseid"]) if q.get("courseid") else None)
            elif method in ("GET", "HEAD") and name == "stats":
                result = sim.stats.snapshot()
            elif method in ("GET", "HEAD") and name == "faults":
                result = sim.faults.snapshot()
            elif method == "POST" and name == "faults":
                if data.pop("clear", False):
                    sim.faults.clear()
                result = sim.faults.set(**data)
            elif method == "POST" and name == "reset":
                sim.reset(seed=data.get("seed", True))
                result = {"ok": True}
            elif method == "POST" and name == "stats/reset":
                sim.stats.reset()
                result = {"ok": True}
            elif method == "POST" and name == "edit":
                result = sim.state.apply_edit(data)
            elif method == "POST" and name == "forget":
                result = sim.state.forget(**data)
            elif method == "POST" and name == "clock":
                sim.state.set_clock(data.get("now"))
                result = {"now": sim.state.now(), "frozen": data.get("now") is not None}
            else:
                return self._send(404, "application/json", b'{"error":"unknown control endpoint"}')
        except (ValueError, TypeError, KeyError) as e:
            msg = json.dumps({"error": f"{type(e).__name__}: {e}"}).encode()
            return self._send(400, "application/json", msg)
        self._send(200, "application/json", json.dumps(result).encode())


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        if self.sim.verbose:
            super().handle_error(request, client_address)


class SimServer:
    """A running simulator: ``url``, ``state``, ``faults``, ``stats``, ``stop()``."""

    def __init__(self, host="127.0.0.1", port=0, token="TOKEN", *, request_cost_ms=0, call_cost_ms=0,
                 seed=True, without_functions=(), wwwroot=None, tls_cert=None, tls_key=None, debug=False,
                 max_input_vars=5000, post_max_size=8 * 1024 * 1024, keepalive_timeout=5.0,
                 max_keepalive_requests=100, verbose=False):
        if not token:
            raise ValueError("a token is required")
        self.verbose = verbose
        self.token = token
        self.keepalive_timeout = keepalive_timeout
        self.max_keepalive_requests = max_keepalive_requests
        self._conns = set()
        self._conns_lock = threading.Lock()
        service = [(n, v) for n, v in SERVICE_FUNCTIONS if n not in set(without_functions)]
        self._seed = seed
        self.httpd = _HTTPServer((host, port), _Handler, bind_and_activate=True)
        self.httpd.sim = self
        self.scheme = "http"
        if tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls_cert, tls_key)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True,
                                                do_handshake_on_connect=False)
            self.scheme = "https"
        self.host, self.port = self.httpd.server_address[:2]
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "") else ("[::1]" if self.host == "::" else self.host)
        self.url = f"{self.scheme}://{shown}:{self.port}"
        self.wwwroot = (wwwroot or self.url).rstrip("/")
        self.state = Moodle(seed=seed, wwwroot=self.wwwroot, service_functions=service)
        self.faults = Faults(request_cost_ms=request_cost_ms, call_cost_ms=call_cost_ms, debug=debug)
        self.state.clock_offset = lambda: self.faults.clock_offset_s   # a skewed server stamps its own time
        self.stats = Stats()
        self.ws = WebService(self.state, token, self.faults, self.stats, max_input_vars, post_max_size)
        self._thread = None

    def _track(self, conn, add):
        with self._conns_lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def reset(self, seed=None):
        """Back to the seed data, default fault switches and zeroed statistics."""
        self.state.reset(seed=self._seed if seed is None else seed)
        self.state.set_clock(None)
        self.faults.clear()
        self.stats.reset()

    def start(self):
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="moodle-simulator", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self):
        self.httpd.serve_forever(poll_interval=0.2)

    def stop(self):
        try:
            self.httpd.shutdown() if self._thread else None
        finally:
            with self._conns_lock:
                conns = list(self._conns)
            for c in conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.httpd.server_close()
            if self._thread:
                self._thread.join(timeout=5)
                self._thread = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_simulator(host="127.0.0.1", port=0, token="TOKEN", **options) -> SimServer:
    """Start a simulator in a background thread (port 0 picks a free port)."""
    return SimServer(host, port, token, **options).start()


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(prog="moodle-simulator",
                                 description="Simulated Moodle 4.5 Web Services REST server.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--token", required=True, help="the web service token clients must send")
    ap.add_argument("--request-cost-ms", type=float, default=0, help="simulated cost of each HTTP request")
    ap.add_argument("--call-cost-ms", type=float, default=0, help="simulated cost of each function call")
    ap.add_argument("--realistic-costs", action="store_true",
                    help=f"use {REALISTIC_REQUEST_COST_MS} ms per request + {REALISTIC_CALL_COST_MS} ms per call")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--no-seed", action="store_true", help="start with only the site and the admin")
    ap.add_argument("--without-function", action="append", default=[], metavar="NAME",
                    help="leave a function out of the token's service (repeatable)")
    ap.add_argument("--wwwroot", help="site URL to report (default: the simulator's own URL)")
    ap.add_argument("--debug-developer", action="store_true", help="add debuginfo to errors")
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = ap.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    req_cost, call_cost = args.request_cost_ms, args.call_cost_ms
    if args.realistic_costs:
        req_cost, call_cost = REALISTIC_REQUEST_COST_MS, REALISTIC_CALL_COST_MS
    try:
        sim = SimServer(args.host, args.port, args.token, request_cost_ms=req_cost, call_cost_ms=call_cost,
                        seed=not args.no_seed, without_functions=args.without_function, wwwroot=args.wwwroot,
                        tls_cert=args.tls_cert, tls_key=args.tls_key, debug=args.debug_developer,
                        verbose=args.verbose)
    except OSError as e:
        print(f"moodle-simulator: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1

    def on_term(signum, frame):
        threading.Thread(target=sim.httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    print(f"moodle-simulator ready on {sim.url} (token set)", flush=True)
    try:
        sim.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
