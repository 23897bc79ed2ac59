"""What to send for a chunk of queued events: pure functions, no database,
no server. They take the queued events and what the run knows of the server
(user ids, enrolments, activities) and return the web service calls to make,
the events that become conflicts (with the reason), and the events that
need nothing sent. The sync engine writes the conflicts and the settled
events in one transaction per chunk, then sends the calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection, Literal, Mapping

from ..kinds import (CREATE_USERS, ENROL, OVERRIDE, PROFILE_FIELDS, SAVE_ASSIGN_GRADES, UPDATE_GRADES, UPDATE_USERS,
                     completion_state, grade_value, kind_of)
from ..roles import ROLES
from ..text import warnings_words



@dataclass(frozen=True, slots=True)
class Queued:
    """One queued event, as the planner needs it."""

    id: int
    type: str
    username: str
    course_id: int | None = None
    cmid: int | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Call:
    """One web service call and the events it settles."""

    function: str
    args: dict
    events: list[int]
    kind: str  # which action counter a success adds to
    count: int = 1  # how much it adds
    creates_user: str | None = None  # its answer holds this new account's id
    enrols: int | None = None  # on success this user id is enrolled in the course
    students: list[int] = field(default_factory=list)  # a grades call: each event's student, in ``events``' order

    def split(self) -> list[Call]:
        """A grades call refused as a whole, one call per student: one
        refused grade must not take the others down (issue 21). The
        gradebook's entries name a ``studentid``, an assignment's a ``userid``."""
        key = {UPDATE_GRADES: "studentid", SAVE_ASSIGN_GRADES: "userid"}.get(self.function)
        if key is None or len(self.args.get("grades", [])) < 2:
            return []
        calls = []
        for entry in self.args["grades"]:
            events = [e for e, s in zip(self.events, self.students) if s == entry[key]]
            calls.append(Call(self.function, {**self.args, "grades": [entry]}, events, self.kind, count=1,
                              students=[entry[key]] * len(events)))
        return calls


@dataclass
class Plan:
    calls: list[Call] = field(default_factory=list)
    conflicts: dict[int, str] = field(default_factory=dict)  # event id -> reason
    done: list[int] = field(default_factory=list)  # nothing to send: settled as sent
    planned: int = 0  # events of the chunk that this plan covers (a prefix)

    def conflict(self, event: Queued, reason: str) -> None:
        self.conflicts[event.id] = reason


@dataclass
class Knowledge:
    """What a run knows of the server to plan with. ``ids`` and ``enrolled``
    are trusted: this run's answers, or the box's facts within their age
    (agent/store/known.py); the sets say what the server answered in this run."""

    ids: dict[str, int] = field(default_factory=dict)  # username -> account id
    looked_up: set[str] = field(default_factory=set)  # usernames looked up in this run, found or not
    enrolled: dict[int, set[int]] = field(default_factory=dict)  # course -> user ids confirmed enrolled
    checked: set[tuple[int, int]] = field(default_factory=set)  # (course, user id) checked in this run
    new: set[int] = field(default_factory=set)  # accounts this run created: enrolled nowhere yet
    stale: dict[str, int] = field(default_factory=dict)  # ids past their age: asked about, never used
    listed: set[int] = field(default_factory=set)  # courses whose every participant this run read

    def answered(self, course_id: int, uid: int) -> bool:
        """Did the server say, in this run, whether the user is enrolled there?"""
        return (course_id, uid) in self.checked or uid in self.new or course_id in self.listed

    def is_enrolled(self, course_id: int, uid: int) -> bool | None:
        """True, False, or None: not known yet."""
        if uid in self.enrolled.get(course_id, ()):
            return True
        if (course_id, uid) in self.checked or uid in self.new or course_id in self.listed:
            return False
        return None


@dataclass
class Busy:
    """Events read but not settled yet, that others must wait for."""

    users: set[str] = field(default_factory=set)  # usernames with a user event not settled
    creating: set[str] = field(default_factory=set)  # ... whose creation is not confirmed yet
    enrolling: set[tuple[int, str]] = field(default_factory=set)  # (course, username): enrolment not settled
    enrol_calls: set[tuple[int, str]] = field(default_factory=set)  # ... whose call is not confirmed yet


Want = tuple[Literal["ready", "wait", "lookup", "check"], Any]
READY: Want = ("ready", None)
WAIT: Want = ("wait", None)


def wants(e: Queued, known: Knowledge, busy: Busy) -> Want:
    """What the run must learn before it can plan this event: nothing
    (READY: the plan functions decide), the account id of its username
    (``("lookup", username)``), whether its user is enrolled in its course
    (``("check", (course, user id))``, also for an id known from before but
    past its age, and for every enrolment event), or an event of its own to be settled
    first (WAIT). Accounts are looked up in the run before they are created
    or updated; an account created, or an enrolment made, in this run is
    waited for, so that what follows it is planned on the server's answer.
    An event of an unknown kind is an error (ValueError), never guessed."""
    stage = kind_of(e.type).up
    if stage == "users":
        if e.username in busy.creating:
            return WAIT
        return READY if e.username in known.looked_up else ("lookup", e.username)
    uid = known.ids.get(e.username)
    course = int(e.course_id or 0)
    if uid is None:
        if e.username in busy.users:
            return WAIT
        if e.username in known.looked_up:
            return READY
        stale = known.stale.get(e.username)
        # The check's answer names the account: it confirms an old id, or
        # (no such profile) sends the username to a look-up.
        return ("check", (course, stale)) if stale is not None else ("lookup", e.username)
    enrolled = known.is_enrolled(course, uid)
    if enrolled is None:
        return ("check", (course, uid))
    pair = (course, e.username)
    if stage == "enrolments":
        # Checked in the run before it is made (or settled as made), however
        # sure the box is: an enrolment event is rare, and it must not be
        # settled on a remembered fact about an account made again since.
        if not known.answered(course, uid):
            return ("check", (course, uid))
        return WAIT if pair in busy.enrol_calls else READY
    return WAIT if not enrolled and pair in busy.enrolling else READY


def plan_users(rows: list[Queued], known: Mapping[str, int], passwords: Mapping[int, str],
               can_update: bool) -> Plan:
    """Create the accounts the server lacks, update the others. A second
    event for an account created in this chunk waits for the next chunk: its
    creation must be confirmed first, so that it becomes an update. An event
    with ``only_if_missing`` (an account collected from the box's Moodle)
    leaves an existing account alone: nothing is sent for it."""
    plan = Plan()
    created: set[str] = set()
    for e in rows:
        if e.username in created:
            break
        plan.planned += 1
        profile = {k: e.data[k] for k in PROFILE_FIELDS if k in e.data}
        password = passwords.get(e.id)
        if e.username in known and e.data.get("only_if_missing"):
            plan.done.append(e.id)
        elif e.username in known:
            if not can_update:
                plan.conflict(e, f"the token's service lacks {UPDATE_USERS}, "
                                 f"so the existing account {e.username!r} cannot be updated")
                continue
            # ``update`` (agent/learners.py, agent/box/profiles.py): only the fields that changed; [] the password only.
            fields = e.data.get("update", PROFILE_FIELDS)
            user: dict[str, Any] = {"id": known[e.username], **{k: v for k, v in profile.items() if k in fields}}
            if password:
                user["password"] = password
            plan.calls.append(Call(UPDATE_USERS, {"users": [user]}, [e.id], "users_updated"))
        else:
            user = {"username": e.username, "auth": "manual", **profile}
            if password:
                user["password"] = password
            else:
                user["createpassword"] = 1
            created.add(e.username)
            plan.calls.append(Call(CREATE_USERS, {"users": [user]}, [e.id], "users_created",
                                   creates_user=e.username))
    return plan


def plan_enrolments(rows: list[Queued], course_id: int, known: Mapping[str, int],
                    enrolled: Collection[int]) -> Plan:
    """Enrol who is not enrolled yet, once per user and role."""
    plan = Plan(planned=len(rows))
    planned: set[tuple[int, str]] = set()
    for e in rows:
        uid = known.get(e.username)
        role = str(e.data.get("role", "student"))
        if uid is None:
            plan.conflict(e, f"unknown user {e.username!r} on the server, and no account for it is queued")
        elif uid in enrolled or (uid, role) in planned:
            plan.done.append(e.id)
        else:
            planned.add((uid, role))
            plan.calls.append(Call(ENROL,
                                   {"enrolments": [{"roleid": ROLES[role], "userid": uid, "courseid": course_id}]},
                                   [e.id], "enrolments", enrols=uid))
    return plan


def plan_learning(rows: list[Queued], course_id: int, shortname: str, known: Mapping[str, int],
                  enrolled: Collection[int], activities: Mapping[int, str], force: bool,
                  batch_size: int, instances: Mapping[int, int] | None = None,
                  functions: Collection[str] = ()) -> Plan:
    """Completions and grades of one course, in queue order. ``activities``
    maps the course's cmids to their module name (assign, quiz ...),
    ``instances`` to their instance id; ``functions`` are the service's: a
    kind's variant (an assignment's grades through the assignment) is used
    when the service has its function and the instance is known."""
    plan = Plan(planned=len(rows))
    grade_calls: dict[int, Call] = {}
    instances = instances or {}
    for e in rows:
        uid = known.get(e.username)
        cmid = int(e.cmid or 0)
        modname = activities.get(cmid)
        if uid is None:
            plan.conflict(e, f"unknown user {e.username!r} on the server")
        elif uid not in enrolled:
            plan.conflict(e, f"user {e.username!r} is not enrolled in course {shortname}")
        elif modname is None and not force:
            plan.conflict(e, f"activity {cmid} does not exist in course {shortname}")
        elif e.type == "completion":
            plan.calls.append(Call(OVERRIDE,
                                   {"userid": uid, "cmid": cmid, "newstate": completion_state(e.data["completed"])},
                                   [e.id], "completions"))
        elif modname is None:
            plan.conflict(e, f"activity {cmid} does not exist in course {shortname}, so its grade item is unknown")
        elif (problem := unsendable_grade(e.data)) is not None:
            plan.conflict(e, problem)
        elif (variant := kind_of(e.type).variant(modname)) and variant.function in functions \
                and instances.get(cmid):
            add_assign_grade(plan, grade_calls, e, uid, cmid, instances[cmid], batch_size)
        else:
            # One update_grades call per activity, of up to batch_size grades
            # (1: a call per event, as the Moodle app sends them); a later
            # grade for the same student replaces the earlier one in that
            # call, or follows it in the next call.
            call = grade_calls.get(cmid)
            if call is None or len(call.events) >= batch_size:
                call = Call(UPDATE_GRADES, update_grades_args(course_id, modname, cmid), [], "grades", count=0)
                grade_calls[cmid] = call
                plan.calls.append(call)
            entry: dict[str, Any] = {"studentid": uid, "grade": e.data["grade"]}
            if "feedback" in e.data:
                entry["str_feedback"] = e.data["feedback"]
            call.args["grades"] = [g for g in call.args["grades"] if g["studentid"] != uid] + [entry]
            call.events.append(e.id)
            call.students.append(uid)
            call.count = len(call.args["grades"])
    return plan


def update_grades_args(courseid: int, modname: str, cmid: int) -> dict[str, Any]:
    """core_grades_update_grades for one activity's grade item (the push's, under the server's ids, and
    the way down's, under the box's)."""
    return {"source": "moodle-sync-agent", "courseid": courseid, "component": f"mod_{modname}",
            "activityid": cmid, "itemnumber": 0, "grades": []}


def assign_grade_args(assignmentid: int) -> dict[str, Any]:
    """mod_assign_save_grades for one assignment (its instance id, not the cmid: 94_)."""
    return {"assignmentid": assignmentid, "applytoall": 0, "grades": []}


def assign_grade(uid: int, grade: float, feedback: str | None = None) -> dict[str, Any]:
    """One learner's entry: the latest attempt, no new attempt, the workflow state left as the
    assignment's (empty), and a feedback comment only if the event holds one: none is invented."""
    entry: dict[str, Any] = {"userid": uid, "grade": grade, "attemptnumber": -1, "addattempt": 0,
                             "workflowstate": ""}
    if feedback is not None:
        entry["plugindata"] = {"assignfeedbackcomments_editor": {"text": feedback, "format": 1}}
    return entry


def add_assign_grade(plan: Plan, calls: dict[int, Call], e: Queued, uid: int, cmid: int, instance: int,
                     batch_size: int) -> None:
    """A grade into the assignment's call of up to batch_size learners; a later grade for the same
    learner replaces the earlier one in that call."""
    call = calls.get(cmid)
    if call is None or len(call.events) >= batch_size:
        call = Call(SAVE_ASSIGN_GRADES, assign_grade_args(instance), [], "grades", count=0)
        calls[cmid] = call
        plan.calls.append(call)
    grade = e.data["grade"]
    entry = assign_grade(uid, -1.0 if grade is None else float(grade), e.data.get("feedback"))
    call.args["grades"] = [g for g in call.args["grades"] if g["userid"] != uid] + [entry]
    call.events.append(e.id)
    call.students.append(uid)
    call.count = len(call.args["grades"])


def unsendable_grade(data: Mapping[str, Any]) -> str | None:
    """Checked before it is sent: a grade that is not a finite number (a
    queue written by an older agent, a grade removed on the box) would make
    the server refuse its whole call, the other learners' grades with it."""
    grade = data.get("grade")
    if data.get("removed"):
        return "the grade was removed on the box's Moodle; web services cannot remove the server's grade"
    if grade_value(grade) is None:
        return f"the grade is not a number: {grade!r}"
    return None


def warnings_problem(call: Call, data: object) -> str | None:
    """core_user_update_users answers its refusals as warnings (a password
    against the policy, an e-mail in use ...): nothing was changed, so the
    event is a conflict in Moodle's words, not sent."""
    words = warnings_words(data) if call.function == UPDATE_USERS else None
    return None if words is None else f"the server did not update the account: {words}"[:1000]


def grade_problem(call: Call, data: object) -> str | None:
    """core_grades_update_grades answers 0 for OK, else a GRADE_UPDATE_* code."""
    if call.function != UPDATE_GRADES or data in (0, "0"):
        return None
    code = data if isinstance(data, int) else -1
    meaning = {1: "failed", 2: "multiple grade items", 4: "the grade item is locked"}.get(code, "refused")
    return f"the server did not take the grade (core_grades_update_grades answered {data}: {meaning})"
