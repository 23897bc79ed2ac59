"""core_grades and gradereport_user: the grade book."""

from __future__ import annotations

from .access import has_capability, require_capability, validate_course_context
from .completion import update_state
from .config import COMPLETION_COMPLETE, COMPLETION_INCOMPLETE, STUDENT_ROLE, TRACKING_AUTOMATIC
from .errors import MoodleException, moodle_exception
from .params import DEFAULT, Multiple, Single, Value, external, opt
from .php import format_float, phpnum
from .state import Record, Site


def update_grades(site: Site, p: dict, userid: int) -> int:
    component = p["component"]
    itemmodule = component[4:] if component.startswith("mod_") else (
        component if "_" not in component else None)
    cm = site.cms.get(p["activityid"])
    if cm is None or itemmodule is None or cm.modname != itemmodule:
        raise moodle_exception("invalidcoursemodule", "Invalid course module ID")
    courseid = p["courseid"]
    course = site.course_or_fail(courseid)
    details = p["itemdetails"]
    _check_grade_editing(site, course, bool(p["grades"]), details, userid)
    key = (courseid, itemmodule, cm.instance, p["itemnumber"])
    itemid = site.grade_item_keys.get(key)
    if itemid is None:
        if details.get("deleted"):
            return 0
        _, catid = site.ensure_course_item(courseid)
        itemid = site.next_id("gradeitem")
        name = details.get("itemname") or (cm.name if cm.course == courseid else None)
        site.add_grade_item(itemid, courseid, itemmodule, cm.instance, p["itemnumber"], catid, name,
                            cm.id if cm.course == courseid else None)
    item = site.grade_items[itemid]
    for k in ("grademax", "grademin"):
        if details.get(k) is not None:
            item[k] = float(details[k])
    for g in p["grades"]:
        # Moodle 4.5 ignores str_feedback here (the grade structure only has userid and rawgrade).
        # Only the grade book is written: an assignment's own grade table (assign.py) is not (issue 22).
        write_grade(site, item, cm if cm.course == courseid else None, g["studentid"], g["grade"])
    return 0


_KEEP = object()


def write_grade(site: Site, item: Record, cm: Record | None, userid: int, raw: float | None,
                feedback: object = _KEEP) -> None:
    """grade_update() for one user: the grade book's grade, then the activity's "receive a grade"
    completion (grade_grade::notify_changed -> completion_info::inform_grade_changed)."""
    final = None if raw is None else min(max(raw, item.grademin), item.grademax)
    prev = site.grades.get((item.id, userid))
    site.grades[(item.id, userid)] = Record(
        rawgrade=raw, finalgrade=final, timemodified=site.now(),
        feedback=(prev.feedback if prev else None) if feedback is _KEEP else feedback, feedbackformat=2)
    if cm is not None and item.itemnumber == 0 and cm.completionusegrade and cm.completion == TRACKING_AUTOMATIC:
        possible = COMPLETION_COMPLETE if final is not None else COMPLETION_INCOMPLETE
        update_state(site, cm, possible, userid)


def _check_grade_editing(site: Site, course: Record, grades: bool, details: dict, userid: int) -> None:
    """core_grades_external::update_grades(): the course context, then the capability of each change."""
    try:
        validate_course_context(site, course, userid)
    except MoodleException as e:
        raise moodle_exception("errorcoursecontextnotvalid",
                               f"You cannot execute functions in the course context (course id:{course.id}). "
                               f"The context error message was: {e.message}", module="webservice") from None
    hiding, editing_item = "hidden" in details, bool(details) and "hidden" not in details
    for needed, capability, what in ((editing_item, "moodle/grade:manage", "edit grade information"),
                                     (hiding, "moodle/grade:hide", "hide grade items"),
                                     (grades, "moodle/grade:edit", "edit grades")):
        if needed and not has_capability(site, capability, userid, course.id):
            raise moodle_exception("nopermissiontoviewgrades", "Can not view grades.",
                                   f"{capability} required to {what}")


def get_gradeitems(site: Site, p: dict, userid: int) -> dict:
    site.course_or_fail(p["courseid"])
    out = []
    for itemid in sorted(site.grade_items):
        item = site.grade_items[itemid]
        if item.courseid != p["courseid"] or item.itemtype != "mod":
            continue
        out.append({"id": str(item.id), "itemname": item.itemname or "",
                    "category": site.courses[p["courseid"]].fullname})
    return {"gradeItems": out, "warnings": []}


def _grade_fields(value: float | None, gmin: float, gmax: float, dategraded: int | None) -> dict:
    return {"graderaw": phpnum(value) if value is not None else None, "gradedatesubmitted": None,
            "gradedategraded": dategraded, "gradehiddenbydate": False, "gradeneedsupdate": False,
            "gradeishidden": False, "gradeislocked": False, "gradeisoverridden": False,
            "gradeformatted": format_float(value, 2) if value is not None else "-",
            "grademin": phpnum(gmin), "grademax": phpnum(gmax),
            "rangeformatted": f"{format_float(gmin, 0)}&ndash;{format_float(gmax, 0)}",
            "percentageformatted": (format_float((value - gmin) * 100.0 / (gmax - gmin), 2) + " %")
            if value is not None and gmax != gmin else "-",
            "feedback": "", "feedbackformat": 2}


def _user_report(site: Site, course: Record, user: Record) -> dict:
    courseitem, catid = site.ensure_course_item(course.id)
    items = [site.grade_items[i] for i in sorted(site.grade_items)
             if site.grade_items[i].courseid == course.id and site.grade_items[i].itemtype == "mod"]
    grades = {it.id: site.grades.get((it.id, user.id)) for it in items}
    graded = [it for it in items if grades[it.id] is not None and grades[it.id].finalgrade is not None]
    summax = sum(it.grademax for it in graded)
    rows = []
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
        row.update(_grade_fields(value, it.grademin, it.grademax, g.timemodified if value is not None else None))
        if g is not None and g.feedback:
            row["feedback"] = g.feedback
        rows.append(row)
    total = sum(grades[it.id].finalgrade for it in graded) if graded else None
    dategraded = max((grades[it.id].timemodified for it in graded), default=None)
    course_row = {"id": courseitem, "itemname": None, "itemtype": "course", "itemmodule": None,
                  "iteminstance": catid, "itemnumber": None, "idnumber": None, "categoryid": None,
                  "outcomeid": None, "scaleid": None, "locked": False}
    coursemax = summax if graded else (sum(it.grademax for it in items) if items else 100.0)
    course_row.update(_grade_fields(total, 0.0, coursemax, dategraded))
    rows.append(course_row)
    return {"courseid": course.id, "courseidnumber": course.idnumber, "userid": user.id,
            "userfullname": f"{user.firstname} {user.lastname}", "useridnumber": user.idnumber,
            "maxdepth": 2, "gradeitems": rows}


def graded_users(site: Site, course: Record) -> list[Record]:
    """graded_users_iterator as the user report runs it for everyone: the course's users with a gradebook
    role ($CFG->gradebookroles: student) and an active enrolment (grade_report_showonlyactiveenrol),
    suspended accounts included, by last name, first name and id."""
    users = [site.user_or_fail(uid) for uid, e in site.course_enrolments(course.id, STUDENT_ROLE)
             if site.is_active_enrolment(e)]
    # PostgreSQL's usual collation orders names without regard to case; casefold() comes close.
    return sorted(users, key=lambda u: (u.lastname.casefold(), u.firstname.casefold(), u.id))


def get_grade_items(site: Site, p: dict, userid: int) -> dict:
    """gradereport_user\\external\\user::get_grade_items(); userid 0: every graded user of the course."""
    course = site.course_or_fail(p["courseid"])
    validate_course_context(site, course, userid)
    require_capability(site, "gradereport/user:view", userid, course.id)
    if p["userid"]:
        users = [site.user_or_fail(p["userid"])]
    else:
        require_capability(site, "moodle/grade:viewall", userid, course.id)
        users = graded_users(site, course)
    own = p["userid"] == userid and has_capability(site, "moodle/grade:view", userid, course.id)
    if not (own or has_capability(site, "moodle/grade:viewall", userid, course.id)):
        raise moodle_exception("nopermissiontoviewgrades", "Can not view grades.")
    return {"usergrades": [_user_report(site, course, u) for u in users], "warnings": []}


FUNCTIONS = {
    "core_grades_update_grades": external(update_grades, {
        "source": Value("text"),
        "courseid": Value("int"),
        "component": Value("component"),
        "activityid": Value("int"),
        "itemnumber": Value("int"),
        "grades": Multiple(Single({
            "studentid": Value("int"),
            "grade": Value("float"),
            "str_feedback": opt("text"),
        }), DEFAULT, []),
        "itemdetails": Single({
            "itemname": opt("alphanumext"),
            "idnumber": opt("int"),
            "gradetype": opt("int"),
            "grademax": opt("float"),
            "grademin": opt("float"),
            "scaleid": opt("int"),
            "multfactor": opt("float"),
            "plusfactor": opt("float"),
            "deleted": opt("bool"),
            "hidden": opt("bool"),
        }, DEFAULT, []),
    }, any_user=True),
    "core_grades_get_gradeitems": external(get_gradeitems, {"courseid": Value("int")}),
    "gradereport_user_get_grade_items": external(get_grade_items, {
        "courseid": Value("int"),
        "userid": Value("int", DEFAULT, 0),
        "groupid": Value("int", DEFAULT, 0),
    }, any_user=True),
}
