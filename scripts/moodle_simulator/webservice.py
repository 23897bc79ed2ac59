"""core_webservice and the REST server: token, function look-up, parameters, JSON or XML answers.

This is webservice/rest/server.php without the HTTP plumbing (server.py):
it takes a request's method, query string and body, and gives back the
answer's content type and bytes.
"""

from __future__ import annotations

import hashlib
import threading
import traceback
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from . import assign, badges, hostile, completion, course, coursecompletion, enrol, grades, user
from .access import has_capability, is_admin, not_simulated
from .accounts import SYNC_SERVICE
from .config import (ADMIN_ID, ADVANCED_FEATURES, BATCH_FUNCTION, OTHER_MOODLE_FUNCTIONS, PRIVATE_ACCESS_KEY,
                     RELEASE, USER_MAX_UPLOAD_FILE_SIZE, USER_QUOTA, VERSION)
from .errors import MoodleException, access_exception, invalid_parameter, invalid_token, missing_record, \
    moodle_exception, simulated_error
from .params import DEFAULT, Multiple, Value, external, parse_php_form, validate_parameters
from .php import php_json_encode, php_str
from .state import Site
from .tool_mobile import BATCH_PARAMS, call_external_functions
from .xml_output import xml_error, xml_response

if TYPE_CHECKING:
    from .faults import Faults
    from .stats import Stats


def get_site_info(site: Site, p: dict, userid: int) -> dict:
    u = site.user_or_fail(userid)
    admin = is_admin(userid)
    service = site.acting_service if site.acting_service is not None else site.service   # the token's
    return {
        "sitename": site.name.fullname, "username": u.username, "firstname": u.firstname,
        "lastname": u.lastname, "fullname": f"{u.firstname} {u.lastname}", "lang": "en",
        "userid": userid, "siteurl": site.wwwroot, "userpictureurl": site.picture_url("f1"),
        "functions": [{"name": n, "version": v} for n, v in service.items()],
        "downloadfiles": 1, "uploadfiles": 1, "release": RELEASE, "version": VERSION,
        "mobilecssurl": "",
        "advancedfeatures": [{"name": n, "value": v} for n, v in ADVANCED_FEATURES],
        "usercanmanageownfiles": True, "userquota": 0 if admin else USER_QUOTA,
        "usermaxuploadfilesize": -1 if admin else USER_MAX_UPLOAD_FILE_SIZE,
        "userhomepage": 1, "userprivateaccesskey": PRIVATE_ACCESS_KEY if admin else _user_key(u.username),
        "siteid": 1, "sitecalendartype": "gregorian", "usercalendartype": "gregorian",
        "userissiteadmin": admin, "theme": "boost", "limitconcurrentlogins": 0,
        "policyagreed": 0,
    }


def _user_key(username: str) -> str:
    """get_user_key('core_files', ...): 32 hex digits of the user's own (here: derived, stable)."""
    return hashlib.md5(f"{PRIVATE_ACCESS_KEY}:{username}".encode()).hexdigest()


def _site_info_xml(result: dict) -> dict:
    """The XML form lists the optional keys json_encode leaves out."""
    out = {}
    for k, v in result.items():
        out[k] = v
        if k == "userhomepage":
            out["userhomepageurl"] = None
        if k == "limitconcurrentlogins":
            out["usersessionscount"] = None
    return out


def _refused(errorcode: str, what: str, username: str) -> MoodleException:
    return moodle_exception(errorcode, f"Refused web service access for {what} username: {username}",
                            module="webservice")


FUNCTIONS = {
    "core_webservice_get_site_info": external(
        get_site_info, {"serviceshortnames": Multiple(Value("alphanumext"), DEFAULT, [])},
        xml_form=_site_info_xml, any_user=True),
    **course.FUNCTIONS, **user.FUNCTIONS, **enrol.FUNCTIONS, **completion.FUNCTIONS, **grades.FUNCTIONS,
    **coursecompletion.FUNCTIONS, **badges.FUNCTIONS, **assign.FUNCTIONS,
}
JSON, XML = "application/json", "application/xml; charset=utf-8"
# Functions whose answers follow the caller's capabilities for a user with preset roles (rights.py) too,
# not only for the admin: the reads the sync account makes.
ROLE_AWARE = frozenset({"core_course_get_courses_by_field", "core_course_get_contents", "core_user_get_users_by_field",
                        "core_enrol_get_enrolled_users", "core_user_get_course_user_profiles",
                        "core_completion_get_course_completion_status", "core_badges_get_user_badges"})


def _rest_refused() -> MoodleException:
    """webservice_server::authenticate_user() without webservice/rest:use (86_)."""
    return MoodleException("webservice_access_exception", "accessexception", "Access control exception",
                           "You are not allowed to use the {$a} protocol (missing capability: webservice/rest:use)",
                           module="webservice")


def _holds(params: Any, when: dict) -> bool:
    """fail_function's ``when``: some record in the call's parameters has these values (compared as text):
    {"studentid": 4} fails only the update_grades calls that grade user 4."""
    if isinstance(params, dict):
        if all(k in params and str(params[k]) == str(v) for k, v in when.items()):
            return True
        return any(_holds(v, when) for v in params.values())
    if isinstance(params, list):
        return any(_holds(v, when) for v in params)
    return False


class WebService:
    def __init__(self, state: Site, token: str, faults: Faults, stats: Stats,
                 max_input_vars: int = 5000, post_max_size: int = 8 * 1024 * 1024):
        self.state = state
        self.token = token
        self.faults = faults
        self.stats = stats
        self.max_input_vars = max_input_vars
        self.post_max_size = post_max_size
        self.user_tokens: dict[str, int] = {}     # token -> userid: tokens of users other than the admin
        # (token_for's, for the sync service; login/token.php's are the site's: state.tokens)
        self._tokens_lock = threading.Lock()

    def token_for(self, username: str) -> str:
        """A web service token of the user for the same service (the admin's is the one the site started with)."""
        with self.state.lock:
            uid = self.state.user_id(username) if isinstance(username, str) else None
            u = self.state.user(uid) if uid is not None else None
            if u is None or u.hidden:
                raise ValueError(f"username: no user {username!r}")
        if u.id == ADMIN_ID:
            return self.token
        token = hashlib.md5(f"{self.token}:{u.id}".encode()).hexdigest()   # the same again after a reset
        with self._tokens_lock:
            self.user_tokens[token] = u.id
        return token

    def token_user(self, token: Any) -> int:
        """The token's user (see token_owner)."""
        return self.token_owner(token)[0]

    def token_owner(self, token: Any) -> tuple[int, dict]:
        """webservice_server::authenticate_by_token(): the token's user, who must be able to log in,
        and the functions of the token's service."""
        if not isinstance(token, str) or self.faults.reject_token:
            raise invalid_token()
        if token == self.token:
            return ADMIN_ID, self.state.service
        with self._tokens_lock:
            uid = self.user_tokens.get(token)
        with self.state.lock:
            shortname = SYNC_SERVICE
            if uid is None and token in self.state.tokens:
                uid, shortname = self.state.tokens[token]
            service = self.state.services.get(shortname)
            if service is None or not service.enabled:
                raise invalid_token()     # the service's tokens go with it (and are refused while it is off)
            u = self.state.user(uid) if uid is not None else None
            if u is None or u.hidden:      # a deleted user's tokens go with the account
                raise invalid_token()
            if u.suspended:
                raise _refused("wsaccessusersuspended", "suspended", u.username)
            if u.auth == "nologin":
                raise _refused("wsaccessusernologin", "nologin authentication", u.username)
            return u.id, service.functions

    def call(self, fname: str, params: Any, userid: int, calls: list, service: dict | None = None) -> Any:
        """external_api::call_external_function for one function; returns its result.

        ``calls`` gets [function, answer, parameters] for each call, the batch's entries
        included (answer None if it failed): what the cost model charges."""
        call: list = [fname, None, None]       # function, answer, parameters (the cost model's)
        calls.append(call)
        self.stats.count("calls", fname)
        fail = self.faults.fail_function
        spec = fail.get(fname) if isinstance(fail, dict) else None
        if spec is not None and not (isinstance(spec, dict) and "when" in spec and not _holds(params, spec["when"])):
            self.stats.count("faults_fired", "fail_function")
            raise simulated_error(spec)
        if fname == BATCH_FUNCTION:
            answer = call_external_functions(self, validate_parameters(BATCH_PARAMS, params), userid, calls,
                                             service)
        else:
            function = FUNCTIONS.get(fname)
            if function is None:        # in the mobile service, not simulated here
                raise not_simulated(fname)
            clean = validate_parameters(function.params, params)
            with self.state.lock:
                if not (function.any_user or is_admin(userid) or (
                        fname in ROLE_AWARE and any(a[0] == userid for a in self.state.role_assignments))):
                    raise not_simulated(fname)
                self.state.acting_service = service
                try:
                    answer = function.execute(self.state, clean, userid)
                finally:
                    self.state.acting_service = None
                grade_switch, user_switch = self.faults.hostile_grade, self.faults.hostile_user
                if (grade_switch or user_switch) and hostile.corrupt(self.state, fname, answer, grade_switch,
                                                                     user_switch):
                    self.stats.count("faults_fired", "hostile")
            call[2] = clean         # a call that succeeded: what it was asked to write is charged
        call[1] = answer
        return answer

    def _variables(self, method: str, query: str, body: bytes, content_type: str) -> dict:
        """$_GET and $_POST merged; Moodle ignores a JSON body (recordings 52, 53)."""
        limit = self.max_input_vars
        variables = parse_php_form(parse_qsl(query, keep_blank_values=True), limit)
        if method == "POST" and body and (content_type or "").split(";")[0].strip().lower() \
                == "application/x-www-form-urlencoded" and len(body) <= self.post_max_size:
            variables.update(parse_php_form(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True),
                                            limit))
        for k in [k for k in variables if k.startswith("moodlewssetting")]:
            del variables[k]
        return variables

    def handle(self, method: str, query: str, body: bytes, content_type: str) -> tuple[str, bytes, list]:
        """Serve one request to server.php.  Returns (content type, body bytes, [function, answer] calls)."""
        variables = self._variables(method, query, body, content_type)
        fmt = variables.pop("moodlewsrestformat", None)
        as_json = fmt == "json"
        token = variables.pop("wstoken", None)
        fname = variables.pop("wsfunction", None)
        calls: list = []
        debug = bool(self.faults.debug)
        try:
            userid, service = self.token_owner(token)
            if not is_admin(userid):
                with self.state.lock:
                    if not has_capability(self.state, "webservice/rest:use", userid):
                        raise _rest_refused()
            if not fname:
                raise invalid_parameter("Missing function name")
            if not isinstance(fname, str) or not (fname in FUNCTIONS or fname == BATCH_FUNCTION
                                                  or fname in OTHER_MOODLE_FUNCTIONS):
                raise missing_record("external_functions",
                                     "SELECT * FROM {external_functions} WHERE name = ?", [php_str(fname)])
            if fname not in service:
                raise access_exception(fname)
            result = self.call(fname, variables, userid, calls, service)
        except MoodleException as e:
            self.stats.count("errors", e.errorcode)
            if as_json:
                return JSON, php_json_encode(e.rest_object(debug)).encode(), calls
            return XML, xml_error(e, debug).encode(), calls
        except Exception as e:      # a simulator bug: answer like Moodle does for a PHP Error
            traceback.print_exc()
            self.stats.count("errors", "simulator_bug")
            if as_json:
                return JSON, php_json_encode({"exception": type(e).__name__, "message": str(e)}).encode(), calls
            return XML, xml_error(MoodleException(type(e).__name__, "", str(e))).encode(), calls
        if as_json:
            return JSON, php_json_encode(result).encode(), calls
        function = FUNCTIONS.get(fname)
        if function is not None and function.xml_form is not None:
            result = function.xml_form(result)
        has_returns = function is None or function.has_returns
        return XML, xml_response(result, has_returns).encode(), calls
