"""The recorded site's test data (recordings 02-11, 16, 24, 25): courses C1-C3, students 3-7, grade book.

The same data seeds the box's own Moodle (issue 12): the server's courses
restored from a backup into another site, so every course, section,
activity, instance, context, grade item and account has another id there,
while names, short names, sections, module types, completion settings,
usernames, e-mails and idnumbers are the same.  A Layout says where the ids
start; the site's own course, the guest (1) and the admin (2) are those of
any fresh Moodle, on both.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import badges
from .config import BOX_SITE, GRADED_MODULES, SERVER_SITE, STUDENT_ROLE, TRACKING_AUTOMATIC, TRACKING_MANUAL, \
    SiteName
from .state import Record, Site

T_COURSES = 1795334424

# (id, shortname, sortorder, contextid, cacherev)
_COURSES = [(2, "C1", 10003, 11, 1795334435), (3, "C2", 10002, 15, 1795334435), (4, "C3", 10001, 19, 1795334432)]
# (cmid, courseid, section number, modname, instance, contextid, name, completion)
_CMS = [
    (1, 2, 1, "page", 1, 12, "C1 Page (manual completion)", TRACKING_MANUAL),
    (2, 2, 1, "url", 1, 13, "C1 URL (manual completion)", TRACKING_MANUAL),
    (3, 2, 2, "assign", 1, 14, "C1 Assignment (graded, completion on grade)", TRACKING_AUTOMATIC),
    (4, 3, 1, "page", 2, 16, "C2 Page (manual completion)", TRACKING_MANUAL),
    (5, 3, 1, "url", 2, 17, "C2 URL (manual completion)", TRACKING_MANUAL),
    (6, 3, 2, "assign", 2, 18, "C2 Assignment (graded, completion on grade)", TRACKING_AUTOMATIC),
    (7, 4, 1, "page", 3, 20, "C3 Page (manual completion)", TRACKING_MANUAL),
    (8, 4, 1, "url", 3, 21, "C3 URL (manual completion)", TRACKING_MANUAL),
]
# courseid -> list of (section id, section number)
_SECTIONS = {2: [(1, 0), (2, 1), (3, 2)], 3: [(4, 0), (5, 1), (6, 2)], 4: [(7, 0), (8, 1)]}
# Grade book: (courseid, category, course total item, graded cmid); the cm's item is the next id.
_GRADE_BOOK = [(2, 1, 1, 3), (3, 2, 3, 6)]
# The first free id of each kind after the recorded data.
_NEXT = {"user": 8, "course": 5, "cm": 9, "section": 9, "context": 22, "gradeitem": 5, "gradecategory": 3}
_NEXT_INSTANCE = {"page": 4, "url": 4, "assign": 3}


@dataclass(frozen=True)
class Layout:
    """The site's name, and what each kind of seeded id adds to the recorded one."""
    name: SiteName
    course: int = 0
    cm: int = 0
    user: int = 0
    section: int = 0
    context: int = 0
    instance: int = 0
    gradeitem: int = 0
    gradecategory: int = 0


SERVER = Layout(SERVER_SITE)
# C1 = 12, C2 = 13, C3 = 14; cmids 101-108; student1 = 23 ... student5 = 27 (the interface contract of issue 12).
BOX = Layout(BOX_SITE, course=10, cm=100, user=20, section=20, context=100, instance=30, gradeitem=40,
             gradecategory=40)


def seed_test_data(site: Site, layout: Layout = SERVER) -> None:
    """Add the recorded courses, activities, students and grade book to an empty site, with the layout's ids."""
    def course(recorded_id: int) -> int:
        return recorded_id + layout.course

    for cid, short, sortorder, ctx, cacherev in _COURSES:
        site.courses[course(cid)] = Record(
            id=course(cid), fullname=f"Reference course {short}", shortname=short, contextid=ctx + layout.context,
            categoryid=1, categoryname="Category 1", sortorder=sortorder,
            summary=f"Course {short} for edge sync validation", showcompletionconditions=True,
            idnumber=f"REF-{short}", format="topics", newsitems=0, startdate=1795305600,
            enddate=0, visible=1, enablecompletion=1, timecreated=T_COURSES,
            timemodified=T_COURSES, cacherev=cacherev, enrol_manual=True)
    for cid, secs in _SECTIONS.items():
        site.sections[course(cid)] = [Record(id=sid + layout.section, section=num,
                                             name="General" if num == 0 else "New section", sequence=[])
                                      for sid, num in secs]
    for recorded_cmid, cid, secnum, modname, instance, ctx, name, completion in _CMS:
        cmid = recorded_cmid + layout.cm
        site.cms[cmid] = Record(
            id=cmid, course=course(cid), modname=modname, instance=instance + layout.instance,
            contextid=ctx + layout.context, name=name, completion=completion, completionview=False,
            completionusegrade=(modname in GRADED_MODULES and completion == TRACKING_AUTOMATIC),
            timemodified=T_COURSES, content=f"<p>{name}</p>", externalurl=None, visible=1, section=secnum)
        site.sections[course(cid)][secnum].sequence.append(cmid)
    for i in range(1, 6):
        uid = i + 2 + layout.user
        site.add_user_record(uid, f"student{i}", f"Student{i}", "Reference", f"student{i}@example.invalid",
                             f"S00{i}")
        for cid in (2, 3):
            site.enrol(course(cid), uid, STUDENT_ROLE)
    for cid, catid, courseitem, cmid in _GRADE_BOOK:
        itemid = courseitem + layout.gradeitem
        site.add_course_item(itemid, course(cid), catid + layout.gradecategory)
        cm = site.cms[cmid + layout.cm]
        site.add_grade_item(itemid + 1, course(cid), "assign", cm.instance, 0, catid + layout.gradecategory,
                            cm.name, cm.id)
    # Course completion: every seeded course requires all its activities with completion (recordings 98, 99
    # show C3's), and has a completion badge (101 shows C3's); set_completion_criteria and set_course_badge
    # change that per course (100: a course without criteria).
    for cid in _SECTIONS:
        site.completion_criteria[course(cid)] = [cm.id for cm in site.course_cms(course(cid)) if cm.completion]
        badges.add_course_badge(site, course(cid), timecreated=T_COURSES)
    offsets = {"user": layout.user, "course": layout.course, "cm": layout.cm, "section": layout.section,
               "context": layout.context, "gradeitem": layout.gradeitem, "gradecategory": layout.gradecategory}
    site.next_ids.update({kind: first + offsets[kind] for kind, first in _NEXT.items()})
    site.next_ids["instance"] = {mod: first + layout.instance for mod, first in _NEXT_INSTANCE.items()}
