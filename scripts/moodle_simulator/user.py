"""core_user: accounts (look-up, creation, update)."""

from __future__ import annotations

import re

from .access import has_capability, is_admin, require_capability, validate_course_context
from .accounts import hash_password, password_policy_text, policy_exception
from .config import AUTH_PLUGINS, LANGS, ROLES, THEMES
from .errors import MoodleException, coding_exception, invalid_parameter, moodle_exception
from .params import DEFAULT, OPTIONAL, Multiple, Single, Value, clean_param, external, opt, validate_email
from .php import php_str
from .state import Record, Site
from .xml_output import described


def check_password_policy(password: str) -> bool:
    """Moodle's default password policy."""
    return password_policy_text(password) == ""


# What user_get_user_details() shows a caller who is not the site admin, by capability (user/lib.php).
_NEEDS_ALL_DETAILS = ("username", "idnumber", "auth", "confirmed", "lang", "theme", "timezone", "mailformat")


def for_viewer(site: Site, viewer: int, u: Record, details: dict, courseid: int | None = None) -> dict | None:
    """The details as ``viewer`` may see them; None when Moodle skips the user (no moodle/user:viewdetails).

    Capabilities in the user's context come from system roles (a user context sits under the system one);
    with a course, the course context's count too.  $CFG->showuseridentity is Moodle's default, "email"."""
    if is_admin(viewer) or u.id == viewer:
        return details

    def can(capability: str) -> bool:
        return has_capability(site, capability, viewer) or (
            courseid is not None and has_capability(site, capability, viewer, courseid))
    if not can("moodle/user:viewdetails"):
        return None
    out = dict(details)
    hidden = set() if can("moodle/user:viewalldetails") else set(_NEEDS_ALL_DETAILS)
    if not can("moodle/site:viewfullnames"):
        hidden |= {"firstname", "lastname"}
    if not (can("moodle/site:viewuseridentity") or (
            courseid is not None and has_capability(site, "moodle/course:useremail", viewer, courseid))):
        hidden.add("email")
    return {k: v for k, v in out.items() if k not in hidden}


# user_get_default_fields(): what a userfields option may ask for.
USER_FIELDS = frozenset("""id username fullname firstname lastname email address phone1 phone2 department
institution interests firstaccess lastaccess auth confirmed idnumber lang theme timezone mailformat description
descriptionformat city country profileimageurlsmall profileimageurl customfields groups roles preferences
enrolledcourses suspended lastcourseaccess trackforums""".split())
# The answers list a user's fields in the order of the function's returns description
# (external_api::clean_returnvalue), whatever order user_get_user_details() made them in.
USER_DESCRIPTION = """id username firstname lastname fullname email address phone1 phone2 department institution
idnumber interests firstaccess lastaccess auth suspended confirmed lang calendartype theme timezone mailformat
trackforums description descriptionformat city country profileimageurlsmall profileimageurl customfields
preferences""".split()
COURSE_PROFILE = USER_DESCRIPTION + ["groups", "roles", "enrolledcourses"]
# The structures inside a user's description, for the XML form (xml_output.described).
_INNER = {
    "customfields": [dict.fromkeys(["type", "value", "name", "shortname"])],
    "groups": [dict.fromkeys(["id", "name", "description", "descriptionformat"])],
    "roles": [dict.fromkeys(["roleid", "name", "shortname", "sortorder"])],
    "preferences": [dict.fromkeys(["name", "value"])],
    "enrolledcourses": [dict.fromkeys(["id", "fullname", "shortname"])],
}


def users_description(keys: list[str]) -> list[dict]:
    """A list of users with these fields, as a returns description."""
    return [{k: _INNER.get(k) for k in keys}]


def ordered(details: dict, description: list[str]) -> dict:
    return {k: details[k] for k in description if k in details}


def course_roles(site: Site, courseid: int, uid: int) -> list[dict]:
    """get_user_roles() in the course: ordered by the roles' sortorder (the ids' order by default)."""
    e = site.enrolment(courseid, uid)
    return [{"roleid": r, "name": "", "shortname": ROLES.get(r, f"role{r}"), "sortorder": 0}
            for r in sorted(e.roles if e else ())]


# moodle/course:viewhiddencourses: manager, course creator, teachers (lib/db/access.php archetypes).
_SEE_HIDDEN_COURSES = {1, 2, 3, 4}


def enrolled_courses(site: Site, uid: int) -> list[Record]:
    """enrol_get_users_courses($userid, true): active enrolments only, a hidden course only for those
    who may see it, visible first, by sortorder."""
    mine = []
    for cid in site.user_course_ids(uid):
        c, e = site.courses.get(cid), site.enrolment(cid, uid)
        if c and e and site.is_active_enrolment(e) and (c.visible or _SEE_HIDDEN_COURSES & set(e.roles)):
            mine.append(c)
    return sorted(mine, key=lambda c: (-c.visible, c.sortorder))


def user_details(site: Site, u: Record, courseid: int | None = None, fields: list[str] | None = None) -> dict:
    """user_get_user_details() as the site admin gets it, with or without a course; ``fields``: userfields."""
    for name in fields or ():
        if name not in USER_FIELDS:
            raise moodle_exception("invaliduserfield", f"Invalid user field: {name}")
    wanted = {*fields, "id", "fullname"} if fields else USER_FIELDS
    d = {"id": u.id, "username": u.username, "firstname": u.firstname, "lastname": u.lastname,
         "fullname": f"{u.firstname} {u.lastname}", "email": u.email, "department": u.department,
         "firstaccess": u.firstaccess, "lastaccess": u.lastaccess, "auth": u.auth, "suspended": bool(u.suspended), "confirmed": True,
         "lang": u.lang, "theme": u.theme, "timezone": u.timezone, "mailformat": u.mailformat, "trackforums": 0}
    if "profileimageurlsmall" in wanted:
        d["profileimageurlsmall"] = site.picture_url("f2")
    if "profileimageurl" in wanted:
        d["profileimageurl"] = site.picture_url("f1")
    for name in ("idnumber", "institution", "city", "country"):   # only when set
        if u[name]:
            d[name] = u[name]
    if u.description:
        d["description"], d["descriptionformat"] = u.description, 1
    if courseid is not None:
        d["lastcourseaccess"] = site.last_course_access(u.id, courseid)   # user_lastaccess, 0 before
        if "roles" in wanted:
            d["roles"] = course_roles(site, courseid, u.id)
        mine = enrolled_courses(site, u.id) if "enrolledcourses" in wanted else []
        if mine:
            d["enrolledcourses"] = [{"id": c.id, "fullname": c.fullname, "shortname": c.shortname} for c in mine]
    if fields:
        wanted |= {"descriptionformat"} if "description" in fields else set()
        d = {k: v for k, v in d.items() if k in wanted}
    return d


def get_users_by_field(site: Site, p: dict, userid: int) -> list[dict]:
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
        ids = {int(v) for v in wanted}
    elif field == "username":
        ids = {site.user_id(v) for v in wanted} - {None}
    elif field == "idnumber":
        ids = {i for v in wanted for i in site.user_ids_with_idnumber(v)}
    else:
        ids = {i for v in wanted for i in site.user_ids_with_email(v)}
    found = [u for u in (site.user(i) for i in sorted(ids)) if u is not None]
    # email: an exact match (PostgreSQL compares case-sensitively)
    found = [u for u in found if not u.hidden and u[field] not in ("", None) and (field != "email" or u.email in wanted)]
    shown = (for_viewer(site, userid, u, user_details(site, u)) for u in found)
    return [ordered(d, USER_DESCRIPTION) for d in shown if d is not None]


def _email_taken(site: Site, email: str, exclude: int | None = None) -> bool:
    return any(i != exclude for i in site.user_ids_with_email(email))


def create_users(site: Site, p: dict, userid: int) -> list[dict]:
    require_capability(site, "moodle/user:create", userid)
    # One transaction: check everything first, then write.
    pending_names, pending_emails = set(), set()
    for user in p["users"]:
        for fname in ("username", "firstname", "lastname"):
            if user[fname].strip() == "":
                raise invalid_parameter(f"The field {fname} cannot be blank")
        if site.user_id(user["username"]) is not None or user["username"] in pending_names:
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
        if _email_taken(site, user["email"]) or user["email"].lower() in pending_emails:
            raise invalid_parameter(f"Email address already exists: {user['email']}")
        # check_password_policy(): its HTML text becomes the error code (93_); the call is one transaction.
        policy = "" if user.get("createpassword") else password_policy_text(user.get("password") or "")
        if policy:
            raise policy_exception(policy)
        pending_names.add(user["username"])
        pending_emails.add(user["email"].lower())
    created = []
    for user in p["users"]:
        uid = site.next_id("user")
        extra = {k: user[k] for k in ("auth", "lang", "department", "institution", "city", "country",
                                       "description", "calendartype", "theme", "timezone", "mailformat")
                 if user.get(k) not in (None, "")}
        # createpassword: Moodle mails a generated one; until the user sets it, no password works here.
        extra["password"] = None if user.get("createpassword") else hash_password(user["password"])
        site.add_user_record(uid, user["username"], user["firstname"], user["lastname"], user["email"],
                             php_str(user["idnumber"]), **extra)
        created.append({"id": uid, "username": user["username"]})
    return created


def update_users(site: Site, p: dict, userid: int) -> dict:
    require_capability(site, "moodle/user:update", userid)
    warnings = []
    for user in p["users"]:
        uid = user["id"]
        try:
            existing = site.user_for_update(uid)
            if existing is None or existing.hidden:
                raise moodle_exception("invaliduserid", "Invalid user id", "Invalid user ID")
            if uid != userid and is_admin(uid) and not is_admin(userid):
                raise moodle_exception("usernotupdatedadmin", "Cannot update admin accounts")
            if "email" in user and user["email"] != existing.email:
                if not validate_email(user["email"]):
                    raise moodle_exception("useremailinvalid", "Invalid email address", "Invalid email address")
                if _email_taken(site, user["email"], exclude=uid):
                    raise moodle_exception("useremailduplicate", "Duplicate address", "Duplicate email address")
            if "username" in user and user["username"] != existing.username:
                if site.user_id(user["username"]) is not None:
                    raise MoodleException("dml_write_exception", "dmlwriteexception", "Error writing to database")
            policy = password_policy_text(user["password"]) if "password" in user else ""
            if policy:                          # user_update_user() refuses it; nothing of this user is kept
                raise policy_exception(policy)
            site.unindex_user(existing)
            for k, v in user.items():
                if k in ("id", "customfields", "preferences", "userpicture", "interests"):
                    continue
                if k == "password":             # stored as a hash; existing tokens stay valid (91_)
                    existing["password"] = hash_password(v)
                    continue
                existing[k] = bool(v) if k == "suspended" else (php_str(v) if k == "idnumber" else v)
            site.index_user(existing)
        except MoodleException as e:
            warnings.append({"item": "user", "itemid": uid, "warningcode": e.errorcode, "message": e.message})
    if any(not re.fullmatch(r"[A-Za-z0-9]*", w["warningcode"]) for w in warnings):
        # The policy's HTML text as a warningcode fails the PARAM_ALPHANUM check of the returns (90_):
        # the other users' changes are kept, the whole answer is this error.
        raise MoodleException("core\\exception\\invalid_response_exception", "invalidresponse",
                              "Invalid response value detected",
                              "warnings => Invalid response value detected: warningcode => Invalid response "
                              "value detected: ", module="debug")
    return {"warnings": warnings}


def get_course_user_profiles(site: Site, p: dict, userid: int) -> list[dict]:
    if not p["userlist"]:
        raise coding_exception("moodle_database::get_in_or_equal() does not accept empty arrays")
    courseids = {item["userid"]: item["courseid"] for item in p["userlist"]}   # a user's last entry wins
    result = []
    for uid in sorted(courseids):
        u = site.user(uid)
        if u is None:
            continue
        if courseids[uid] not in site.courses:
            raise invalid_parameter("Context does not exist")     # validate_context() of no context
        validate_course_context(site, site.courses[courseids[uid]], userid)
        shown = for_viewer(site, userid, u, user_details(site, u, courseids[uid]), courseids[uid])
        if shown is not None:
            result.append(ordered(shown, COURSE_PROFILE))
    return result


_CUSTOM = Multiple(Single({"type": Value("alphanumext"), "value": Value("raw")}), OPTIONAL)
_PREFS = Multiple(Single({"type": Value("raw"), "value": Value("raw")}), OPTIONAL)
# Fields core_user_create_users and core_user_update_users share (all optional in an update).
_PROFILE = ("maildisplay:int city:notags country:alpha timezone:timezone description:raw "
            "firstnamephonetic:notags lastnamephonetic:notags middlename:notags alternatename:notags "
            "interests:text").split()
_ORG = "institution:text department:text phone1:notags phone2:notags address:text".split()


def _opts(specs: list[str]) -> dict:
    return {name: opt(ptype) for name, ptype in (s.split(":") for s in specs)}


FUNCTIONS = {
    "core_user_get_course_user_profiles": external(get_course_user_profiles, {
        "userlist": Multiple(Single({"userid": Value("int"), "courseid": Value("int")})),
    }, xml_form=lambda answer: described(answer, users_description(COURSE_PROFILE))),
    "core_user_get_users_by_field": external(
        get_users_by_field, {"field": Value("alpha"), "values": Multiple(Value("raw"))}),
    "core_user_create_users": external(create_users, {"users": Multiple(Single({
        "createpassword": opt("bool"),
        "username": Value("username"),
        "auth": Value("plugin", DEFAULT, "manual"),
        "password": opt("raw"),
        "firstname": Value("notags"),
        "lastname": Value("notags"),
        "email": Value("email"),
        **_opts(_PROFILE),
        "idnumber": Value("raw", DEFAULT, ""),
        **_opts(_ORG),
        "lang": Value("safedir", DEFAULT, "en"),
        "calendartype": Value("plugin", DEFAULT, "gregorian"),
        "theme": opt("plugin"),
        "mailformat": opt("int"),
        "customfields": _CUSTOM,
        "preferences": _PREFS,
    }))}, any_user=True),
    "core_user_update_users": external(update_users, {"users": Multiple(Single({
        "id": Value("int"),
        "username": opt("username"),
        "auth": opt("plugin"),
        "suspended": opt("bool"),
        "password": opt("raw"),
        "firstname": opt("notags"),
        "lastname": opt("notags"),
        "email": opt("email"),
        **_opts(_PROFILE[:5]),
        "userpicture": opt("int"),
        **_opts(_PROFILE[5:]),
        "idnumber": opt("raw"),
        **_opts(_ORG),
        "lang": opt("safedir"),
        "calendartype": opt("plugin"),
        "theme": opt("plugin"),
        "mailformat": opt("int"),
        "customfields": _CUSTOM,
        "preferences": _PREFS,
    }))}, any_user=True),
}
