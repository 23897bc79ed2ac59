"""Accounts: passwords and Moodle's password policy, external services, tokens and login/token.php.

Recordings 80-85 and 89-93 (tests/recordings/README.md, facts 10-12):
``/login/token.php`` answers errors as HTTP 200 objects
``{"error", "errorcode", "stacktrace", "debuginfo", "reproductionlink"}``
(not the REST server's shape); a token is bound to its user and its
service; an existing token is returned again; the password policy is
enforced by core_user_create_users and core_user_update_users.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from email.utils import formatdate
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from .config import ADMIN_ID
from .errors import MoodleException, moodle_exception
from .params import clean_param, parse_php_form
from .php import php_json_encode
from .state import Record

if TYPE_CHECKING:
    from .state import Site

LOGIN_PATH = "/login/token.php"
MOBILE_SERVICE = "moodle_mobile_app"      # MOODLE_OFFICIAL_MOBILE_SERVICE
SYNC_SERVICE = "moodle_sync_agent"        # the custom service of packaging/moodle/README.md
# Throwaway passwords of the seeded accounts (they meet the default policy).  Only the simulator knows them.
ADMIN_PASSWORD = "Admin#Sim2026"
LEARNER_PASSWORD = "Learner#Sim2026"      # student1..student5
SYNC_USERNAME = "syncagent"
SYNC_PASSWORD = "Sync#Agent2026"

# check_password_policy() with the default policy: the strings of lang/en/auth.php, in Moodle's order.
_POLICY = [
    (lambda p: len(p) >= 8, "Passwords must be at least 8 characters long."),
    (lambda p: re.search(r"[0-9]", p) is not None, "Passwords must have at least 1 digit(s)."),
    (lambda p: re.search(r"[a-z]", p) is not None, "Passwords must have at least 1 lower case letter(s)."),
    (lambda p: re.search(r"[A-Z]", p) is not None, "Passwords must have at least 1 upper case letter(s)."),
    (lambda p: re.search(r"[^a-zA-Z0-9]", p) is not None,
     "The password must have at least 1 special character(s) such as *, -, or #."),
]
_ITERATIONS = 1000        # a simulator: cheap on purpose, the point is that no clear text is kept


def password_policy_text(password: str) -> str:
    """The policy's error text (one <div> per broken rule), "" when the password meets it."""
    return "".join(f"<div>{msg}</div>" for ok, msg in _POLICY if not ok(password))


def policy_exception(text: str) -> MoodleException:
    """moodle_exception($errmsg): the text is the error code, so the message is a missing string (93_)."""
    return moodle_exception(text, f"error/{text}")


def hash_password(password: str) -> str:
    salt = secrets.token_hex(8)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), _ITERATIONS).hex()
    return f"pbkdf2_sha256${_ITERATIONS}${salt}${digest}"


def check_password(stored: str | None, password: str) -> bool:
    """validate_internal_user_password(): no hash (createpassword, not set yet) never matches."""
    if not stored or not isinstance(password, str):
        return False
    try:
        _, iterations, salt, digest = stored.split("$")
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), int(iterations)).hex()
    except ValueError:
        return False
    return hmac.compare_digest(got, digest)


def new_token() -> str:
    """md5(uniqid(rand(), true)): 32 lower-case hex digits."""
    return secrets.token_hex(16)


def make_service(shortname: str, name: str, functions: dict[str, str], enabled: bool = True) -> Record:
    return Record(shortname=shortname, name=name, functions=functions, enabled=enabled)


def token_error(errorcode: str, message: str) -> dict:
    return {"error": message, "errorcode": errorcode, "stacktrace": None, "debuginfo": None,
            "reproductionlink": None}


def _login_error(errorcode: str, message: str) -> MoodleException:
    return moodle_exception(errorcode, message, module="webservice")


def login_headers(now: int) -> list[tuple[str, str]]:
    """What login/token.php sends besides Content-Type and Content-Length (80_)."""
    return [("Cache-Control", "no-store, no-cache, must-revalidate"), ("Expires", "Mon, 20 Aug 1969 09:23:00 GMT"),
            ("Pragma", "no-cache"), ("Accept-Ranges", "none"), ("Access-Control-Allow-Origin", "*"),
            ("Last-Modified", formatdate(now, usegmt=True))]


def login_variables(query: str, body: bytes, content_type: str) -> dict:
    variables = parse_php_form(parse_qsl(query, keep_blank_values=True), 5000)
    if body and (content_type or "").split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        variables.update(parse_php_form(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True), 5000))
    return variables


def _required(variables: dict, name: str, ptype: str) -> Any:
    value = variables.get(name)
    if value is None or isinstance(value, (dict, list)):
        raise moodle_exception("missingparam", f"A required parameter ({name}) was missing")
    return clean_param(value, ptype)


def issue_token(site: Site, variables: dict, https: bool) -> dict:
    """login/token.php: the token of (user, service), made on the spot when the user may (fact 10)."""
    from .access import has_capability, is_admin   # access imports this module's neighbours
    username = _required(variables, "username", "username")
    password = variables.get("password")
    if password is None or isinstance(password, (dict, list)):
        raise moodle_exception("missingparam", "A required parameter (password) was missing")
    shortname = _required(variables, "service", "alphanumext")
    uid = site.user_id(str(username).strip().lower())
    u = site.user(uid) if uid is not None else None
    # authenticate_user_login(): unknown, deleted, suspended, nologin or a wrong password all fail alike.
    if u is None or u.hidden or u.suspended or u.auth == "nologin" or not check_password(u.get("password"), password):
        raise moodle_exception("invalidlogin", "Invalid login, please try again")
    service = site.services.get(shortname)
    if service is None or not service.enabled:
        raise _login_error("servicenotavailable",
                           "Web service is not available. (It doesn't exist or might be disabled.)")
    existing = [t for t, owner in site.tokens.items() if owner == (u.id, shortname)]
    if existing:
        token = existing[-1]
    elif (shortname == MOBILE_SERVICE and has_capability(site, "moodle/webservice:createmobiletoken", u.id)) or (
            not is_admin(u.id) and has_capability(site, "moodle/webservice:createtoken", u.id)):
        token = new_token()
        site.tokens[token] = (u.id, shortname)
    else:
        raise _login_error("cannotcreatetoken",
                           f"No permission to create web service token for the service {shortname}.")
    # The private token only goes over https, and never to a site admin.
    private = secrets.token_hex(32) if https and not is_admin(u.id) else None
    return {"token": token, "privatetoken": private}


def login(site: Site, query: str, body: bytes, content_type: str, https: bool = False) -> bytes:
    """The JSON body login/token.php answers (always HTTP 200)."""
    variables = login_variables(query, body, content_type)
    try:
        with site.lock:
            answer = issue_token(site, variables, https)
    except MoodleException as e:
        answer = token_error(e.errorcode, e.message)
    return php_json_encode(answer).encode()


# The simulated functions the mobile service (moodle_mobile_app) holds, with their versions (88_).
MOBILE_FUNCTIONS = {name: version for version, names in (
    ("2024100706", "core_webservice_get_site_info core_course_get_courses_by_field core_course_get_contents "
                   "core_user_get_users_by_field core_enrol_get_enrolled_users core_enrol_get_users_courses "
                   "core_completion_get_activities_completion_status "
                   "core_completion_update_activity_completion_status_manually core_grades_get_gradeitems "
                   "core_user_get_course_user_profiles core_completion_get_course_completion_status "
                   "core_badges_get_user_badges core_files_get_files"),
    ("2024100700", "gradereport_user_get_grade_items tool_mobile_call_external_functions mod_assign_save_grades "
                   "mod_assign_get_grades")) for name in names.split()}


def seed_accounts(site: Site, box: bool, sync_account: bool, sync_without: tuple[str, ...] = ()) -> None:
    """Passwords of the seeded accounts, the two services, the preset roles and (on request) the sync account."""
    from . import rights
    site.services = {
        SYNC_SERVICE: make_service(SYNC_SERVICE, "Moodle sync agent", site.service),
        MOBILE_SERVICE: make_service(MOBILE_SERVICE, "Moodle mobile web service", dict(MOBILE_FUNCTIONS),
                                     enabled=site.mobile_services),
    }
    if site.admin_token:        # made by hand in Site administration: login/token.php hands it out again
        site.tokens[site.admin_token] = (ADMIN_ID, SYNC_SERVICE)
    for uid in site.user_ids():
        u = site.users.get(uid)
        if u is not None and u.username == "admin":
            u["password"] = hash_password(ADMIN_PASSWORD)
        elif u is not None and re.fullmatch(r"student[1-5]", u.username):
            u["password"] = hash_password(LEARNER_PASSWORD)
    if not sync_account:
        return
    presets = rights.BOX_PRESETS if box else rights.SERVER_PRESETS
    uid = site.next_id("user")
    site.add_user_record(uid, SYNC_USERNAME, "Sync", "Agent", f"{SYNC_USERNAME}@example.invalid", "",
                         password=hash_password(SYNC_PASSWORD))
    categories = sorted({c.categoryid for c in site.courses.values() if c.categoryid})
    for filename, level in presets:
        role = rights.define_role(site, rights.load_preset(filename))
        for instance in categories if level == "coursecat" else [0]:
            rights.assign_role(site, uid, role.shortname, level, instance)
    for capability in sync_without:
        if capability not in rights.OPTIONAL_CAPABILITIES:
            raise ValueError(f"sync_without: {capability!r} is not an optional capability "
                             f"(optional: {', '.join(sorted(rights.OPTIONAL_CAPABILITIES))})")
        rights.remove_capability(site, capability)
