"""core_user: accounts (look-up, creation, update)."""

from __future__ import annotations

import re

from .config import AUTH_PLUGINS, LANGS, THEMES
from .errors import MoodleException, coding_exception, invalid_parameter, moodle_exception
from .params import DEFAULT, OPTIONAL, Multiple, Single, Value, clean_param, external, opt, validate_email
from .php import php_str
from .state import Record, Site


def check_password_policy(password: str) -> bool:
    """Moodle's default password policy."""
    return (len(password) >= 8 and re.search(r"[0-9]", password) is not None
            and re.search(r"[a-z]", password) is not None
            and re.search(r"[A-Z]", password) is not None
            and re.search(r"[^a-zA-Z0-9]", password) is not None)


def user_details(site: Site, u: Record) -> dict:
    """user_get_user_details() without a course, as core_user_get_users_by_field returns it."""
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
    d["profileimageurlsmall"] = site.picture_url("f2")
    d["profileimageurl"] = site.picture_url("f1")
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
        ids = {int(v) for v in wanted if int(v) in site.users}
    elif field == "username":
        ids = {site.users_by_username[v] for v in wanted if v in site.users_by_username}
    elif field == "idnumber":
        ids = {i for v in wanted for i in site.users_by_idnumber.get(v, ())}
    else:   # email: exact match (PostgreSQL compares case-sensitively)
        ids = {i for v in wanted for i in site.users_by_email.get(v.lower(), ()) if site.users[i].email == v}
    found = [site.users[i] for i in ids]
    found = [u for u in found if not u.hidden and u[field] not in ("", None)]
    return [user_details(site, u) for u in sorted(found, key=lambda u: u.id)]


def _email_taken(site: Site, email: str, exclude: int | None = None) -> bool:
    return any(i != exclude for i in site.users_by_email.get(email.lower(), ()))


def create_users(site: Site, p: dict, userid: int) -> list[dict]:
    # One transaction: check everything first, then write.
    pending_names, pending_emails = set(), set()
    for user in p["users"]:
        for fname in ("username", "firstname", "lastname"):
            if user[fname].strip() == "":
                raise invalid_parameter(f"The field {fname} cannot be blank")
        if user["username"] in site.users_by_username or user["username"] in pending_names:
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
        uid = site.next_id("user")
        extra = {k: user[k] for k in ("auth", "lang", "department", "institution", "city", "country",
                                       "description", "calendartype", "theme", "timezone", "mailformat")
                 if user.get(k) not in (None, "")}
        extra["password"] = None if user.get("createpassword") else user.get("password")
        site.add_user_record(uid, user["username"], user["firstname"], user["lastname"], user["email"],
                             php_str(user["idnumber"]), **extra)
        created.append({"id": uid, "username": user["username"]})
    return created


def update_users(site: Site, p: dict, userid: int) -> dict:
    warnings = []
    for user in p["users"]:
        uid = user["id"]
        try:
            existing = site.users.get(uid)
            if existing is None or existing.hidden:
                raise moodle_exception("invaliduserid", "Invalid user id", "Invalid user ID")
            if "email" in user and user["email"] != existing.email:
                if not validate_email(user["email"]):
                    raise moodle_exception("useremailinvalid", "Invalid email address", "Invalid email address")
                if _email_taken(site, user["email"], exclude=uid):
                    raise moodle_exception("useremailduplicate", "Duplicate address", "Duplicate email address")
            if "username" in user and user["username"] != existing.username:
                if user["username"] in site.users_by_username:
                    raise MoodleException("dml_write_exception", "dmlwriteexception", "Error writing to database")
            if "password" in user and existing.auth == "manual" and not check_password_policy(user["password"]):
                raise invalid_parameter("password policy")
            site.unindex_user(existing)
            for k, v in user.items():
                if k in ("id", "customfields", "preferences", "userpicture", "interests"):
                    continue
                existing[k] = bool(v) if k == "suspended" else (php_str(v) if k == "idnumber" else v)
            site.index_user(existing)
        except MoodleException as e:
            warnings.append({"item": "user", "itemid": uid, "warningcode": e.errorcode, "message": e.message})
    return {"warnings": warnings}


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
    }))}),
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
    }))}),
}
