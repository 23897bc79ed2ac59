"""One description per kind of data the agent carries: the table every part
reads instead of a list of its own. The queue's validator (agent/store/queue.py),
the push (agent/push/), the way down (agent/down/), the collection
(agent/box/collect.py), the history's counters (agent/store/history.py),
``check`` and the page all read it: a new kind is one entry here, its
validator, and its tests.

Pure data: no database, no wire. The page imports it (tests/test_imports.py);
a kind's validator is named here and looked up only when an event is
checked, so that this module loads nothing of the queue.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Literal

# The run's own reads, whatever the kinds: the online check, the course check,
# and the look-ups and enrolment checks every event waits for.
SITE_INFO = "core_webservice_get_site_info"
COURSES_BY_FIELD = "core_course_get_courses_by_field"
COURSE_CONTENTS = "core_course_get_contents"
COURSE_READS = (COURSES_BY_FIELD, COURSE_CONTENTS)
LOOKUP = "core_user_get_users_by_field"
PROFILES = "core_user_get_course_user_profiles"
PARTICIPANTS = "core_enrol_get_enrolled_users"
COMPLETION_STATES = "core_completion_get_activities_completion_status"
GRADE_ITEMS = "gradereport_user_get_grade_items"
OVERRIDE = "core_completion_override_activity_completion_status"
UPDATE_GRADES = "core_grades_update_grades"
CREATE_USERS = "core_user_create_users"
UPDATE_USERS = "core_user_update_users"
ENROL = "enrol_manual_enrol_users"
SAVE_ASSIGN_GRADES = "mod_assign_save_grades"
ASSIGN_GRADES = "mod_assign_get_grades"
# What verify compares on both sides without writing anything (agent/awards.py): Moodle awards course
# completion and course badges by itself from the completions and grades the agent syncs.
COURSE_COMPLETION = "core_completion_get_course_completion_status"
USER_BADGES = "core_badges_get_user_badges"
COMPARED = (COURSE_COMPLETION, USER_BADGES)

COMMON_FIELDS = frozenset({"type", "id", "time"})


@dataclass(frozen=True)
class Variant:
    """A kind written another way for some activities, when the side's
    service has the function; else the kind's own function (``fallback``).
    An assignment keeps its grades in its own table: a grade written only
    into the gradebook shows there, but the assignment says "Not graded"
    and a later grading in it overwrites the synced grade."""

    modname: str  # the activities it is for (core_course_get_contents' modname)
    label: str  # what check calls them
    function: str  # used on the side the kind writes on: the server up, the box's Moodle down
    fallback: str
    without: str  # what happens without it, in words


@dataclass(frozen=True)
class Kind:
    """One kind of data: how it is checked, sent, brought down and counted."""

    name: str  # the event's "type"
    fields: frozenset[str]  # what an event of this kind may hold, besides type, id and time
    in_course: bool  # needs course_id
    on_activity: bool  # needs cmid
    validator: str  # "module:function" checking the kind's own fields (agent/store/queue.py)
    # The push, in stages: accounts before enrolments before a course's
    # completions and grades, which need both. The planner of each stage is
    # agent/push/plan.py's plan_<stage>.
    up: Literal["users", "enrolments", "learning"]
    pushed: tuple[str, ...]  # the sync's action counters its calls add to
    found: str  # the collection's counter of the events it queued
    # The way down: "learning" (read, decided, written into the box's
    # Moodle: agent/down/pull.py down_course) or "accounts" (accounts_down).
    down: Literal["accounts", "learning"]
    down_counter: str  # the sync's counter of what came down
    server_up: tuple[str, ...]  # the server's functions its push needs
    server_down: tuple[str, ...] = ()  # ... its way down reads
    box_collect: tuple[str, ...] = ()  # the box's Moodle's functions its collection reads
    box_down: tuple[str, ...] = ()  # ... its way down writes
    verify_read: str | None = None  # what verify reads it back with, if it is checked
    variants: tuple[Variant, ...] = ()  # other ways of writing it for some activities

    def variant(self, modname: str | None) -> Variant | None:
        return next((v for v in self.variants if v.modname == modname), None)

    @property
    def stage(self) -> int:
        return STAGES.index(self.up)

    def validate(self) -> Callable[..., Any]:
        module, _, name = self.validator.partition(":")
        return getattr(importlib.import_module(module), name)


STAGES = ("users", "enrolments", "learning")
# An account's profile, as both Moodles keep it and as it travels (usernames never change).
PROFILE_FIELDS = ("firstname", "lastname", "email", "idnumber")


def profile_of(values: dict) -> dict[str, str]:
    """A learner's profile fields (PROFILE_FIELDS), each a string, empty when missing."""
    return {k: str(values.get(k) or "") for k in PROFILE_FIELDS}


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("completion", frozenset({"course_id", "user", "cmid", "completed"}), True, True,
         "agent.store.queue:check_completion", up="learning", pushed=("completions",), found="completions",
         down="learning", down_counter="completions_down", server_up=(OVERRIDE,), server_down=(COMPLETION_STATES,),
         box_collect=(COMPLETION_STATES,), box_down=(OVERRIDE,), verify_read=COMPLETION_STATES),
    Kind("grade", frozenset({"course_id", "user", "cmid", "grade", "feedback"}), True, True,
         "agent.store.queue:check_grade", up="learning", pushed=("grades",), found="grades",
         down="learning", down_counter="grades_down", server_up=(UPDATE_GRADES,), server_down=(GRADE_ITEMS,),
         box_collect=(GRADE_ITEMS,), box_down=(UPDATE_GRADES,), verify_read=GRADE_ITEMS,
         # Quizzes, lessons, H5P ... take their grades from attempts: the gradebook is the only place a web
         # service can write theirs. An assignment has its own table, written by mod_assign_save_grades.
         variants=(Variant("assign", "assignments", SAVE_ASSIGN_GRADES, UPDATE_GRADES,
                           "assignment grades are written with core_grades_update_grades: in the gradebook only, "
                           "the assignment shows them as not graded"),)),
    Kind("user", frozenset({"user", "firstname", "lastname", "email", "idnumber", "password"}), False, False,
         "agent.store.queue:check_user", up="users", pushed=("users_created", "users_updated"), found="accounts",
         down="accounts", down_counter="accounts_down", server_up=(CREATE_USERS, UPDATE_USERS),
         box_collect=(PARTICIPANTS,), box_down=(LOOKUP, CREATE_USERS, UPDATE_USERS)),
    Kind("enrolment", frozenset({"course_id", "user", "role"}), True, False,
         "agent.store.queue:check_enrolment", up="enrolments", pushed=("enrolments",), found="enrolments",
         down="accounts", down_counter="enrolments_down", server_up=(ENROL,),
         box_collect=(PARTICIPANTS,), box_down=(ENROL,)),
)}


def kind_of(event_type: str) -> Kind:
    """The kind of an event type; an unknown one is an error, never guessed."""
    try:
        return KINDS[event_type]
    except KeyError:
        raise ValueError(f"unknown kind of event {event_type!r} (known: {', '.join(KINDS)})") from None


def of_stage(stage: str) -> list[str]:
    """The event types a stage of the push carries."""
    return [k.name for k in KINDS.values() if k.up == stage]


def brought_down(way: str) -> list[str]:
    """The event types the way down handles that way ("learning" or "accounts")."""
    return [k.name for k in KINDS.values() if k.down == way]


def unique(names: Any) -> list[str]:
    """In order, once each."""
    return list(dict.fromkeys(names))


# -- the functions each side needs (``check`` lists what a service lacks) -----

def server_functions(down: bool) -> list[str]:
    """The server's functions a sync needs; with the way down, its reads too."""
    ordered = sorted(KINDS.values(), key=lambda k: k.stage)
    up = [SITE_INFO, *COURSE_READS, LOOKUP, PROFILES, *(f for k in ordered for f in k.server_up)]
    return unique(up + ([f for k in KINDS.values() for f in k.server_down] if down else []))


def box_functions(down: bool) -> list[str]:
    """The box's Moodle's functions a collection needs; with the way down, its writes too."""
    collect = [SITE_INFO, *COURSE_READS, *(f for k in KINDS.values() for f in k.box_collect)]
    return unique(collect + ([f for k in KINDS.values() for f in k.box_down] if down else []))


def preferred(side: Literal["server", "box"], down: bool) -> list[tuple[str, str, str]]:
    """(function, what it is for, what happens without it) of the functions a
    side's service should have but can do without: the kinds' variants on the
    side they write on (the server; the box's Moodle with the way down), and
    verify's comparison of course completion and badges (both sides)."""
    out = [(v.function, v.label, v.without) for k in KINDS.values() for v in k.variants
           if side == "server" or down]
    out += [(f, "comparing course completion and badges (verify)",
             "verify does not compare course completion and badges") for f in COMPARED]
    return list({f: (f, label, without) for f, label, without in out}.values())


# -- the counters a run's history row shows ----------------------------------

def push_counters() -> list[str]:
    """A sync's action counters, in the push's order, then the course check's."""
    ordered = sorted(KINDS.values(), key=lambda k: k.stage)
    return unique([c for k in ordered for c in k.pushed] + ["courses_refreshed"])


def found_counters() -> list[str]:
    """What a collection counts of the events it queued."""
    return unique(k.found for k in KINDS.values())


def down_counters() -> list[str]:
    """What a sync down counts, with the changes made on both sides."""
    # An account's profile changes come down with the accounts (agent/down/profiles.py).
    return unique([k.down_counter for k in KINDS.values()] + ["profiles_down", "two_way_conflicts"])


# -- a completion's and a grade's value, as a number ----------------------------

def completion_state(completed: bool) -> int:
    """Moodle's completion state for a completion event: 1 complete, 0 not."""
    return 1 if completed else 0


def is_complete(state: Any) -> bool:
    """A Moodle completion state read back: 1 complete, 2 passed, 3 failed: all complete."""
    return bool(state)


def whole_number(value: Any) -> int | None:
    """A whole number as Moodle's JSON gives one; None for anything else
    (a string, true, 1.5): the one check of an id or a time either Moodle answers."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def grade_value(raw: Any) -> float | None:
    """A grade that is a finite number, as a float; None otherwise (NaN,
    Infinity, true, a string, null). The one check of every grade the agent
    takes: an event handed to the queue, one about to be pushed, one the
    box's Moodle reports."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None
    value = float(raw)
    return value if math.isfinite(value) else None


def value_of(event_type: str, data: Any) -> float | None:
    """The number a completion or grade event sets (a completion: 1.0 or 0.0);
    None for another kind, or a grade without one."""
    if event_type == "completion":
        return float(completion_state(bool(data.get("completed"))))
    if event_type == "grade":
        grade = data.get("grade")
        return None if grade is None else float(grade)
    return None


def data_of(event_type: str, value: float) -> dict[str, Any]:
    """An event's data setting this number (the inverse of value_of)."""
    if event_type == "completion":
        return {"completed": value > 0}
    return {"grade": value}


# -- the phases of a run, as its progress shows them (the page's phase_* texts) --

PHASES = ("starting", "checking_connection", "collecting", "checking_courses", "syncing_down", "sending_events",
          "verifying", "done")
