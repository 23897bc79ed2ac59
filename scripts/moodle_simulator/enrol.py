"""core_enrol and enrol_manual: who is enrolled where, and manual enrolments."""

from __future__ import annotations

from itertools import islice
from typing import Callable, Iterable

from .access import has_capability, is_admin, require_capability, required_capability, validate_course_context
from .config import ASSIGNABLE_ROLES, ROLES, TRACKING_NONE
from .course import course_image
from .errors import MoodleException, coding_exception, invalid_parameter, moodle_exception
from .params import DEFAULT, Multiple, Single, Value, clean_param, external, opt, php_intval
from .php import phpnum
from .state import Record, Site
from .rights import assignable_roles
from .user import enrolled_courses, for_viewer, ordered, user_details, users_description
from .xml_output import described

SITE_ID = 1


def manual_enrol_users(site: Site, p: dict, userid: int) -> None:
    # One transaction: validate every enrolment, then apply them all.
    for en in p["enrolments"]:
        cid = en["courseid"]
        if cid not in site.courses:
            raise invalid_parameter("Context does not exist")
        validate_course_context(site, site.courses[cid], userid)
        require_capability(site, "enrol/manual:enrol", userid, cid)
        if en["roleid"] not in _assignable(site, userid, cid):
            raise moodle_exception(
                "wsusercannotassign",
                f"You don't have the permission to assign this role ({en['roleid']}) to this user "
                f"({en['userid']}) in this course ({cid}).", module="enrol_manual")
        if not site.courses[cid].enrol_manual:
            # Moodle passes the placeholder data as the link, so {$a->courseid} stays unreplaced.
            raise moodle_exception("wsnoinstance",
                                   "Manual enrolment plugin instance doesn't exist or is disabled for the "
                                   "course (id = {$a->courseid})", module="enrol_manual")
        u = site.user(en["userid"])
        if u is None or u.hidden:
            raise coding_exception("User ID does not exist or is deleted!", f"userid:{en['userid']}")
    for en in p["enrolments"]:
        site.enrol(en["courseid"], en["userid"], en["roleid"], en.get("timestart") or 0,
                   en.get("timeend") or 0, 1 if en.get("suspend") else 0)


def _assignable(site: Site, userid: int, courseid: int) -> set[int] | tuple[int, ...]:
    """get_assignable_roles(): the admin's, a course role's (editing teacher, manager), a preset role's."""
    if is_admin(userid):
        return ASSIGNABLE_ROLES
    e = site.enrolment(courseid, userid)
    by_enrolment = set(ASSIGNABLE_ROLES) if e and {1, 3} & set(e.roles) else set()
    names = assignable_roles(site, userid, courseid)
    return by_enrolment | {rid for rid, name in ROLES.items() if name in names}


# get_enrolled_users_returns(): the order of a participant's fields.
ENROLLED_USER = """id username firstname lastname fullname email address phone1 phone2 department institution
idnumber interests firstaccess lastaccess lastcourseaccess description descriptionformat city country
profileimageurlsmall profileimageurl customfields groups roles preferences enrolledcourses""".split()
# get_users_courses_returns(), in order.
USER_COURSE = """id shortname fullname displayname enrolledusercount idnumber visible summary summaryformat format
courseimage showgrades lang enablecompletion completionhascriteria completionusertracked category progress
completed startdate enddate marker lastaccess isfavourite hidden overviewfiles showactivitydates
showcompletionconditions timemodified""".split()
_FILE = dict.fromkeys("filename filepath filesize fileurl timemodified mimetype isexternalfile repositorytype".split())
USER_COURSES_DESCRIPTION = [{k: [_FILE] if k == "overviewfiles" else None for k in USER_COURSE}]
# Who holds a capability in a course, for withcapability: the roles whose archetype allows it in
# lib/db/access.php.  Only these are simulated; others are refused rather than answered wrongly.
CAPABILITY_ROLES = {
    "moodle/course:isincompletionreports": {5},
    "moodle/course:viewparticipants": {1, 3, 4, 5},
}
_SORTS = ("id", "firstname", "lastname", "siteorder")


def _enrolled_users_options(options: list[dict]) -> dict:
    """The options, read as Moodle does: in order, by exact name, unknown names ignored."""
    o = {"withcapability": "", "groupid": 0, "onlyactive": False, "userfields": [], "limitfrom": 0,
         "limitnumber": 0, "sortby": "id", "sortdirection": "ASC"}
    for option in options:
        name, value = option["name"], option["value"]
        if name == "withcapability":
            o[name] = value
        elif name in ("groupid", "limitfrom", "limitnumber"):
            o[name] = php_intval(value)
        elif name == "onlyactive":
            o[name] = value not in ("", "0")          # PHP's !empty()
        elif name == "userfields":
            o[name] = [clean_param(f, "alphanumext") for f in value.split(",")]
        elif name == "sortby":
            if value not in _SORTS:
                raise invalid_parameter(f"Invalid value for sortby parameter (value: {value}),"
                                        f"allowed values are: {','.join(_SORTS)}")
            o[name] = value
        elif name == "sortdirection":
            o[name] = value.upper()
            if o[name] not in ("ASC", "DESC"):
                raise invalid_parameter(f"Invalid value for sortdirection parameter\n                        "
                                        f"(value: {o[name]}),allowed values are: ASC,DESC")
    return o


def _sort_key(site: Site, sortby: str, descending: bool) -> Callable[[tuple], tuple]:
    if sortby == "id":
        return lambda row: (row[0],)
    if sortby in ("firstname", "lastname"):
        return lambda row: (site.user_or_fail(row[0])[sortby], row[0])
    # siteorder is ORDER BY lastname, firstname, id <direction>: only the id follows the direction
    sign = -1 if descending else 1

    def siteorder(row: tuple) -> tuple:
        u = site.user_or_fail(row[0])
        return (u.lastname, u.firstname, sign * row[0])
    return siteorder


def get_enrolled_users(site: Site, p: dict, userid: int) -> list[dict]:
    o = _enrolled_users_options(p["options"])
    cid = p["courseid"]
    course = site.course_or_fail(cid)
    if not is_admin(userid):
        validate_course_context(site, course, userid)
        if not (has_capability(site, "moodle/course:viewparticipants", userid, cid)
                or has_capability(site, "moodle/course:enrolreview", userid, cid)):
            raise required_capability(site, "moodle/course:viewparticipants", cid)   # course_require_view_...
    cap = o["withcapability"]
    if cap and cap not in CAPABILITY_ROLES:
        raise MoodleException("moodle_simulator_exception", "notsimulated",
                              f"The simulator does not know which roles have the capability {cap}")
    start, count = max(o["limitfrom"], 0), max(o["limitnumber"], 0)   # DML normalises negative limits
    descending = o["sortdirection"] == "DESC"
    if cid != SITE_ID and o["sortby"] == "id" and not descending:
        # By id (the default, recordings 103-105): a page is found without walking the participants before it.
        def keep(e: Record) -> bool:
            return ((not o["onlyactive"] or site.is_active_enrolment(e)) and not o["groupid"]
                    and (not cap or bool(CAPABILITY_ROLES[cap] & set(e.roles))))
        return [ordered(user_details(site, site.user_or_fail(uid), cid, o["userfields"]), ENROLLED_USER)
                for uid in site.enrolled_ids_page(cid, keep, start, count)]
    if cid == SITE_ID:      # on the front page everyone is enrolled
        rows: Iterable = ((uid, None) for uid in site.user_ids())
    else:
        rows = site.course_enrolments(cid)
    if o["onlyactive"] and cid != SITE_ID:
        rows = (r for r in rows if site.is_active_enrolment(r[1]))
    if cap:
        rows = (r for r in rows if r[1] is not None and CAPABILITY_ROLES[cap] & set(r[1].roles))
    if o["groupid"]:
        rows = iter(())     # no groups are simulated: nobody is in group N
    if o["sortby"] == "id" and not descending:
        chosen = list(islice(rows, start, start + count if count else None))   # already by id: stream
    else:
        ordered_rows = sorted(rows, key=_sort_key(site, o["sortby"], descending),
                              reverse=descending and o["sortby"] != "siteorder")
        chosen = ordered_rows[start:start + count] if count else ordered_rows[start:]
    shown = (for_viewer(site, userid, u, user_details(site, u, cid, o["userfields"]), cid)
             for u in (site.user_or_fail(uid) for uid, _ in chosen))
    return [ordered(d, ENROLLED_USER) for d in shown if d is not None]


def get_users_courses(site: Site, p: dict, userid: int) -> list[dict]:
    """The courses a user is actively enrolled in, as the site admin sees them."""
    uid = p["userid"]
    if site.user(uid) is None:
        return []
    out = []
    for c in enrolled_courses(site, uid):
        tracked = bool(c.enablecompletion) and site.is_tracked(c.id, uid)
        d = {
            "id": c.id, "shortname": c.shortname, "fullname": c.fullname, "displayname": c.fullname,
            "idnumber": c.idnumber, "visible": c.visible, "summary": c.summary, "summaryformat": 1,
            "format": c.format, "courseimage": course_image(site, c), "showgrades": True, "lang": "",
            "enablecompletion": bool(c.enablecompletion),
            "completionhascriteria": bool(c.enablecompletion and site.completion_criteria.get(c.id)),
            "completionusertracked": tracked, "category": c.categoryid,
            "progress": _progress(site, c, uid) if tracked else None,
            "completed": (c.id, uid) in site.course_completions if c.enablecompletion else None,
            "startdate": c.startdate, "enddate": c.enddate, "marker": 0, "lastaccess": None,
            "isfavourite": False, "hidden": False, "overviewfiles": [], "showactivitydates": False,
            "showcompletionconditions": None if c.showcompletionconditions is None
            else bool(c.showcompletionconditions),
            "timemodified": c.timemodified,
        }
        if p["returnusercount"]:
            d["enrolledusercount"] = site.enrolled_count(c.id)
        d = ordered(d, USER_COURSE)
        out.append(d)
    return out


def _progress(site: Site, c: Record, uid: int) -> float | int | None:
    """core_completion\\progress::get_course_progress_percentage(): done activities in per cent."""
    tracked = [cm for cm in site.course_cms(c.id) if cm.completion != TRACKING_NONE]
    if not tracked:
        return None
    done = sum(1 for cm in tracked if (site.completions.get((cm.id, uid)) or {}).get("state", 0) not in (0, 3))
    return phpnum(done / len(tracked) * 100)


FUNCTIONS = {
    "enrol_manual_enrol_users": external(manual_enrol_users, {"enrolments": Multiple(Single({
        "roleid": Value("int"),
        "userid": Value("int"),
        "courseid": Value("int"),
        "timestart": opt("int"),
        "timeend": opt("int"),
        "suspend": opt("int"),
    }))}, has_returns=False, any_user=True),
    "core_enrol_get_enrolled_users": external(get_enrolled_users, {
        "courseid": Value("int"),
        "options": Multiple(Single({"name": Value("alphanumext"), "value": Value("raw")}), DEFAULT, []),
    }, xml_form=lambda answer: described(answer, users_description(ENROLLED_USER))),
    "core_enrol_get_users_courses": external(get_users_courses, {
        "userid": Value("int"),
        "returnusercount": Value("bool", DEFAULT, True),
    }, xml_form=lambda answer: described(answer, USER_COURSES_DESCRIPTION)),
}
