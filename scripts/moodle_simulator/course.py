"""core_course: courses and their contents."""

from __future__ import annotations

import copy
import re

from .access import has_capability, is_admin, validate_course_context
from .completion import completion_details
from .config import CONTACT_ROLE, COURSE_FORMAT_OPTIONS, FILTERS, MODULES, THEMEREV, TRACKING_NONE
from .errors import MoodleException, invalid_parameter
from .params import DEFAULT, Multiple, Single, Value, external, php_intval, strip_tags
from .state import Record, Site


def _contacts(site: Site, courseid: int) -> list[dict]:
    out = []
    for uid, e in site.course_enrolments(courseid, CONTACT_ROLE):
        if site.is_active_enrolment(e):
            u = site.user_or_fail(uid)
            out.append({"id": uid, "fullname": f"{u.firstname} {u.lastname}"})
    return out


def course_image(site: Site, c: Record) -> str:
    """The generated image of a course without an overview file."""
    return f"{site.wwwroot}/pluginfile.php/{c.contextid}/course/generated/course.svg"


def course_out(site: Site, c: Record) -> dict:
    """A course as core_course_get_courses_by_field returns it."""
    ww = site.wwwroot
    out = {
        "id": c.id, "fullname": c.fullname, "displayname": c.fullname, "shortname": c.shortname,
        "courseimage": course_image(site, c),
        "categoryid": c.categoryid, "categoryname": c.categoryname, "sortorder": c.sortorder,
        "summary": c.summary, "summaryformat": 1, "summaryfiles": [], "overviewfiles": [],
        "showactivitydates": False, "showcompletionconditions": c.showcompletionconditions,
        "contacts": _contacts(site, c.id), "enrollmentmethods": ["manual"] if c.enrol_manual else [],
        "idnumber": c.idnumber, "format": c.format, "showgrades": 1, "newsitems": c.newsitems,
        "startdate": c.startdate, "enddate": c.enddate, "maxbytes": 0, "showreports": 0,
        "visible": c.visible, "groupmode": 0, "groupmodeforce": 0, "defaultgroupingid": 0,
        "enablecompletion": c.enablecompletion, "completionnotify": 0, "lang": "", "theme": "",
        "marker": 0, "legacyfiles": 0, "calendartype": "", "timecreated": c.timecreated,
        "timemodified": c.timemodified, "requested": 0, "cacherev": c.cacherev,
        "filters": copy.deepcopy(FILTERS),
    }
    if c.format != "site":
        out["courseformatoptions"] = copy.deepcopy(COURSE_FORMAT_OPTIONS)
    return out


def get_courses_by_field(site: Site, p: dict, userid: int) -> dict:
    field, value = p["field"], p["value"]
    warnings = []
    if field == "":
        courses = [site.courses[k] for k in sorted(site.courses)]
    elif field in ("id", "category", "sectionid"):
        v = php_intval(value)           # clean_param(PARAM_INT) is (int)$value: "2abc" -> 2
        if field == "id":
            courses = [site.courses[v]] if v in site.courses else []
        elif field == "category":
            courses = [site.courses[k] for k in sorted(site.courses) if site.courses[k].categoryid == v]
        else:
            courses = [site.courses[cid] for cid in sorted(site.sections)
                       if any(s.id == v for s in site.sections[cid]) and cid in site.courses]
    elif field == "ids":
        seq = re.sub(r"[^0-9,]", "", value)
        ids: list[int] = []
        for part in seq.split(","):
            if part != "" and int(part) not in ids:
                ids.append(int(part))
        courses = []
        for cid in ids:
            if cid in site.courses:
                courses.append(site.courses[cid])
            else:
                warnings.append({"item": "course", "itemid": cid, "warningcode": "unknowncourseidnumber",
                                 "message": f"Unknown course ID {cid}"})
    elif field == "shortname":
        v = strip_tags(value)
        courses = [site.courses[k] for k in sorted(site.courses) if site.courses[k].shortname == v]
    elif field == "idnumber":
        courses = [site.courses[k] for k in sorted(site.courses) if site.courses[k].idnumber == value]
    else:
        raise invalid_parameter("Invalid field name")
    if is_admin(userid):
        return {"courses": [course_out(site, c) for c in courses], "warnings": warnings}
    shown = (_course_for(site, c, userid) for c in courses)
    return {"courses": [c for c in shown if c is not None], "warnings": warnings}


# core_course_get_courses_by_field for other users: what one who cannot enter the course sees (the public
# information), and what only moodle/course:update shows ("information for managers only").
_ACCESS_FIELDS = ("format showgrades newsitems startdate enddate maxbytes showreports visible groupmode groupmodeforce "
                  "defaultgroupingid enablecompletion completionnotify lang theme marker filters "
                  "courseformatoptions").split()
_MANAGER_FIELDS = "idnumber legacyfiles calendartype timecreated timemodified requested cacherev".split()


def _course_for(site: Site, c: Record, userid: int) -> dict | None:
    out = course_out(site, c)
    try:
        if c.id != 1:
            validate_course_context(site, c, userid)
    except MoodleException:
        if not (c.visible or has_capability(site, "moodle/course:viewhiddencourses", userid, c.id)):
            return None             # core_course_category::can_view_course_info()
        return {k: v for k, v in out.items() if k not in _ACCESS_FIELDS and k not in _MANAGER_FIELDS}
    if c.id == 1 or not has_capability(site, "moodle/course:update", userid, c.id):
        out = {k: v for k, v in out.items() if k not in _MANAGER_FIELDS}
    return out


def _module_out(site: Site, cm: Record, userid: int) -> dict:
    ww = site.wwwroot
    purpose, plural, customdata, has_contents = MODULES[cm.modname]
    m = {
        "id": cm.id, "url": f"{ww}/mod/{cm.modname}/view.php?id={cm.id}", "name": cm.name,
        "instance": cm.instance, "contextid": cm.contextid, "visible": cm.visible, "uservisible": True,
        "visibleoncoursepage": 1,
        "modicon": f"{ww}/theme/image.php/boost/{cm.modname}/{THEMEREV}/monologo?filtericon=1",
        "modname": cm.modname, "purpose": purpose, "branded": False, "modplural": plural,
        "availability": None, "indent": 0, "onclick": "", "afterlink": None, "customdata": customdata,
        "noviewlink": False, "completion": cm.completion,
    }
    if cm.completion != TRACKING_NONE and site.courses[cm.course].enablecompletion:
        m["completiondata"] = completion_details(site, cm, userid)
    m.update({"downloadcontent": 1, "dates": [], "groupmode": 0})
    if has_contents:
        if cm.modname == "page":
            content = {"type": "file", "filename": "index.html", "filepath": "/", "filesize": 0,
                       "fileurl": f"{ww}/webservice/pluginfile.php/{cm.contextid}/mod_page/content/"
                                  "index.html?forcedownload=1",
                       "timecreated": None, "timemodified": cm.timemodified, "sortorder": 1,
                       "userid": None, "author": None, "license": None}
        else:
            content = {"type": "url", "filename": cm.name, "filepath": None, "filesize": 0,
                       "fileurl": cm.externalurl or f"{ww}/", "timecreated": None,
                       "timemodified": cm.timemodified, "sortorder": None, "userid": None,
                       "author": None, "license": None}
        m["contents"] = [content]
        m["contentsinfo"] = {"filescount": 1, "filessize": 0, "lastmodified": cm.timemodified,
                             "mimetypes": [], "repositorytype": ""}
    return m


def get_contents(site: Site, p: dict, userid: int) -> list[dict]:
    validate_course_context(site, site.course_or_fail(p["courseid"]), userid)
    opts = {o["name"].lower(): o["value"] for o in p["options"]}
    excludemodules = opts.get("excludemodules") in ("1", "true")
    excludecontents = opts.get("excludecontents") in ("1", "true")
    only_section = opts.get("sectionnumber")
    only_sectionid = opts.get("sectionid")
    only_cmid = opts.get("cmid")
    only_modname = opts.get("modname")
    out = []
    for sec in site.sections.get(p["courseid"], []):
        if only_section is not None and str(sec.section) != str(only_section):
            continue
        if only_sectionid is not None and str(sec.id) != str(only_sectionid):
            continue
        modules = []
        if not excludemodules:
            for cmid in sec.sequence:
                cm = site.cms[cmid]
                if only_cmid is not None and str(cmid) != str(only_cmid):
                    continue
                if only_modname is not None and cm.modname != only_modname:
                    continue
                m = _module_out(site, cm, userid)
                if excludecontents:
                    m.pop("contents", None)
                modules.append(m)
        out.append({"id": sec.id, "name": sec.name, "visible": 1, "summary": "", "summaryformat": 1,
                    "section": sec.section, "hiddenbynumsections": 0, "uservisible": True,
                    "component": None, "itemid": None, "modules": modules})
    return out


FUNCTIONS = {
    "core_course_get_courses_by_field": external(
        get_courses_by_field, {"field": Value("alpha", DEFAULT, ""), "value": Value("raw", DEFAULT, "")}),
    "core_course_get_contents": external(get_contents, {
        "courseid": Value("int"),
        "options": Multiple(Single({"name": Value("alphanum"), "value": Value("raw")}), DEFAULT, []),
    }),
}
