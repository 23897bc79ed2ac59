"""Course completion: a course's activity criteria, the learners who meet them, and its web service function.

Moodle 4.5 keeps the criteria of a course (course_completion_criteria, here
activity criteria only, aggregation "all"), the criteria each learner has
met (course_completion_crit_compl) and the completed courses
(course_completions).  A single user's activity completion change marks the
criteria and aggregates the course at once, in the same request
(completion_info::internal_set_data -> core_completion\\api::
mark_course_completions_activity_criteria + aggregate_completions), and the
course_completed event awards the course's completion badge (badges.py).
Met criteria and completed courses are never taken back, as in Moodle.
"""

from __future__ import annotations

from . import badges
from .access import validate_course_context
from .config import TRACKING_NONE
from .errors import moodle_exception
from .params import Value, external
from .state import Record, Site

CRITERIA_TYPE_ACTIVITY = 4      # COMPLETION_CRITERIA_TYPE_ACTIVITY
AGGREGATION_ALL = 1             # COMPLETION_AGGREGATION_ALL
_DONE = (1, 2, 3)               # complete, complete-pass, complete-fail (completionpassgrade off) meet a criterion


def all_activities(site: Site, courseid: int) -> list[int]:
    """The cmids of the course's activities with completion: the default criteria of a seeded course."""
    return [cm.id for cm in site.course_cms(courseid) if cm.completion != TRACKING_NONE]


def set_criteria(site: Site, courseid: int, cmids: list[int] | None) -> list[int]:
    """The course's activity criteria (None or []: none, so core_completion_get_course_completion_status
    answers nocriteriaset); then, as Moodle's completion cron does, everyone who already meets them."""
    if cmids:
        wrong = [c for c in cmids if c not in site.cms or site.cms[c].course != courseid
                 or site.cms[c].completion == TRACKING_NONE]
        if wrong:
            raise ValueError(f"cmids: {wrong} are not activities with completion in course {courseid}")
        site.completion_criteria[courseid] = list(dict.fromkeys(cmids))
    else:
        site.completion_criteria.pop(courseid, None)
    # Only a learner with an activity completion can meet a criterion: a course of 200,000 generated
    # participants is not walked.
    criteria = set(site.completion_criteria.get(courseid, []))
    for uid in sorted({uid for cmid, uid in site.completions if cmid in criteria}):
        review(site, courseid, uid)
    return site.completion_criteria.get(courseid, [])


def review(site: Site, courseid: int, userid: int) -> None:
    """mark_course_completions_activity_criteria() for one user, then aggregate_completions(): each
    criterion met takes the activity completion's time; the course is complete when all are met."""
    cmids = site.completion_criteria.get(courseid)
    course = site.courses.get(courseid)
    if not cmids or course is None or not course.enablecompletion:
        return
    e = site.enrolment(courseid, userid)
    if e is None or not e.roles:          # the query joins role_assignments in the course
        return
    for cmid in cmids:
        key = (courseid, cmid, userid)
        done = site.completions.get((cmid, userid))
        if key not in site.criteria_completions and done is not None and done["state"] in _DONE:
            site.criteria_completions[key] = done["timemodified"]
    if (courseid, userid) in site.course_completions:
        return
    times = [site.criteria_completions.get((courseid, cmid, userid)) for cmid in cmids]
    if all(t is not None for t in times):
        site.course_completions[(courseid, userid)] = max(t for t in times if t is not None)
        badges.course_completed(site, courseid, userid)


def forget(site: Site, match) -> int:
    """Drop the criteria met and the completed courses that ``match(courseid, userid)`` (a restored backup)."""
    dropped = 0
    for criterion in [k for k in site.criteria_completions if match(k[0], k[2])]:
        del site.criteria_completions[criterion]
    for key in [k for k in site.course_completions if match(*k)]:
        del site.course_completions[key]
        dropped += 1
    return dropped


def _requirement(cm: Record) -> str:
    """completion_criteria_activity::get_details()'s requirement."""
    if cm.completion == 1:
        return "Marking yourself complete"
    parts = []
    if cm.completionview:
        parts.append(f"Viewing the {cm.modname}")
    if cm.completionusegrade:
        parts.append("Achieving grade")
    return ", ".join(parts)


def get_course_completion_status(site: Site, p: dict, userid: int) -> dict:
    """core_completion_external::get_course_completion_status() (recordings 98-100)."""
    course = site.course_or_fail(p["courseid"])
    user = site.user_or_fail(p["userid"])
    if user.hidden:             # core_user::require_active_user(): the guest
        raise moodle_exception("guestsarenotallowed",
                               "The guest user cannot do this")
    if user.suspended or user.auth == "nologin":
        raise moodle_exception("suspended", "Suspended account", module="auth")
    validate_course_context(site, course, userid)
    if not course.enablecompletion:     # completion_can_view_data() needs completion on in the course
        raise moodle_exception("cannotviewreport", "You cannot view this report")
    if not site.is_tracked(course.id, user.id):
        if user.id == userid:
            raise moodle_exception("notenroled", "You are not enrolled in this course", module="completion")
        raise moodle_exception("usernotenroled", "User is not enrolled in this course", module="completion")
    cmids = [c for c in site.completion_criteria.get(course.id, []) if c in site.cms]
    if not cmids:
        raise moodle_exception("nocriteriaset", "No completion criteria set for this course", module="completion")
    rows = []
    for cmid in cmids:
        cm = site.cms[cmid]
        done = site.criteria_completions.get((course.id, cmid, user.id))
        rows.append({
            "type": CRITERIA_TYPE_ACTIVITY, "title": "Activity completion",
            "status": "Yes" if done is not None else "No", "complete": done is not None, "timecompleted": done,
            "details": {"type": "Activity completion",
                        "criteria": f'<a href="{site.wwwroot}/mod/{cm.modname}/view.php?id={cm.id}">{cm.name}</a>',
                        "requirement": _requirement(cm), "status": ""},
        })
    return {"completionstatus": {"completed": (course.id, user.id) in site.course_completions,
                                 "aggregation": AGGREGATION_ALL, "completions": rows},
            "warnings": []}


FUNCTIONS = {
    "core_completion_get_course_completion_status": external(
        get_course_completion_status, {"courseid": Value("int"), "userid": Value("int")}),
}
