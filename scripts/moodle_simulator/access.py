"""The acting user: whose token it is, what Moodle lets that user do, and entering a course.

Moodle runs a web service function as the token's user ($USER, set by
webservice/lib.php from the token).  The site admin may do everything; any
other user has the capabilities of their roles in the course (the role
archetypes of lib/db/access.php and the plugins' db/access.php), and
external_api::validate_context() lets them into a course only as
require_login() does: enrolled (an active enrolment) and, for a hidden course
or activity, only with the capability to see it.

Only the capabilities the simulated functions check are listed; functions
whose answers for such a user are not simulated refuse rather than answer as
the admin would (webservice.py).
"""

from __future__ import annotations

from .config import ADMIN_ID, SITE_COURSE
from .errors import MoodleException
from .rights import CAPABILITY_NAMES, granted
from .state import Record, Site

MANAGER, EDITINGTEACHER, TEACHER, STUDENT = 1, 3, 4, 5

# capability -> (the roles whose archetype allows it, get_capability_string()).
CAPABILITIES: dict[str, tuple[frozenset[int], str]] = {
    "report/progress:view": (frozenset({MANAGER, EDITINGTEACHER, TEACHER}), "View activity completion reports"),
    "moodle/course:overridecompletion": (frozenset({MANAGER, EDITINGTEACHER, TEACHER}),
                                         "Override activity completion status"),
    "moodle/course:viewhiddencourses": (frozenset({MANAGER, EDITINGTEACHER, TEACHER}), "View hidden courses"),
    "moodle/course:viewhiddenactivities": (frozenset({MANAGER, EDITINGTEACHER, TEACHER}),
                                           "View hidden activities"),
    "gradereport/user:view": (frozenset({MANAGER, EDITINGTEACHER, TEACHER, STUDENT}), "View your own grade report"),
    "moodle/grade:view": (frozenset({STUDENT}), "View own grades"),
    "moodle/grade:viewall": (frozenset({MANAGER, EDITINGTEACHER, TEACHER}), "View grades of other users"),
    "moodle/grade:edit": (frozenset({MANAGER, EDITINGTEACHER}), "Edit grades"),
    "moodle/grade:manage": (frozenset({MANAGER, EDITINGTEACHER}), "Manage grade items"),
    "moodle/grade:hide": (frozenset({MANAGER, EDITINGTEACHER}), "Hide/unhide grades or items"),
    "enrol/manual:enrol": (frozenset({MANAGER, EDITINGTEACHER}), "Enrol users"),
    "mod/assign:grade": (frozenset({MANAGER, EDITINGTEACHER, TEACHER}), "Grade assignment"),
}
# System capabilities: only the admin (and a system manager, not simulated) holds them.
SYSTEM_CAPABILITIES = {"moodle/user:create": "Create users", "moodle/user:update": "Update user profiles"}


def is_admin(userid: int) -> bool:
    return userid == ADMIN_ID


def course_url(site: Site, courseid: int) -> str:
    return f"{site.wwwroot}/course/view.php?id={courseid}"


def has_capability(site: Site, capability: str, userid: int, courseid: int | None = None) -> bool:
    """has_capability() in the course (None: the system context)."""
    if is_admin(userid) or granted(site, capability, userid, courseid):   # system and category roles
        return True
    if courseid is None or capability in SYSTEM_CAPABILITIES or capability not in CAPABILITIES:
        return False
    e = site.enrolment(courseid, userid)
    return bool(e and site.is_active_enrolment(e) and CAPABILITIES[capability][0] & set(e.roles))


def required_capability(site: Site, capability: str, courseid: int | None,
                        errorcode: str = "nopermissions") -> MoodleException:
    """required_capability_exception: its message names the capability (an unknown string: "error/<code>")."""
    name = SYSTEM_CAPABILITIES.get(capability) or (
        CAPABILITIES[capability][1] if capability in CAPABILITIES else CAPABILITY_NAMES[capability])
    message = (f"Sorry, but you do not currently have permissions to do that ({name})."
               if errorcode == "nopermissions" else f"error/{errorcode}")
    link = course_url(site, courseid) if courseid is not None else f"{site.wwwroot}/"
    return MoodleException("core\\exception\\required_capability_exception", errorcode, message, link=link)


def require_capability(site: Site, capability: str, userid: int, courseid: int | None = None) -> None:
    if not has_capability(site, capability, userid, courseid):
        raise required_capability(site, capability, courseid)


def require_login_exception(why: str) -> MoodleException:
    return MoodleException("core\\exception\\require_login_exception", "requireloginerror",
                           "Course or activity not accessible.", why)


def validate_course_context(site: Site, course: Record, userid: int) -> None:
    """external_api::validate_context() of a course: require_login($course) for the token's user.

    A user other than the admin who gets in has been in the course now:
    lastcourseaccess moves (issue 12's contract; a real Moodle logs it from
    its pages and core_course_view_course, not from every function)."""
    if is_admin(userid) or course.id == SITE_COURSE["id"]:
        return
    if not course.visible and not has_capability(site, "moodle/course:viewhiddencourses", userid, course.id):
        raise require_login_exception("Course is hidden")
    e = site.enrolment(course.id, userid)
    if (e is None or not site.is_active_enrolment(e)) and not has_capability(site, "moodle/course:view", userid,
                                                                              course.id):
        raise require_login_exception("Not enrolled")     # is_viewing(): moodle/course:view lets one in
    site.record_access(userid, course.id)


def validate_module_context(site: Site, cm: Record, userid: int) -> None:
    """validate_context() of an activity: the course's checks, then the activity's visibility."""
    validate_course_context(site, site.course_or_fail(cm.course), userid)
    if not cm.visible and not has_capability(site, "moodle/course:viewhiddenactivities", userid, cm.course):
        raise require_login_exception("Activity is hidden")


def not_simulated(fname: str) -> MoodleException:
    return MoodleException("moodle_simulator_exception", "notsimulated",
                           f"The simulator answers {fname} only for the site admin's token")
