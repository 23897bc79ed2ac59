"""The box's activities mapped to the server's, for one course: the pure
matching (:func:`map_activities`), and each course's mapping computed once
per sync (:class:`Mappings`), shared by the way up (agent/course_check.py gives the
box's completions and grades the server's cmids) and the way down
(agent/down/pull.py writes under the box's cmids)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection

from .store.db import Activity, BoxActivity, BoxCourse


@dataclass(frozen=True)
class ActivityInfo:
    """An activity of one side, as the mapping needs it."""

    cmid: int
    section: int
    modname: str
    name: str
    idnumber: str | None = None


def describe_activity(a: ActivityInfo) -> str:
    """An activity in words, for the teacher: its name, type and section."""
    return f"'{a.name}' ({a.modname}, section {a.section})"


@dataclass
class ActivityMapping:
    mapped: dict[int, int] = field(default_factory=dict)  # box cmid -> server cmid
    unmapped: dict[int, str] = field(default_factory=dict)  # box cmid -> why, in words


def map_activities(box: Collection[ActivityInfo], server: Collection[ActivityInfo]) -> ActivityMapping:
    """Which server activity each box activity is. A box course and its server
    course are the same course restored elsewhere: every id differs, but an
    activity keeps its idnumber, its section, its type and its name. By
    idnumber where both sides have one, else by (section, type, name); only a
    unique match counts, both ways: nothing is ever guessed."""
    result = ActivityMapping()
    by_idnumber: dict[str, list[ActivityInfo]] = {}
    by_key: dict[tuple[int, str, str], list[ActivityInfo]] = {}
    for a in server:
        if a.idnumber:
            by_idnumber.setdefault(a.idnumber, []).append(a)
        by_key.setdefault((a.section, a.modname, a.name), []).append(a)
    claimed: dict[int, list[int]] = {}  # server cmid -> the box cmids matching it
    for b in box:
        same_id = by_idnumber.get(b.idnumber, []) if b.idnumber else []
        if same_id:
            found, rule = same_id, f"idnumber {b.idnumber!r}"
        else:
            # An idnumber on both sides that differs says: another activity.
            found = [a for a in by_key.get((b.section, b.modname, b.name), []) if not (a.idnumber and b.idnumber)]
            rule = "section, type and name"
        if not found:
            result.unmapped[b.cmid] = f"no activity on the server has the same {rule}"
        elif len(found) > 1:
            result.unmapped[b.cmid] = f"{len(found)} activities on the server have the same {rule}"
        else:
            claimed.setdefault(found[0].cmid, []).append(b.cmid)
    for server_cmid, box_cmids in claimed.items():
        if len(box_cmids) == 1:
            result.mapped[box_cmids[0]] = server_cmid
        else:
            for cmid in box_cmids:
                result.unmapped[cmid] = f"{len(box_cmids)} activities of the box match the same server activity"
    return result


@dataclass
class CourseMapping:
    """One kept course's activities on both sides, and how they map."""

    box_course: int  # the course's id on the box's Moodle
    on_box: dict[int, ActivityInfo]  # box cmid -> activity
    on_server: dict[int, ActivityInfo]  # server cmid -> activity
    result: ActivityMapping

    @property
    def mapped(self) -> dict[int, int]:
        """box cmid -> server cmid"""
        return self.result.mapped

    @property
    def unmapped(self) -> dict[int, str]:
        return self.result.unmapped

    @property
    def to_box(self) -> dict[int, int]:
        """server cmid -> box cmid"""
        return {server: box for box, server in self.result.mapped.items()}


@dataclass
class Mappings:
    """Each course's mapping, read and computed once per sync (after the
    course check has brought the server's activities up to date)."""

    courses: dict[int, CourseMapping | None] = field(default_factory=dict)

    def of(self, course_id: int) -> CourseMapping | None:
        """None: the course is not on the box's Moodle (not collected yet)."""
        if course_id not in self.courses:
            self.courses[course_id] = load(course_id)
        return self.courses[course_id]


def load(course_id: int) -> CourseMapping | None:
    box = BoxCourse.get_or_none(BoxCourse.course_id == course_id)
    if box is None:
        return None
    on_box = {a.cmid: ActivityInfo(a.cmid, a.section, a.modname, a.name, a.idnumber)
              for a in BoxActivity.select().where(BoxActivity.box_course == box.id)}
    on_server = {a.cmid: ActivityInfo(a.cmid, a.section, a.modname, a.name)
                 for a in Activity.select().where(Activity.course == course_id)}
    return CourseMapping(box.id, on_box, on_server, map_activities(list(on_box.values()), list(on_server.values())))
