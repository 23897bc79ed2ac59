"""What changed on the box's own Moodle since the last collection: pure
functions, no database, no server. agent/box/collect.py reads the box's Moodle,
hands the answers and the last collected state to these functions, and
queues what they return.

Every change carries the state it moves to and that state's version (the
time Moodle stamped it), so that its event id can be derived from them: a
collection repeated after a crash queues the same ids again, which the
queue stores once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Collection, Iterable, Mapping

from ..kinds import grade_value


COMPLETION, GRADE = "completion", "grade"
# Moodle moves a course's lastcourseaccess at most once a minute
# (LASTACCESS_UPDATE_SECS in lib/moodlelib.php, user_accesstime_log()).
ACCESS_STEP_S = 60


@dataclass(frozen=True)
class Learner:
    """Someone enrolled in a course of the box's Moodle."""

    userid: int
    username: str
    profile: Mapping[str, str]  # firstname, lastname, email, idnumber (as the box has them)
    roles: tuple[str, ...]  # role short names
    lastcourseaccess: int

    @property
    def role(self) -> str | None:
        """The role an enrolment on the server gets: student, or None for
        anyone else (a teacher made on the box is not made on the server)."""
        return "student" if "student" in self.roles else None


@dataclass(frozen=True)
class Change:
    """One learner's new state of one activity."""

    kind: str  # completion or grade
    username: str
    box_cmid: int
    value: float | None  # completion state (0 not done, 1 done, 2 passed, 3 failed), or the raw grade (None: removed)
    version: str  # when Moodle set it (timecompleted, the date graded)
    time: int  # Unix time of the state, 0 if unknown
    problem: str | None = None  # why it is a conflict from the start (agent/box/check.py), if it is one


def to_read(learners: Iterable[Learner], last_access: Mapping[int, int], full: bool,
            recheck: Collection[int] = ()) -> list[Learner]:
    """Whose completion states (and grades) to read: every learner in a full
    collection; else those whose lastcourseaccess moved since the last
    collection (a learner marks an activity done in the course, so their
    access moves; a teacher's override or grade does not: the full
    collection before every sync catches those), those new to the course who
    have been in it (a newcomer who never was has done nothing there), and
    those ``recheck`` names (see :func:`needs_recheck`)."""
    return [u for u in learners if u.role is not None
            and (full or (u.userid not in last_access and u.lastcourseaccess > 0)
                 or (u.userid in last_access and last_access[u.userid] != u.lastcourseaccess)
                 or u.userid in recheck)]


def needs_recheck(lastcourseaccess: int, box_now: float | None) -> bool:
    """Read this learner again next time even if their access does not move:
    it was under a minute old when read, and what they do in the rest of
    that minute leaves it where it is."""
    return lastcourseaccess > 0 and (box_now is None or box_now - lastcourseaccess < ACCESS_STEP_S)


def completion_changes(username: str, statuses: Iterable[Mapping[str, Any]],
                       previous: Mapping[tuple[str, int], float | None]) -> list[Change]:
    """A learner's completion states (core_completion_get_activities_completion_status)
    against the last collected ones: a state never collected counts only
    when it is done; one back to 0 is a change too (undone on the box)."""
    changes = []
    for s in statuses:
        cmid, state = int(s["cmid"]), int(s.get("state") or 0)
        before = previous.get((username, cmid))
        if (before is None and state == 0) or before == state:
            continue
        when = int(s.get("timecompleted") or 0)
        # An override moves the state with a time of its own; who overrode is part of the version.
        version = f"{when}/{s.get('overrideby') or ''}"
        changes.append(Change(COMPLETION, username, cmid, float(state), version, when))
    return changes


def shown(value: Any) -> str:
    """A value as the row names it: escaped, never longer than 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def grade_range(item: Mapping[str, Any]) -> tuple[float, float] | None:
    """The activity's grade range (grademin, grademax), when the grade item gives a sound one."""
    low, high = grade_value(item.get("grademin")), grade_value(item.get("grademax"))
    if low is None or high is None or low > high:
        return None
    return low, high


def grade_changes(usergrades: Iterable[Mapping[str, Any]], usernames: Mapping[int, str],
                  previous: Mapping[tuple[str, int], float | None]) -> tuple[list[Change], list[str]]:
    """The learners' activity grades (gradereport_user_get_grade_items)
    against the last collected ones, and the grades never queued, in words
    (a value that is not a finite number: agent/kinds.py grade_value). A grade
    outside the activity's range, or one taken away on the box (graderaw
    null where a grade was collected), is a change whose ``problem`` makes
    it a conflict of its own: never sent as it is, never silently dropped."""
    changes, refused = [], []
    for report in usergrades:
        userid = report.get("userid")
        username = usernames.get(userid) if isinstance(userid, int) else None
        if username is None:
            continue
        for item in report.get("gradeitems") or []:
            cmid = item.get("cmid")
            if not isinstance(cmid, int) or isinstance(cmid, bool):
                continue
            raw = item.get("graderaw")
            before = previous.get((username, cmid))
            when = item.get("gradedategraded")
            when = when if isinstance(when, int) and not isinstance(when, bool) and when > 0 else 0
            if raw is None:
                if before is not None:
                    changes.append(Change(GRADE, username, cmid, None, str(when), when,
                                          f"the grade ({before:g}) was removed on the box's Moodle; the "
                                          "server's is left as it is (web services cannot remove a grade)"))
                continue
            value = grade_value(raw)
            if value is None:
                refused.append(f"{username}'s grade for activity {cmid} is not a number: {shown(raw)}; "
                               "it was not queued")
                continue
            if before == value:
                continue
            bounds = grade_range(item)
            problem = None
            if bounds is not None and not bounds[0] <= value <= bounds[1]:
                problem = (f"the grade {value:g} is outside the activity's range on the box's Moodle "
                           f"({bounds[0]:g} to {bounds[1]:g})")
            changes.append(Change(GRADE, username, cmid, value, str(when), when, problem))
    return changes, refused


def grade_idnumbers(usergrades: Iterable[Mapping[str, Any]]) -> dict[int, str]:
    """cmid -> the idnumber of its grade item (Moodle keeps it equal to the
    activity's), where one is set."""
    found = {}
    for report in usergrades:
        for item in report.get("gradeitems") or []:
            if isinstance(item.get("cmid"), int) and isinstance(item.get("idnumber"), str) and item["idnumber"]:
                found[int(item["cmid"])] = str(item["idnumber"])
    return found


def event_key(box_name: str, shortname: str, username: str, box_cmid: int | str, kind: str,
              value: object = "", version: str = "") -> str:
    """The id of a collected event: the same box, course, learner, activity
    and new state always give the same id."""
    text = "|".join(str(p) for p in (box_name, shortname, username, box_cmid, kind, value, version))
    return "box-" + hashlib.sha256(text.encode()).hexdigest()[:32]
