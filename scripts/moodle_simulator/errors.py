"""Moodle's exceptions, with the classes, error codes and messages Moodle 4.5 reports."""

from __future__ import annotations

from .config import DOCS
from .php import var_export_list

_ERROR_DOC_MODULE = {"error": "moodle"}


class MoodleException(Exception):
    def __init__(self, exception: str, errorcode: str, message: str, debuginfo: str | None = None,
                 module: str = "error", link: str | None = None):
        super().__init__(message)
        self.exception = exception
        self.errorcode = errorcode
        self.message = message
        self.debuginfo = debuginfo
        self.module = module
        self.link = link

    def rest_object(self, debug: bool = False) -> dict:
        obj = {"exception": self.exception, "errorcode": self.errorcode, "message": self.message}
        if debug and self.debuginfo is not None and self.errorcode != "invalidtoken":
            obj["debuginfo"] = self.debuginfo
        return obj

    def batch_object(self, wwwroot: str, debug: bool = False) -> dict:
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

    def __repr__(self) -> str:
        return f"MoodleException({self.errorcode!r}, {self.message!r})"


def invalid_parameter(debuginfo: str | None = None) -> MoodleException:
    return MoodleException("core\\exception\\invalid_parameter_exception", "invalidparameter",
                           "Invalid parameter value detected", debuginfo, module="debug")


def missing_record(table: str, sql: str, params: list) -> MoodleException:
    if table == "course_modules":
        code, msg = "invalidcoursemodule", "Invalid course module ID"
    elif table == "user":
        code, msg = "invaliduser", "Invalid user"
    else:
        code, msg = "invalidrecord", f"Can't find data record in database table {table}."
    return MoodleException("dml_missing_record_exception", code, msg,
                           f"{sql}\n[{var_export_list(params)}]")


def moodle_exception(errorcode: str, message: str, debuginfo: str | None = None, module: str = "error",
                     link: str | None = None) -> MoodleException:
    return MoodleException("core\\exception\\moodle_exception", errorcode, message, debuginfo, module, link)


def coding_exception(hint: str, debuginfo: str | None = None) -> MoodleException:
    return MoodleException("core\\exception\\coding_exception", "codingerror",
                           "Coding error detected, it must be fixed by a programmer: " + hint,
                           debuginfo, module="debug")


def invalid_token() -> MoodleException:
    return moodle_exception("invalidtoken", "Invalid token - token not found", module="webservice")


def access_exception(fname: str) -> MoodleException:
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


def simulated_error(spec: str | dict) -> MoodleException:
    """The error a fail_function switch asks for: an error code, or {errorcode, message, exception}."""
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
