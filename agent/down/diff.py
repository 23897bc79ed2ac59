"""What to write into the box's Moodle from the server, and who wins when
both sides changed: pure functions, no database, no server. agent/down/pull.py
reads both sides and the last known states, hands them to :func:`decide`,
and applies what it returns.

Values are a completion state (0 not done, anything else done: written as
1) or a raw grade. A side "changed" when its value differs from the last
one known for it: the server's against the last read or pushed there
(ServerSeen), the box's as a collected event not yet sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..box.diff import shown
from ..kinds import completion_state, grade_value, is_complete, whole_number

COMPLETION, GRADE = "completion", "grade"
BOX, SERVER = "box", "server"


@dataclass(frozen=True)
class Reported:
    """One side's value of one (learner, activity, kind), and when that side says it was set."""

    value: float
    time: int  # Unix time, 0 if unknown


@dataclass(frozen=True)
class Decision:
    """For one (learner, activity, kind): what to write into the box's Moodle
    (None: nothing); whether the box's waiting change is dropped (the
    server's value won, or already equals it), else it stays for the push;
    the value the server holds after this run (its new last known state);
    and, for a conflict, the rule that decided."""

    write_down: float | None
    drop_box: bool
    server_after: float | None
    rule: str | None = None

    @property
    def kept(self) -> str:
        return SERVER if self.drop_box else BOX


def normal(kind: str, value: float) -> float:
    """A completion is done or not (the override writes 1 or 0); a grade is itself."""
    return float(completion_state(is_complete(value))) if kind == COMPLETION else value


def decide(kind: str, server: Reported | None, seen: float | None, box_now: float | None,
           box_change: Reported | None) -> Decision:
    """``server``: the server's value now (None: it has none); ``seen``: its
    last known value; ``box_now``: the box's current value (as last
    collected); ``box_change``: the box's change waiting to be pushed, if
    any. A box change that stays queued leaves the server's last known
    state as it is: it moves once the server confirms the push
    (agent/down/pull.py, record_pushed), never before.

    A value equal on both sides is never sent. Both changed and differing:
    a completion done wins over not done; a grade, the later change wins,
    and a tie keeps the server's."""
    server_value = normal(kind, server.value) if server is not None else None
    box_now = normal(kind, box_now) if box_now is not None else None
    server_changed = server_value is not None and server_value != seen and not (
        seen is None and kind == COMPLETION and server_value == 0)
    if box_change is not None:
        box_value = normal(kind, box_change.value)
        if server_value == box_value:  # already there: nothing to send either way
            return Decision(None, True, server_value)
        if not server_changed:
            return Decision(None, False, seen)
        assert server is not None and server_value is not None
        if kind == COMPLETION:
            box_wins, rule = box_value > 0, "done wins over not done"
        else:
            box_wins = box_change.time > server.time
            rule = "the later change wins" if box_change.time != server.time else "a tie keeps the server's"
        if box_wins:
            return Decision(None, False, seen, rule)
        return Decision(None if box_now == server_value else server_value, True, server_value, rule)
    if not server_changed:
        return Decision(None, False, seen)
    return Decision(None if box_now == server_value else server_value, False, server_value)


def server_completions(statuses: Any) -> tuple[dict[int, Reported], list[str]]:
    """core_completion_get_activities_completion_status's statuses: cmid ->
    state; and the entries left out, named (checked as strictly as the
    box's: a string id or a state outside 0-3 is never written down)."""
    found: dict[int, Reported] = {}
    problems: list[str] = []
    for s in statuses if isinstance(statuses, list) else []:
        cmid = whole_number(s.get("cmid")) if isinstance(s, dict) else None
        state = whole_number(s.get("state")) if isinstance(s, dict) else None
        when = s.get("timecompleted") if isinstance(s, dict) else None
        if cmid is None or state not in (0, 1, 2, 3) or (when is not None and whole_number(when) is None):
            problems.append(f"completion state {shown(s)} is not Moodle's (cmid, state 0-3, timecompleted)")
            continue
        found[cmid] = Reported(float(state), when or 0)
    return found, problems


def server_grades(usergrades: Any, usernames: Mapping[int, str]) -> tuple[dict[tuple[str, int], Reported], list[str]]:
    """gradereport_user_get_grade_items: (username, cmid) -> raw grade, for
    the learners named; and the items left out, named (a grade that is not
    a finite number, a string id)."""
    found: dict[tuple[str, int], Reported] = {}
    problems: list[str] = []
    for report in usergrades if isinstance(usergrades, list) else []:
        username = usernames.get(whole_number(report.get("userid")) or 0) if isinstance(report, dict) else None
        if username is None:
            continue
        grades, refused = grade_items(report.get("gradeitems"), username)
        found |= {(username, cmid): reported for cmid, reported in grades.items()}
        problems += refused
    return found, problems


def grade_items(items: Any, username: str) -> tuple[dict[int, Reported], list[str]]:
    """One learner's grade items: cmid -> raw grade; and the items left out, named."""
    found: dict[int, Reported] = {}
    problems: list[str] = []
    for item in items if isinstance(items, list) else []:
        cmid = whole_number(item.get("cmid")) if isinstance(item, dict) else None
        if cmid is None or item.get("graderaw") is None:
            continue  # the course's total, a category, or no grade yet
        value, when = grade_value(item["graderaw"]), item.get("gradedategraded")
        if value is None:
            problems.append(f"grade {shown(item['graderaw'])} of {username} in activity {cmid} "
                            "is not a finite number")
            continue
        if when is not None and whole_number(when) is None:
            problems.append(f"grade of {username} in activity {cmid} has a gradedategraded "
                            f"{shown(when)} that is not a time")
            continue
        found[cmid] = Reported(value, when or 0)
    return found, problems
