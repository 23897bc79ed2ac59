"""The push: queued events read in queue order, planned (agent/push/plan.py)
and sent in one stream of batches through the run's connection, each
answered request settled by the run (agent/push/session.py) in one
transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import peewee as pw

from ..kinds import KINDS, LOOKUP, PARTICIPANTS, PROFILES, STAGES, UPDATE_USERS, kind_of, of_stage
from ..moodle import CallResult
from ..rights import OPTIONAL_RIGHTS, off_missing
from ..store.db import Activity, Course, Event, Secret, database
from .plan import READY, Busy, Call, Knowledge, Plan, Queued, Want, plan_enrolments, plan_learning, plan_users, \
    wants
from .session import LOOKUP_CHUNK, Session, Settlement, fatal_error, lookup_args

READ_AHEAD = 1000  # (kind, course, user) rows read ahead, at most: a few batches' worth of look-ups


@dataclass
class Source:
    """One kind of queued event (the accounts; a course's enrolments; a
    course's completions and grades), read in queue order from a cursor: the
    events read stay queued until settled, so the queue is not read again."""

    stage: str  # "users", "enrolments" or "learning" (agent/kinds.py STAGES)
    course_id: int = 0
    after: int = 0  # the last event id read

    def where(self) -> list[pw.Expression]:
        types = Event.type.in_(of_stage(self.stage))
        return [types] if self.stage == "users" else [types, Event.course_id == self.course_id]

    def read(self, size: int) -> list[Queued]:
        rows: Any = (Event.select(Event.id, Event.type, Event.username, Event.course_id, Event.cmid, Event.data)
                     .where(Event.status == Event.QUEUED, Event.id > self.after, *self.where())
                     .order_by(Event.id).limit(size).tuples())
        chunk = [Queued(*row) for row in rows]
        if chunk:
            self.after = chunk[-1].id
        return chunk


@dataclass
class Query:
    """A read whose answer lets waiting events be planned: a look-up of
    usernames, or an enrolment check of (course, user id, username) pairs."""

    call: Call
    asks: dict[Want, str]  # what it asks -> how a refusal names it
    usernames: list[str] = field(default_factory=list)
    pairs: list[tuple[int, int, str]] = field(default_factory=list)
    course_id: int = 0  # the older check reads one course


class Pusher:
    """Pushes queued events in one stream of batches. Each request carries
    first the look-ups and enrolment checks that the events still need, then
    as many calls of events already planned as fit; after each answer the
    events that waited for it are planned (agent/push/plan.py, ``wants``). So the
    look-ups travel inside the batches instead of as requests of their own,
    and a course's events go as soon as what they depend on is known, without
    waiting for another course's look-ups. Before the first request, the
    queue is read ahead (who, in which course) so that the first batch
    already carries every look-up and check it can."""

    def __init__(self, run: Session, sources: list[Source]):
        self.run = run
        self.sources = list(sources)
        self.waiting: list[Queued] = []  # read, not planned yet
        self.pending: list[Call] = []  # planned, not sent yet, in queue order
        self.owners: dict[int, tuple[Call, Queued]] = {}  # id(call) -> a pending user or enrolment call, its event
        self.ahead: list[Queued] = []  # who the unread events are for (id 0): asked about early
        self.refused: dict[Want, str] = {}  # a look-up or check the server refused, with the reason
        self.lookups: set[str] = set()
        self.checks: set[tuple[int, int, str]] = set()
        self.activities: dict[int, dict[int, str]] = {}
        self.instances: dict[int, dict[int, int]] = {}
        self.shortnames: dict[int, str] = {}

    def push(self) -> None:
        self.read_ahead()
        if not self.sources:
            return  # nothing queued: not even the box's facts are read
        self.run.remember()
        self.plan_round()
        size, most_waiting = self.run.batch_size, self.run.read_size * 4
        while True:
            self.run.check_stop()
            while len(self.pending) < size and len(self.waiting) < most_waiting and self.read():
                self.plan_round()
            queries = self.queries()[:size]
            if not queries and not self.pending:
                if self.waiting or self.sources:
                    raise AssertionError(f"{len(self.waiting)} event(s) wait for nothing the run can ask")
                return
            self.send(queries, self.pending[:size - len(queries)])
            self.plan_round()

    # -- reading ---------------------------------------------------------------

    def read(self) -> bool:
        """The next chunk of the queue into ``waiting``; False once all is read."""
        while self.sources:
            # As many as before batches filled across courses: the grades of an
            # activity share a call within what is read together.
            rows = self.sources[0].read(self.run.read_size * 4)
            if rows:
                self.waiting.extend(rows)
                return True
            self.sources.pop(0)
        return False

    def read_ahead(self) -> None:
        """Who the queued events are for, once per kind, course and user, in
        one query: enough to fill the first batches with look-ups and checks;
        the rest are found as the events are read."""
        courses = [s.course_id for s in self.sources if s.stage != "users"]
        where = Event.course_id.in_(courses)
        if any(s.stage == "users" for s in self.sources):
            where = where | Event.type.in_(of_stage("users"))
        rows: list[Any] = list(Event.select(Event.type, Event.course_id, Event.username)
                               .where(Event.status == Event.QUEUED, where).distinct()
                               .limit(READ_AHEAD).tuples())
        present: set[tuple[str, int]] = set()
        for etype, course_id, username in rows:
            stage = kind_of(etype).up
            present.add((stage, course_id or 0))
            self.ahead.append(Queued(0, of_stage(stage)[0], username, course_id))
        if len(rows) < READ_AHEAD:  # all of it: a source with nothing queued is not read at all
            self.sources = [s for s in self.sources if (s.stage, s.course_id) in present]

    # -- planning --------------------------------------------------------------

    def busy(self) -> Busy:
        busy = Busy()
        for e in self.waiting:
            stage = kind_of(e.type).up
            if stage == "users":
                busy.users.add(e.username)
            elif stage == "enrolments":
                busy.enrolling.add((int(e.course_id or 0), e.username))
        for call, owner in self.owners.values():
            if kind_of(owner.type).up == "users":
                busy.users.add(owner.username)
                if call.creates_user:
                    busy.creating.add(owner.username)
            else:
                pair = (int(owner.course_id or 0), owner.username)
                busy.enrolling.add(pair)
                busy.enrol_calls.add(pair)
        return busy

    def plan_round(self) -> None:
        """Plan every waiting event whose answers are in; note what the others
        still need asked."""
        known_now, busy = self.run.knowledge, self.busy()
        ready: dict[tuple[str, int], list[Queued]] = {}
        refused: dict[int, str] = {}
        self.lookups, self.checks = set(), set()
        for e in self.waiting:
            want = self.want(e, known_now, busy)
            if want == READY:
                ready.setdefault((kind_of(e.type).up, int(e.course_id or 0)), []).append(e)
            elif want in self.refused:
                refused[e.id] = self.refused[want]
        self.ahead = [a for a in self.ahead if (w := self.want(a, known_now, busy)) != READY and w not in self.refused]
        plans, settled = [], set(refused)
        for (stage, course_id), rows in ready.items():
            plan = self.plan(stage, course_id, rows)
            plans.append(plan)
            settled.update(e.id for e in rows[:plan.planned])  # a second event for an account being created waits
            by_id = {e.id: e for e in rows}
            for call in plan.calls:
                if call.creates_user or call.enrols is not None or call.function == UPDATE_USERS:
                    self.owners[id(call)] = (call, by_id[call.events[0]])
                self.pending.append(call)
        if settled:
            self.waiting = [e for e in self.waiting if e.id not in settled]
        if refused or any(p.conflicts or p.done for p in plans):
            with database.obj.atomic():
                self.run.mark_conflicts(refused)
                for plan in plans:
                    self.run.write(plan)

    def want(self, e: Queued, known_now: Knowledge, busy: Busy) -> Want:
        """wants(), noting the look-ups and checks still to ask."""
        want = wants(e, known_now, busy)
        if want in self.refused:
            return want
        if want[0] == "lookup":
            self.lookups.add(want[1])
        elif want[0] == "check":
            self.checks.add((*want[1], e.username))
        return want

    def plan(self, stage: str, course_id: int, rows: list[Queued]) -> Plan:
        """The stage's planner (agent/push/plan.py plan_<stage>) over its ready events."""
        run, k = self.run, self.run.knowledge
        if stage == "users":
            ids = [e.id for e in rows]
            passwords = {s.event_id: s.password for s in Secret.select().where(Secret.event.in_(ids))}
            can_update = UPDATE_USERS in run.functions
            plan = plan_users(rows, k.ids, passwords, can_update)
            if plan.conflicts and not can_update:  # an optional right withheld (agent/rights.py): say it once
                run.name_skipped(off_missing(OPTIONAL_RIGHTS[UPDATE_USERS]))
            return plan
        enrolled = k.enrolled.get(course_id, set())
        if stage == "enrolments":
            return plan_enrolments(rows, course_id, k.ids, enrolled)
        if course_id not in self.activities:
            self.activities[course_id] = course_activities(course_id)
            self.instances[course_id] = course_instances(course_id)
            self.shortnames[course_id] = Course.get_by_id(course_id).shortname
        return plan_learning(rows, course_id, self.shortnames[course_id], k.ids, enrolled,
                             self.activities[course_id], run.force, run.config.agent.batch_size,
                             self.instances[course_id], run.functions)

    # -- asking and sending ----------------------------------------------------

    def queries(self) -> list[Query]:
        """The look-ups first (a check needs the id), a hundred per call."""
        run = self.run
        names = sorted(self.lookups)
        out = [lookup_query(names[start:start + LOOKUP_CHUNK]) for start in range(0, len(names), LOOKUP_CHUNK)]
        checks = sorted(self.checks)
        if PROFILES in run.functions:
            # Moodle keeps one entry per user in a call: a learner's second
            # course goes in the next call.
            layers: list[list[tuple[int, int, str]]] = []
            depth: dict[int, int] = {}
            for pair in sorted(checks, key=lambda p: (p[1], p[0])):
                n = depth.get(pair[1], 0)
                depth[pair[1]] = n + 1
                if n == len(layers):
                    layers.append([])
                layers[n].append(pair)
            out += [profiles_query(layer[start:start + LOOKUP_CHUNK])
                    for layer in layers for start in range(0, len(layer), LOOKUP_CHUNK)]
        else:
            out += [participants_query(course_id, [p for p in checks if p[0] == course_id])
                    for course_id in sorted({p[0] for p in checks})]
        return out

    def send(self, queries: list[Query], calls: list[Call]) -> None:
        """One request: the queries first, then the calls; its answer settled
        in one transaction. The calls after a failing one stay pending."""
        chunk = [q.call for q in queries] + calls
        results = self.run.client.send([(c.function, c.args) for c in chunk])
        asked = {id(q.call): q for q in queries}
        s = Settlement()
        for call, result in zip(chunk, results):
            query = asked.get(id(call))
            if not (self.run.settle(call, result, s) if query is None else self.learn(query, result, s)):
                break
        self.run.commit(s)
        done = max(0, len(results) - len(queries))
        for call in self.pending[:done]:
            self.owners.pop(id(call), None)
        del self.pending[:done]
        self.pending[:0] = s.retry  # a grades call refused as a whole goes again, a call per student

    def learn(self, query: Query, result: CallResult, s: Settlement) -> bool:
        """A query's answer into what the run knows; a refusal marks what it
        asked as refused (the events waiting for it become conflicts). False
        when the error ends the run."""
        if not result.ok:
            error = result.error
            assert error is not None
            s.fatal = fatal_error(error)
            if s.fatal is not None:
                return False
            for want, what in query.asks.items():
                self.refused[want] = (f"could not ask the server for {what}: it refused {error.function}: "
                                      f"{error.message} ({error.errorcode})")
            return True
        if query.call.function == LOOKUP:
            self.run.learn_users(query.usernames, result.data, s)
        elif query.call.function == PROFILES:
            self.run.learn_profiles(query.pairs, result.data, s)
        else:
            self.run.learn_participants(query.course_id, query.pairs, result.data, s)
        return True


def lookup_query(usernames: list[str]) -> Query:
    return Query(Call(LOOKUP, lookup_args(usernames), [], "lookup"),
                 {("lookup", u): f"the account {u!r}" for u in usernames}, usernames=usernames)


def check_asks(pairs: list[tuple[int, int, str]]) -> dict[Want, str]:
    return {("check", (c, uid)): f"the enrolment of {username!r} in course {c}" for c, uid, username in pairs}


def profiles_query(pairs: list[tuple[int, int, str]]) -> Query:
    args = {"userlist": [{"userid": uid, "courseid": c} for c, uid, _ in pairs]}
    return Query(Call(PROFILES, args, [], "check"), check_asks(pairs), pairs=pairs)


def participants_query(course_id: int, pairs: list[tuple[int, int, str]]) -> Query:
    """The enrolment check when the service lacks PROFILES (one set up for an older agent): the
    course's participants, ids only, which grows with the course; PROFILES costs what the box's
    learners cost, whatever the course holds."""
    args = {"courseid": course_id, "options": [{"name": "userfields", "value": "id"}]}
    return Query(Call(PARTICIPANTS, args, [], "check"), check_asks(pairs), pairs=pairs, course_id=course_id)


def course_activities(course_id: int) -> dict[int, str]:
    """cmid -> module name, as the box's copy of the course has them."""
    return {a.cmid: a.modname for a in Activity.select(Activity.cmid, Activity.modname)
            .where(Activity.course == course_id)}


def course_instances(course_id: int) -> dict[int, int]:
    """cmid -> instance id (an assignment's grades are written under it)."""
    rows: Any = (Activity.select(Activity.cmid, Activity.instance)
                 .where(Activity.course == course_id, Activity.instance.is_null(False)).tuples())
    return {int(cmid): int(instance) for cmid, instance in rows}


def in_course(stage: str) -> bool:
    """A stage read course by course (enrolments, learning), or once (the accounts)."""
    return any(KINDS[t].in_course for t in of_stage(stage))


def push_events(run: Session, courses: list[Course]) -> None:
    """The accounts, then each course's enrolments, then its completions and
    grades: one stream of batches (Pusher)."""
    sources: list[Source] = []
    for stage in STAGES:  # in the kinds table's order (agent/kinds.py): what each stage needs comes first
        sources += [Source(stage, c.id) for c in courses] if in_course(stage) else [Source(stage)]
    Pusher(run, sources).push()
