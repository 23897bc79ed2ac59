"""Course completion and badges, compared on the box's Moodle and on the server.

Moodle awards them by itself: a course completes, and its completion badge is
issued, in the same call that writes the last activity completion or grade its
criteria need. So the agent never writes them; it only checks that both sides
agree, as a teacher would see them. Per kept course and per learner known on
both sides, each side is read in batches (core_completion_get_course_completion_status,
core_badges_get_user_badges) and the learners for whom they differ are named,
with the likely cause: different completion criteria, a badge that exists on
one side only, or (same criteria) activity completions not synced yet. Verify
(agent/verify.py) and the sync (agent/sync.py) put the outcome, one line, in the
course's entry of the run ("awards"), which the Information dialog shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .kinds import COMPARED, COURSE_COMPLETION, USER_BADGES
from .moodle import MoodleClient, MoodleError, Unreachable
from .push.session import Session
from .store.db import BoxCourse, Course, Participant

_TAGS = re.compile(r"<[^>]*>")
NAMES_SHOWN = 5  # learners named in the line, the others counted


@dataclass
class Side:
    """What one Moodle shows of one course's completion and badges."""

    criteria: list[str] | None = None  # the course's criteria, in words; None: no criteria set
    completed: dict[str, bool] = field(default_factory=dict)  # username -> course completed
    badges: dict[str, set[str]] = field(default_factory=dict)  # username -> names of the course's badges issued
    unread: dict[str, str] = field(default_factory=dict)  # username -> why it could not be read


def criterion(entry: dict) -> str:
    """One criterion in words: its title and what it names (an activity's link: its name)."""
    details = _dict(entry.get("details"))
    what = _TAGS.sub("", str(details.get("criteria") or "")).strip()
    return f"{entry.get('title') or entry.get('type')}: {what}" if what else str(entry.get("title") or "")


# What either Moodle answers is checked like any input: a shape that is not Moodle's reads as empty,
# and "completed" is Moodle's JSON true, not any truthy value.
def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def course_completion(data: Any) -> tuple[bool, list[str]]:
    """core_completion_get_course_completion_status: completed, and its criteria in words."""
    status = _dict(_dict(data).get("completionstatus"))
    return status.get("completed") is True, sorted(criterion(c) for c in _list(status.get("completions"))
                                                     if isinstance(c, dict))


def badge_names(data: Any) -> set[str]:
    """core_badges_get_user_badges: the names of the badges issued."""
    return {str(b.get("name")) for b in _list(_dict(data).get("badges")) if isinstance(b, dict)}


def read_side(client: MoodleClient, course_id: int, ids: dict[str, int]) -> Side:
    """One side's answers for the learners (username -> that side's user id), batched."""
    names = sorted(ids)
    calls = [(COURSE_COMPLETION, {"courseid": course_id, "userid": ids[u]}) for u in names]
    calls += [(USER_BADGES, {"userid": ids[u], "courseid": course_id}) for u in names]
    results = client.read_all(calls)
    side = Side()
    for username, result in zip(names, results[:len(names)]):
        if result.ok:
            side.completed[username], side.criteria = course_completion(result.data)
        elif result.error is not None and result.error.errorcode == "nocriteriaset":
            side.completed[username] = False
        else:
            side.unread[username] = f"{result.error}"
    for username, result in zip(names, results[len(names):]):
        if result.ok:
            side.badges[username] = badge_names(result.data)
        else:
            side.unread.setdefault(username, f"{result.error}")
    return side


def _named(users: list[str]) -> str:
    shown = ", ".join(users[:NAMES_SHOWN])
    return shown + (f" and {len(users) - NAMES_SHOWN} more" if len(users) > NAMES_SHOWN else "")


def _criteria(side: Side) -> str:
    if side.criteria is None:
        return "no completion criteria"
    return f"{len(side.criteria)} criteria ({'; '.join(side.criteria)})"


def compare(box: Side, server: Side) -> str:
    """The comparison in one line: equal, or who differs and the likely cause."""
    both = sorted((set(box.completed) | set(box.badges) | set(server.completed) | set(server.badges))
                  - set(box.unread) - set(server.unread))
    completion = [u for u in both if box.completed.get(u, False) != server.completed.get(u, False)]
    badges = [u for u in both if box.badges.get(u, set()) != server.badges.get(u, set())]
    parts = []
    if completion:
        if box.criteria != server.criteria:
            cause = f"different completion criteria (box: {_criteria(box)}; server: {_criteria(server)})"
        else:
            cause = "the same criteria: their activity completions differ (not synced yet, or refused)"
        done_box = [u for u in completion if box.completed.get(u)]
        where = ("completed on the box only" if len(done_box) == len(completion) else
                 "completed on the server only" if not done_box else "completed on one side only")
        parts.append(f"course completion differs for {_named(completion)} ({where}); likely cause: {cause}")
    if badges:
        only_box = sorted({b for u in badges for b in box.badges.get(u, set()) - server.badges.get(u, set())})
        only_server = sorted({b for u in badges for b in server.badges.get(u, set()) - box.badges.get(u, set())})
        if set(badges) <= set(completion):
            cause = "the course completion differs"
        else:
            sides = ([f"{', '.join(repr(b) for b in only_box)} on the box only"] if only_box else []) + (
                [f"{', '.join(repr(b) for b in only_server)} on the server only"] if only_server else [])
            cause = "a badge that exists on one side only, or is named differently: " + "; ".join(sides)
        parts.append(f"badges differ for {_named(badges)}; likely cause: {cause}")
    unread = sorted(set(box.unread) | set(server.unread))
    if unread:
        why = box.unread.get(unread[0]) or server.unread.get(unread[0])
        parts.append(f"not compared for {_named(unread)} ({why})")
    if not parts:
        return f"course completion and badges: the same on both sides for {len(both)} learner(s)"
    return "; ".join(parts)


def learners(run: Session, course: Course, bc: BoxCourse) -> dict[str, tuple[int, int]]:
    """username -> (box id, server id) of the box course's students known on the server."""
    on_box = {p.username: p.userid for p in Participant.select().where(Participant.box_course == bc.id)
              if "student" in (p.roles or [])}
    run.resolve_users(set(on_box))
    return {u: (uid, run.user_ids[u]) for u, uid in on_box.items() if u in run.user_ids}


def compare_courses(run: Session, courses: list[Course], box: MoodleClient) -> None:
    """Each course's line into the run's course entries ("awards"); nothing is written to either Moodle.
    Without the functions on a side, or a side not answering, the line says so."""
    run.rec.box_traffic.append(box.meter())  # a new counter from now: the way down's stays counted
    try:
        lacking = run.client.site_info().lacking(list(COMPARED)) + [
            f"{f} (box)" for f in box.site_info().lacking(list(COMPARED))]
    except (MoodleError, Unreachable) as exc:
        lacking = [f"the box's Moodle ({exc})"]
    for course in courses:
        bc = BoxCourse.get_or_none(BoxCourse.course_id == course.id)
        if bc is None:
            continue
        entry = run.rec.courses.setdefault(course.id, {"id": course.id, "shortname": course.shortname,
                                                       "outcome": ""})
        if lacking:
            entry["awards"] = f"course completion and badges not compared: lacking {', '.join(lacking)}"
            continue
        run.check_stop()
        people = learners(run, course, bc)
        if not people:
            continue
        try:
            on_box = read_side(box, bc.id, {u: ids[0] for u, ids in people.items()})
            on_server = read_side(run.client, course.id, {u: ids[1] for u, ids in people.items()})
        except (MoodleError, Unreachable) as exc:
            entry["awards"] = f"course completion and badges not compared: {exc}"
            continue
        entry["awards"] = compare(on_box, on_server)
