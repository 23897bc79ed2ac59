"""What the box's Moodle sends, checked as the events API checks what apps
send (issue 21): pure functions, no database, no server.

The box is a machine in a classroom; its Moodle (or whatever answers in its
place) may send what no stock Moodle sends. One bad record never stops a
collection: it is skipped, and named once in the collection's row; the
records around it are collected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ..kinds import PROFILE_FIELDS, grade_value
from .diff import Learner, grade_range, shown

__all__ = ["Skipped", "grade_range", "grade_value", "participant", "participants", "shown", "unique_usernames"]

# C0 and C1 control characters and DEL: never in a username or a name Moodle made.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Skipped:
    """A record left out, and why, in words."""

    problem: str


def participant(entry: Any) -> Learner | Skipped:
    """An entry of core_enrol_get_enrolled_users, or why it is skipped."""
    if not isinstance(entry, dict):
        return Skipped(f"a participant that is not a record: {shown(entry)}")
    uid, username = entry.get("id"), entry.get("username")
    who = f"participant {shown(uid)}" + (f" ({shown(username)})" if username is not None else "")
    if not isinstance(uid, int) or isinstance(uid, bool) or uid <= 0:
        return Skipped(f"{who}: id is not a number: {shown(uid)}")
    if not isinstance(username, str) or not username.strip():
        return Skipped(f"{who}: username is {'missing' if username is None else shown(username)}")
    if CONTROL.search(username) or len(username) > 100:
        return Skipped(f"{who}: username has control characters or is too long: {shown(username)}")
    profile = {}
    for key in PROFILE_FIELDS:
        if key not in entry:
            continue
        value = entry[key]
        if not isinstance(value, str):
            return Skipped(f"{who}: {key} is {'null' if value is None else shown(value)}")
        if CONTROL.search(value):
            return Skipped(f"{who}: {key} has control characters: {shown(value)}")
        if value:
            profile[key] = value
    roles_in = entry.get("roles")
    if roles_in is not None and not isinstance(roles_in, list):
        return Skipped(f"{who}: roles is not a list: {shown(roles_in)}")
    roles = tuple(str(r.get("shortname") or "") for r in roles_in or [] if isinstance(r, dict))
    access = entry.get("lastcourseaccess")
    if access is None:
        access = 0
    if not isinstance(access, int) or isinstance(access, bool) or access < 0:
        return Skipped(f"{who}: lastcourseaccess is not a time: {shown(access)}")
    return Learner(userid=uid, username=username, profile=profile, roles=tuple(r for r in roles if r),
                   lastcourseaccess=access)


def participants(entries: Iterable[Any]) -> tuple[list[Learner], list[str], set[int]]:
    """A page of participants: the learners, the problems of those skipped,
    and the ids of those skipped that have a sound id (still enrolled)."""
    good: list[Learner] = []
    problems: list[str] = []
    skipped: set[int] = set()
    for entry in entries:
        found = participant(entry)
        if isinstance(found, Skipped):
            problems.append(found.problem)
            uid = entry.get("id") if isinstance(entry, dict) else None
            if isinstance(uid, int) and not isinstance(uid, bool):
                skipped.add(uid)
        else:
            good.append(found)
    return good, problems, skipped


def unique_usernames(learners: list[Learner], holders: Mapping[str, int]
                     ) -> tuple[list[Learner], list[str]]:
    """A username held by two ids is nobody's for sure. ``holders``: the
    course's participants, as last collected, holding the page's usernames
    (username -> box user id). The one a username was collected under keeps
    it; any other entry claiming it is skipped (all of them, when it was
    never collected)."""
    ids_of: dict[str, set[int]] = {}
    for u in learners:
        ids_of.setdefault(u.username, set()).add(u.userid)
    kept, problems = [], []
    for u in learners:
        holder = holders.get(u.username)
        claimed = ids_of[u.username] | ({holder} if holder is not None else set())
        if len(claimed) > 1 and holder != u.userid:
            problems.append(f"participant {u.userid} ({u.username!r}): username {u.username!r} is also "
                            f"participant {min(claimed - {u.userid})}'s")
            continue
        kept.append(u)
    return kept, problems
