"""core_grades and gradereport_user: the grade book."""

from __future__ import annotations

from .completion import update_state
from .config import COMPLETION_COMPLETE, COMPLETION_INCOMPLETE, TRACKING_AUTOMATIC
from .errors import moodle_exception
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
    site.course_or_fail(courseid)
    key = (courseid, itemmodule, cm.instance, p["itemnumber"])
    itemid = site.grade_item_keys.get(key)
    details = p["itemdetails"]
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
    now = site.now()
    for g in p["grades"]:
        raw = g["grade"]
        final = None if raw is None else min(max(raw, item.grademin), item.grademax)
        # Moodle 4.5 ignores str_feedback here (the grade structure only has userid and rawgrade).
        prev = site.grades.get((itemid, g["studentid"]))
        site.grades[(itemid, g["studentid"])] = Record(
            rawgrade=raw, finalgrade=final, timemodified=now,
            feedback=prev.feedback if prev else None, feedbackformat=2)
        if cm.course == courseid and p["itemnumber"] == 0 and cm.completionusegrade \
                and cm.completion == TRACKING_AUTOMATIC:
            possible = COMPLETION_COMPLETE if final is not None else COMPLETION_INCOMPLETE
            update_state(site, cm, possible, g["studentid"])
    return 0


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


def get_grade_items(site: Site, p: dict, userid: int) -> dict:
    course = site.course_or_fail(p["courseid"])
    if p["userid"]:
        users = [site.user_or_fail(p["userid"])]
    else:
        users = [site.user_or_fail(uid) for uid, _ in site.course_enrolments(course.id)
                 if site.is_tracked(course.id, uid)]
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
    }),
    "core_grades_get_gradeitems": external(get_gradeitems, {"courseid": Value("int")}),
    "gradereport_user_get_grade_items": external(get_grade_items, {
        "courseid": Value("int"),
        "userid": Value("int", DEFAULT, 0),
        "groupid": Value("int", DEFAULT, 0),
    }),
}
