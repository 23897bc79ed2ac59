"""core_completion: activity completion (completion_info::update_state) and its web service functions."""

from __future__ import annotations

from . import coursecompletion
from .access import has_capability, require_capability, required_capability, validate_course_context, \
    validate_module_context
from .config import (ADMIN_ID, COMPLETION_COMPLETE, COMPLETION_INCOMPLETE, TRACKING_AUTOMATIC, TRACKING_MANUAL,
                     TRACKING_NONE)
from .errors import moodle_exception
from .params import Value, external
from .state import Record, Site


def has_grade(site: Site, cm: Record, userid: int) -> bool:
    itemid = site.grade_item_keys.get((cm.course, cm.modname, cm.instance, 0))
    if itemid is None:
        return False
    g = site.grades.get((itemid, userid))
    return g is not None and g.finalgrade is not None


def _internal_state(site: Site, cm: Record, userid: int) -> int:
    """Automatic completion state computed from the rules."""
    if cm.completionusegrade:
        return COMPLETION_COMPLETE if has_grade(site, cm, userid) else COMPLETION_INCOMPLETE
    return COMPLETION_INCOMPLETE   # completionview: views are not simulated


def update_state(site: Site, cm: Record, possible: int, userid: int, override: bool = False,
                 by: int = ADMIN_ID) -> None:
    if cm.completion == TRACKING_NONE or not site.courses[cm.course].enablecompletion:
        return
    cur = site.completions.get((cm.id, userid))
    curstate = cur["state"] if cur else COMPLETION_INCOMPLETE
    if possible == curstate or (possible == COMPLETION_COMPLETE and curstate in (2, 3)):
        return
    if (cm.completion == TRACKING_AUTOMATIC and cur and cur["overrideby"] is not None
            and curstate == COMPLETION_COMPLETE and not override):
        return
    if cm.completion == TRACKING_MANUAL or override:
        if possible not in (COMPLETION_COMPLETE, COMPLETION_INCOMPLETE):
            raise moodle_exception(
                "err_system",
                "An internal error occurred in the completion system. (System administrators can "
                "enable debugging information to see more detail.)",
                f"Unexpected manual completion state for {cm.id}: {possible}", module="completion",
                link=f"{site.wwwroot}/course/view.php?id={cm.course}")
        newstate = possible
    else:
        newstate = _internal_state(site, cm, userid)
    if newstate != curstate:
        site.completions[(cm.id, userid)] = {"state": newstate, "timemodified": site.now(),
                                             "overrideby": by if override else None}
        # internal_set_data() for a single user: the course's completion follows in the same request.
        coursecompletion.review(site, cm.course, userid)


def completion_details(site: Site, cm: Record, userid: int) -> dict:
    data = site.completions.get((cm.id, userid))
    state = data["state"] if data else 0
    overrideby = data["overrideby"] if data else None
    automatic = cm.completion == TRACKING_AUTOMATIC
    details = []
    if automatic:
        if cm.completionview:
            details.append({"rulename": "completionview",
                            "rulevalue": {"status": state if overrideby else 0, "description": "View"}})
        if cm.completionusegrade:
            status = state if overrideby else (1 if has_grade(site, cm, userid) else 0)
            details.append({"rulename": "completionusegrade",
                            "rulevalue": {"status": status, "description": "Receive a grade"}})
    complete = state in ((1, 2, 3) if automatic else (1,))
    return {
        "state": state,
        "timecompleted": data["timemodified"] if data else 0,
        "overrideby": overrideby,
        "valueused": False,
        "hascompletion": cm.completion != TRACKING_NONE,
        "isautomatic": automatic,
        "istrackeduser": site.is_tracked(cm.course, userid),
        "uservisible": True,
        "details": details,
        "isoverallcomplete": complete,
    }


def _require_completion(site: Site, cm: Record) -> None:
    if not site.courses[cm.course].enablecompletion:
        raise moodle_exception("completionnotenabled", "Completion is not enabled", module="completion")


# -- web service functions --------------------------------------------------------------

def get_activities_completion_status(site: Site, p: dict, userid: int) -> dict:
    c = site.course_or_fail(p["courseid"])
    u = site.user_or_fail(p["userid"])
    validate_course_context(site, c, userid)
    if u.id != userid:      # another user's activities (groups are not simulated)
        require_capability(site, "report/progress:view", userid, c.id)
    statuses = []
    if c.enablecompletion:
        for cm in site.course_cms(c.id):
            if cm.completion == TRACKING_NONE:
                continue
            d = completion_details(site, cm, u.id)
            statuses.append({"cmid": cm.id, "modname": cm.modname, "instance": cm.instance,
                             "state": d["state"], "timecompleted": d["timecompleted"],
                             "tracking": cm.completion, "overrideby": d["overrideby"],
                             "valueused": False, "hascompletion": True,
                             "isautomatic": d["isautomatic"], "istrackeduser": d["istrackeduser"],
                             "uservisible": True, "details": d["details"],
                             "isoverallcomplete": d["isoverallcomplete"]})
    return {"statuses": statuses, "warnings": []}


def override_activity_completion_status(site: Site, p: dict, userid: int) -> dict:
    cm = site.cm_or_fail(p["cmid"])
    validate_module_context(site, cm, userid)
    _require_completion(site, cm)
    # update_state() returns early when the activity has no completion, else refuses an override with
    # an error string that does not exist (so Moodle's message is "error/nopermission").
    if cm.completion != TRACKING_NONE and not has_capability(site, "moodle/course:overridecompletion", userid,
                                                               cm.course):
        raise required_capability(site, "moodle/course:overridecompletion", cm.course, "nopermission")
    update_state(site, cm, p["newstate"], p["userid"], override=True, by=userid)
    data = site.completions.get((cm.id, p["userid"]))
    return {"cmid": cm.id, "userid": p["userid"], "state": data["state"] if data else 0,
            "timecompleted": data["timemodified"] if data else 0,
            "overrideby": data["overrideby"] if data else None, "tracking": cm.completion}


def update_activity_completion_status_manually(site: Site, p: dict, userid: int) -> dict:
    """The token user's own completion (update_state() with userid 0: $USER)."""
    cm = site.cm_or_fail(p["cmid"])
    validate_module_context(site, cm, userid)
    _require_completion(site, cm)
    if cm.completion != TRACKING_MANUAL:
        raise moodle_exception("cannotmanualctrack", "Activity does not provide manual completion tracking")
    update_state(site, cm, COMPLETION_COMPLETE if p["completed"] else COMPLETION_INCOMPLETE, userid)
    return {"status": True, "warnings": []}


FUNCTIONS = {
    "core_completion_get_activities_completion_status": external(
        get_activities_completion_status, {"courseid": Value("int"), "userid": Value("int")}, any_user=True),
    "core_completion_override_activity_completion_status": external(
        override_activity_completion_status,
        {"userid": Value("int"), "cmid": Value("int"), "newstate": Value("int")}, any_user=True),
    "core_completion_update_activity_completion_status_manually": external(
        update_activity_completion_status_manually, {"cmid": Value("int"), "completed": Value("bool")},
        any_user=True),
}
