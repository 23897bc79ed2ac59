"""core_badges: a course's completion badge, issued when the course is completed, and core_badges_get_user_badges.

A course may have one badge whose criterion is the course's completion
(BADGE_CRITERIA_TYPE_COURSE); the course_completed event issues it at once
(badge_issued, with a unique hash), and the first award locks the badge
(status 1 active -> 3 active and locked, timemodified then).  Recording 101.
"""

from __future__ import annotations

import hashlib

from .access import validate_course_context
from .config import ADMIN_ID
from .errors import moodle_exception
from .params import DEFAULT, Value, external
from .state import Record, Site

BADGE_TYPE_COURSE = 2
BADGE_STATUS_ACTIVE, BADGE_STATUS_ACTIVE_LOCKED = 1, 3
_MESSAGE = ('<p>You have been awarded the badge "%badgename%"!</p>\n<p>More information about this badge can be '
            'found on the %badgelink% badge information page.</p>\n<p>You can manage and download the badge from '
            'your <a href="{wwwroot}/badges/mybadges.php">Manage badges</a> page.</p>')


def add_course_badge(site: Site, courseid: int, name: str | None = None, description: str | None = None,
                     timecreated: int | None = None) -> int:
    """An active course badge awarded on the course's completion; its id."""
    course = site.courses[courseid]
    badgeid = site.next_id("badge")
    now = site.now() if timecreated is None else timecreated
    site.badges[badgeid] = Record(
        id=badgeid, name=name or f"{course.shortname} completion badge",
        description=description or f"Awarded on completion of course {course.shortname}",
        timecreated=now, timemodified=now, usercreated=ADMIN_ID, usermodified=ADMIN_ID,
        courseid=courseid, status=BADGE_STATUS_ACTIVE)
    return badgeid


def set_course_badge(site: Site, courseid: int, present: bool = True) -> dict:
    """Give the course a completion badge (present) or delete its badges with their awards."""
    if courseid not in site.courses or courseid == 1:
        raise ValueError(f"courseid: no course {courseid!r}")
    mine = [b.id for b in site.badges.values() if b.courseid == courseid]
    if present and not mine:
        mine = [add_course_badge(site, courseid)]
    elif not present:
        for badgeid in mine:
            del site.badges[badgeid]
            for issued in [i for i, row in site.badge_issues.items() if row.badgeid == badgeid]:
                del site.badge_issues[issued]
        mine = []
    return {"courseid": courseid, "badgeids": mine}


def course_completed(site: Site, courseid: int, userid: int) -> None:
    """The badges observer of \\core\\event\\course_completed: issue the course's completion badges."""
    now = site.now()
    for badge in sorted((b for b in site.badges.values() if b.courseid == courseid), key=lambda b: b.id):
        if any(i.badgeid == badge.id and i.userid == userid for i in site.badge_issues.values()):
            continue
        issued = site.next_id("badgeissued")
        # badge::issue(): sha1(rand() . usercreated . id . time()); here stable for a test to compare.
        unique = hashlib.sha1(f"{site.name.shortname}:{badge.id}:{userid}:{now}".encode()).hexdigest()
        site.badge_issues[issued] = Record(id=issued, badgeid=badge.id, userid=userid, uniquehash=unique,
                                           dateissued=now, visible=1)
        if badge.status == BADGE_STATUS_ACTIVE:
            badge.update(status=BADGE_STATUS_ACTIVE_LOCKED, timemodified=now)


def forget(site: Site, match) -> int:
    """Drop the awards that ``match(courseid, userid)``."""
    gone = [i for i, row in site.badge_issues.items()
            if row.badgeid in site.badges and match(site.badges[row.badgeid].courseid, row.userid)]
    for i in gone:
        del site.badge_issues[i]
    return len(gone)


def _badge_out(site: Site, badge: Record, issued: Record, user: Record) -> dict:
    course = site.courses.get(badge.courseid)
    context = course.contextid if course is not None else 1
    return {
        "id": badge.id, "name": badge.name, "description": badge.description,
        "timecreated": badge.timecreated, "timemodified": badge.timemodified,
        "usercreated": badge.usercreated, "usermodified": badge.usermodified,
        "issuername": site.name.fullname, "issuerurl": site.wwwroot, "issuercontact": "",
        "expiredate": None, "expireperiod": None, "type": BADGE_TYPE_COURSE, "courseid": badge.courseid,
        "message": _MESSAGE.format(wwwroot=site.wwwroot),
        "messagesubject": "Congratulations! You just earned a badge!", "attachment": 1, "notification": 0,
        "nextcron": None, "status": badge.status, "issuedid": issued.id, "uniquehash": issued.uniquehash,
        "dateissued": issued.dateissued, "dateexpire": None, "visible": issued.visible,
        "recipientid": user.id, "recipientfullname": f"{user.firstname} {user.lastname}", "email": user.email,
        "version": "1", "language": "en", "imageauthorname": "", "imageauthoremail": "", "imageauthorurl": "",
        "imagecaption": "",
        "badgeurl": f"{site.wwwroot}/webservice/pluginfile.php/{context}/badges/badgeimage/{badge.id}/f3",
        "alignment": [], "relatedbadges": [],
    }


def get_user_badges(site: Site, p: dict, userid: int) -> dict:
    """core_badges_external::get_user_badges() as the site admin sees it: newest award first."""
    uid = p["userid"] or userid
    user = site.user_or_fail(uid)
    if user.hidden:
        raise moodle_exception("guestsarenotallowed", "The guest user cannot do this")
    if p["courseid"]:
        validate_course_context(site, site.course_or_fail(p["courseid"]), userid)
    rows = []
    for issued in site.badge_issues.values():
        badge = site.badges.get(issued.badgeid)
        if issued.userid != uid or badge is None or (p["courseid"] and badge.courseid != p["courseid"]):
            continue
        if p["search"] and p["search"].lower() not in badge.name.lower():
            continue
        rows.append((badge, issued))
    rows.sort(key=lambda r: (-r[1].dateissued, r[1].id))
    if p["perpage"]:
        rows = rows[p["page"] * p["perpage"]:(p["page"] + 1) * p["perpage"]]
    return {"badges": [_badge_out(site, b, i, user) for b, i in rows], "warnings": []}


FUNCTIONS = {
    "core_badges_get_user_badges": external(get_user_badges, {
        "userid": Value("int", DEFAULT, 0),
        "courseid": Value("int", DEFAULT, 0),
        "page": Value("int", DEFAULT, 0),
        "perpage": Value("int", DEFAULT, 0),
        "search": Value("raw", DEFAULT, ""),
        "onlypublic": Value("bool", DEFAULT, False),
    }),
}
