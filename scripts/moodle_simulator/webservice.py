"""core_webservice and the REST server: token, function look-up, parameters, JSON or XML answers.

This is webservice/rest/server.php without the HTTP plumbing (server.py):
it takes a request's method, query string and body, and gives back the
answer's content type and bytes.
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from . import completion, course, enrol, grades, user
from .config import (ADMIN_ID, ADVANCED_FEATURES, BATCH_FUNCTION, OTHER_MOODLE_FUNCTIONS, PRIVATE_ACCESS_KEY,
                     RELEASE, SITENAME, VERSION)
from .errors import MoodleException, access_exception, invalid_parameter, invalid_token, missing_record, \
    simulated_error
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
    return {
        "sitename": SITENAME, "username": u.username, "firstname": u.firstname,
        "lastname": u.lastname, "fullname": f"{u.firstname} {u.lastname}", "lang": "en",
        "userid": userid, "siteurl": site.wwwroot, "userpictureurl": site.picture_url("f1"),
        "functions": [{"name": n, "version": v} for n, v in site.service.items()],
        "downloadfiles": 1, "uploadfiles": 1, "release": RELEASE, "version": VERSION,
        "mobilecssurl": "",
        "advancedfeatures": [{"name": n, "value": v} for n, v in ADVANCED_FEATURES],
        "usercanmanageownfiles": True, "userquota": 0, "usermaxuploadfilesize": -1,
        "userhomepage": 1, "userprivateaccesskey": PRIVATE_ACCESS_KEY, "siteid": 1,
        "sitecalendartype": "gregorian", "usercalendartype": "gregorian",
        "userissiteadmin": userid == ADMIN_ID, "theme": "boost", "limitconcurrentlogins": 0,
        "policyagreed": 0,
    }


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


FUNCTIONS = {
    "core_webservice_get_site_info": external(
        get_site_info, {"serviceshortnames": Multiple(Value("alphanumext"), DEFAULT, [])},
        xml_form=_site_info_xml),
    **course.FUNCTIONS, **user.FUNCTIONS, **enrol.FUNCTIONS, **completion.FUNCTIONS, **grades.FUNCTIONS,
}
JSON, XML = "application/json", "application/xml; charset=utf-8"


class WebService:
    def __init__(self, state: Site, token: str, faults: Faults, stats: Stats,
                 max_input_vars: int = 5000, post_max_size: int = 8 * 1024 * 1024):
        self.state = state
        self.token = token
        self.faults = faults
        self.stats = stats
        self.max_input_vars = max_input_vars
        self.post_max_size = post_max_size

    def call(self, fname: str, params: Any, userid: int, calls: list) -> Any:
        """external_api::call_external_function for one function; returns its result.

        ``calls`` gets [function, answer] for each call, the batch's entries
        included (answer None if it failed): what the cost model charges."""
        call = [fname, None]
        calls.append(call)
        self.stats.count("calls", fname)
        fail = self.faults.fail_function
        spec = fail.get(fname) if isinstance(fail, dict) else None
        if spec is not None:
            self.stats.count("faults_fired", "fail_function")
            raise simulated_error(spec)
        if fname == BATCH_FUNCTION:
            answer = call_external_functions(self, validate_parameters(BATCH_PARAMS, params), userid, calls)
        else:
            function = FUNCTIONS[fname]
            clean = validate_parameters(function.params, params)
            with self.state.lock:
                answer = function.execute(self.state, clean, userid)
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
            if not isinstance(token, str) or token != self.token or self.faults.reject_token:
                raise invalid_token()
            userid = ADMIN_ID
            if not fname:
                raise invalid_parameter("Missing function name")
            if not isinstance(fname, str) or not (fname in FUNCTIONS or fname == BATCH_FUNCTION
                                                  or fname in OTHER_MOODLE_FUNCTIONS):
                raise missing_record("external_functions",
                                     "SELECT * FROM {external_functions} WHERE name = ?", [php_str(fname)])
            if fname not in self.state.service:
                raise access_exception(fname)
            result = self.call(fname, variables, userid, calls)
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
