"""The recorded site's test data (recordings 02-11, 16, 24, 25): courses C1-C3, students 3-7, grade book."""

from __future__ import annotations

from .config import GRADED_MODULES, STUDENT_ROLE, TRACKING_AUTOMATIC, TRACKING_MANUAL
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


def seed_test_data(site: Site) -> None:
    """Add the recorded courses, activities, students and grade book to an empty site."""
    for cid, short, sortorder, ctx, cacherev in _COURSES:
        site.courses[cid] = Record(
            id=cid, fullname=f"Reference course {short}", shortname=short, contextid=ctx,
            categoryid=1, categoryname="Category 1", sortorder=sortorder,
            summary=f"Course {short} for edge sync validation", showcompletionconditions=True,
            idnumber=f"REF-{short}", format="topics", newsitems=0, startdate=1795305600,
            enddate=0, visible=1, enablecompletion=1, timecreated=T_COURSES,
            timemodified=T_COURSES, cacherev=cacherev, enrol_manual=True)
    for cid, secs in _SECTIONS.items():
        site.sections[cid] = [Record(id=sid, section=num, name="General" if num == 0 else "New section",
                                     sequence=[]) for sid, num in secs]
    for cmid, cid, secnum, modname, inst, ctx, name, completion in _CMS:
        site.cms[cmid] = Record(
            id=cmid, course=cid, modname=modname, instance=inst, contextid=ctx, name=name,
            completion=completion, completionview=False,
            completionusegrade=(modname in GRADED_MODULES and completion == TRACKING_AUTOMATIC),
            timemodified=T_COURSES, content=f"<p>{name}</p>", externalurl=None, visible=1, section=secnum)
        site.sections[cid][secnum].sequence.append(cmid)
    for i in range(1, 6):
        uid = i + 2
        site.add_user_record(uid, f"student{i}", f"Student{i}", "Reference", f"student{i}@example.invalid",
                             f"S00{i}")
        for cid in (2, 3):
            site.enrol(cid, uid, STUDENT_ROLE)
    for cid, catid, courseitem, cmid in _GRADE_BOOK:
        site.add_course_item(courseitem, cid, catid)
        cm = site.cms[cmid]
        site.add_grade_item(courseitem + 1, cid, "assign", cm.instance, 0, catid, cm.name, cmid)
    site.next_ids.update({"user": 8, "course": 5, "cm": 9, "section": 9, "context": 22, "gradeitem": 5,
                          "gradecategory": 3, "instance": {"page": 4, "url": 4, "assign": 3}})
