"""core_enrol and enrol_manual: who is enrolled where, and manual enrolments."""

from __future__ import annotations

from .config import ASSIGNABLE_ROLES, ROLES
from .errors import coding_exception, invalid_parameter, moodle_exception
from .params import DEFAULT, Multiple, Single, Value, external, opt, php_intval
from .state import Site


def manual_enrol_users(site: Site, p: dict, userid: int) -> None:
    # One transaction: validate every enrolment, then apply them all.
    for en in p["enrolments"]:
        cid = en["courseid"]
        if cid not in site.courses:
            raise invalid_parameter("Context does not exist")
        if en["roleid"] not in ASSIGNABLE_ROLES:
            raise moodle_exception(
                "wsusercannotassign",
                f"You don't have the permission to assign this role ({en['roleid']}) to this user "
                f"({en['userid']}) in this course ({cid}).", module="enrol_manual")
        if not site.courses[cid].enrol_manual:
            # Moodle passes the placeholder data as the link, so {$a->courseid} stays unreplaced.
            raise moodle_exception("wsnoinstance",
                                   "Manual enrolment plugin instance doesn't exist or is disabled for the "
                                   "course (id = {$a->courseid})", module="enrol_manual")
        u = site.users.get(en["userid"])
        if u is None or u.hidden:
            raise coding_exception("User ID does not exist or is deleted!", f"userid:{en['userid']}")
    for en in p["enrolments"]:
        site.enrol(en["courseid"], en["userid"], en["roleid"], en.get("timestart") or 0,
                   en.get("timeend") or 0, 1 if en.get("suspend") else 0)


def get_enrolled_users(site: Site, p: dict, userid: int) -> list[dict]:
    cid = p["courseid"]
    site.course_or_fail(cid)
    opts = {o["name"]: o["value"] for o in p["options"]}
    onlyactive = opts.get("onlyactive") in ("1", "true")
    fields = [f.strip() for f in opts["userfields"].split(",")] if opts.get("userfields") else None
    rows = []
    for uid, e in site.enrolments.get(cid, {}).items():
        u = site.users.get(uid)
        if u is None or (onlyactive and (not site.is_active_enrolment(e) or u.suspended)):
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
             "profileimageurlsmall": site.picture_url("f2"), "profileimageurl": site.picture_url("f1"),
             # get_user_roles(): ordered by the roles' sortorder (same order as the ids by default)
             "roles": [{"roleid": r, "name": "", "shortname": ROLES.get(r, f"role{r}"), "sortorder": 0}
                       for r in sorted(e.roles)]}
        # enrol_get_users_courses($userid, true): active enrolments only, by course sortorder
        mine = sorted((site.courses[x] for x in site.user_courses.get(u.id, ())
                       if x in site.courses and site.is_active_enrolment(site.enrolments[x][u.id])),
                      key=lambda c: (-c.visible, c.sortorder))
        if mine:
            d["enrolledcourses"] = [{"id": c.id, "fullname": c.fullname, "shortname": c.shortname}
                                    for c in mine]
        if fields is not None:
            d = {k: v for k, v in d.items() if k in fields or k == "id"}
        out.append(d)
    return out


FUNCTIONS = {
    "enrol_manual_enrol_users": external(manual_enrol_users, {"enrolments": Multiple(Single({
        "roleid": Value("int"),
        "userid": Value("int"),
        "courseid": Value("int"),
        "timestart": opt("int"),
        "timeend": opt("int"),
        "suspend": opt("int"),
    }))}, has_returns=False),
    "core_enrol_get_enrolled_users": external(get_enrolled_users, {
        "courseid": Value("int"),
        "options": Multiple(Single({"name": Value("alphanumext"), "value": Value("raw")}), DEFAULT, []),
    }),
}
