"""The box's copy of its courses: what the server said, and when.

A course is "the same on both sides" when both ``timemodified`` and
``cacherev`` equal the box's copy. The recordings show activity edits change
only ``cacherev`` and that ``cacherev`` can move backwards, so the comparison
is equality, never "greater than".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .kinds import COURSE_CONTENTS, COURSES_BY_FIELD, whole_number
from .store.db import Activity, Course, database, iso, utcnow
from .moodle import MoodleClient, MoodleError


class CourseNotFound(LookupError):
    pass


@dataclass
class ServerCourse:
    id: int
    shortname: str
    fullname: str
    timemodified: int
    cacherev: int | None


def _server_course(c: Any) -> ServerCourse | None:
    """A course as either Moodle answers it; None when it is not Moodle's
    (what a Moodle answers is checked like any input: a string id, say)."""
    if not isinstance(c, dict) or whole_number(c.get("id")) is None:
        return None
    timemodified, cacherev = c.get("timemodified") or 0, c.get("cacherev")
    if whole_number(timemodified) is None or (cacherev is not None and whole_number(cacherev) is None):
        return None
    return ServerCourse(id=c["id"], shortname=str(c.get("shortname", "")), fullname=str(c.get("fullname", "")),
                        timemodified=timemodified, cacherev=cacherev)


def _courses(answer: Any) -> list[ServerCourse]:
    found = answer.get("courses") if isinstance(answer, dict) else None
    return [c for c in map(_server_course, found if isinstance(found, list) else []) if c is not None]


def by_ids(ids: list[int]) -> tuple[str, dict[str, Any]]:
    """The call asking all the given courses at once, whatever their number
    (for a caller that sends it in a batch with others; ``courses_of`` reads its answer)."""
    return COURSES_BY_FIELD, {"field": "ids", "value": ",".join(str(i) for i in sorted(set(ids)))}


def courses_of(answer: Any) -> dict[int, ServerCourse]:
    return {c.id: c for c in _courses(answer)}


def fetch_by_ids(client: MoodleClient, ids: list[int]) -> dict[int, ServerCourse]:
    """All the given courses in one request, whatever their number."""
    return courses_of(client.call(*by_ids(ids))) if ids else {}


def fetch_by_shortname(client: MoodleClient, shortname: str) -> ServerCourse:
    answer = client.call(COURSES_BY_FIELD, {"field": "shortname", "value": shortname})
    courses = _courses(answer)
    if not courses:
        raise CourseNotFound(f"no course with short name {shortname!r} on the server")
    return courses[0]


def fetch_contents(client: MoodleClient, course_id: int) -> list:
    return client.call(COURSE_CONTENTS, {"courseid": course_id})


def store(course: ServerCourse, contents: list) -> None:
    """Replace the box's copy of one course and its activities."""
    activities = [
        {"cmid": int(m["id"]), "course": course.id, "section": int(s.get("section", 0)),
         "name": str(m.get("name", ""))[:255], "modname": str(m.get("modname", "")),
         "instance": m.get("instance"), "completion": int(m.get("completion") or 0)}
        for s in contents for m in s.get("modules", [])
    ]
    with database.obj.atomic():
        Course.insert(
            id=course.id, shortname=course.shortname, fullname=course.fullname,
            timemodified=course.timemodified, cacherev=course.cacherev,
            fetched_at=iso(utcnow()), contents=contents,
        ).on_conflict_replace().execute()
        Activity.delete().where(Activity.course == course.id).execute()
        for start in range(0, len(activities), 200):
            Activity.insert_many(activities[start:start + 200]).on_conflict_replace().execute()


def refresh(client: MoodleClient, course: ServerCourse) -> None:
    store(course, fetch_contents(client, course.id))


def add(client: MoodleClient, specs: list[str]) -> list[Course]:
    """Fetch courses named by id or short name and keep them on the box."""
    ids = [int(s) for s in specs if s.isdigit()]
    found = fetch_by_ids(client, ids)
    missing = [i for i in ids if i not in found]
    if missing:
        raise CourseNotFound(f"no course with id {missing[0]} on the server")
    courses = list(found.values())
    courses += [fetch_by_shortname(client, s) for s in specs if not s.isdigit()]
    for course in courses:
        if course.id == 1:
            raise CourseNotFound("course 1 is the site's front page, not a course")
        refresh(client, course)
    return [Course.get_by_id(c.id) for c in courses]


def remove(specs: list[str]) -> int:
    removed = 0
    with database.obj.atomic():
        for spec in specs:
            query = Course.id == int(spec) if spec.isdigit() else Course.shortname == spec
            removed += Course.delete().where(query).execute()
    return removed


def is_same(box: Course, server: ServerCourse) -> bool:
    return box.timemodified == server.timemodified and box.cacherev == server.cacherev


__all__ = ["CourseNotFound", "ServerCourse", "MoodleError", "add", "fetch_by_ids", "is_same",
           "refresh", "remove", "store"]
