"""One sync run: online check, course check, push of the queued events.

Guarantees:
- an event is marked sent only after the server's answer for it said success;
- a network failure, a crash or a kill at any moment leaves every event not
  yet confirmed in the queue, and the next run finishes the job;
- re-sending is safe: accounts are looked up before they are created,
  enrolments are checked before they are made, and completion overrides and
  grades set a state rather than add to one;
- one run at a time across processes (agent/runs.py).

What to send is decided by the pure functions of agent/plan.py; this module
reads the queue, writes each chunk's outcome in one transaction (the SD card
is slow: one fsync per chunk and per batch, not per event) and talks to the
server.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import peewee as pw

from . import courses as courses_mod
from . import known, settings
from .config import Config
from .db import Activity, Course, Event, Secret, SyncRun, database, first_column, iso, utcnow
from .history import ACTION_KINDS
from .moodle import BATCH_FUNCTION, CallResult, MoodleClient, MoodleError, TokenRejected, Unreachable
from .plan import (READY, Busy, Call, Knowledge, Plan, Queued, Want, grade_problem, plan_enrolments, plan_learning,
                   plan_users, wants)
from .queue import correct_event_times
from .runs import Interrupted, Record, recorded_run

log = logging.getLogger(__name__)

REQUIRED_FUNCTIONS = [
    "core_webservice_get_site_info",
    "core_course_get_courses_by_field",
    "core_course_get_contents",
    "core_user_get_users_by_field",
    "core_user_create_users",
    "core_user_update_users",
    "enrol_manual_enrol_users",
    "core_user_get_course_user_profiles",
    "core_completion_override_activity_completion_status",
    "core_grades_update_grades",
]
OPTIONAL_FUNCTIONS = [BATCH_FUNCTION]

# A Retry-After longer than this ends the run instead; the next run resumes.
MAX_RETRY_WAIT_S = 120.0
MAX_RETRIES = 3
LOOKUP_CHUNK = 100

Settle = Callable[[Call, CallResult], "Exception | None"]

LOOKUP = "core_user_get_users_by_field"
# The enrolment check: one learner's profile in one course, with their roles
# there; it costs what the box's learners cost, whatever the course holds.
PROFILES = "core_user_get_course_user_profiles"
# A service set up for an older agent may lack PROFILES: the check then reads
# the course's participants (ids only), which grows with the course.
ENROLLED = "core_enrol_get_enrolled_users"


@dataclass
class Run:
    """One run's connection to the server and what it learnt of it."""

    config: Config
    client: MoodleClient
    rec: Record
    force: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    functions: set[str] = field(default_factory=set)
    knowledge: Knowledge = field(default_factory=Knowledge)
    secrets_erased: bool = False
    confirmed: list[int] | None = None  # while a batch is settled: its events confirmed, written at its end

    @property
    def user_ids(self) -> dict[str, int]:
        return self.knowledge.ids

    @property
    def site(self) -> str:
        """Whose facts the box's memory holds (agent/known.py)."""
        return self.config.moodle.url

    @property
    def batch_size(self) -> int:
        """Calls per request: one each when the service cannot batch."""
        return self.config.agent.batch_size if BATCH_FUNCTION in self.functions else 1

    @property
    def read_size(self) -> int:
        """Queued events are read a multiple of this at a time: at least a
        look-up's worth, so that small batches do not multiply the look-ups."""
        return max(self.config.agent.batch_size, LOOKUP_CHUNK)

    def check_stop(self) -> None:
        if self.stop.is_set():
            raise Interrupted()

    # -- writing outcomes ----------------------------------------------------

    def mark_sent(self, ids: list[int]) -> None:
        if not ids:
            return
        if self.confirmed is not None:
            self.confirmed.extend(ids)
            return
        with database.obj.atomic():
            Event.update(status=Event.SENT, sent_at=iso(utcnow()), sync_id=self.rec.row.id, last_error=None,
                         attempts=Event.attempts + 1).where(Event.id.in_(ids)).execute()
            if Secret.delete().where(Secret.event.in_(ids)).execute():
                self.secrets_erased = True
        self.rec.row.events_sent += len(ids)

    def mark_conflicts(self, reasons: dict[int, str]) -> None:
        """Events the server cannot take, each with its reason, in one transaction."""
        if not reasons:
            return
        by_reason: dict[str, list[int]] = {}
        for event_id, reason in reasons.items():
            by_reason.setdefault(reason[:1000], []).append(event_id)
        with database.obj.atomic():
            for reason, ids in by_reason.items():
                Event.update(status=Event.CONFLICT, last_error=reason, sync_id=self.rec.row.id,
                             attempts=Event.attempts + 1).where(Event.id.in_(ids)).execute()
        self.rec.row.conflicts += len(reasons)

    def write(self, plan: Plan) -> None:
        """A chunk's conflicts and its events needing nothing: one commit."""
        if plan.conflicts or plan.done:
            with database.obj.atomic():
                self.mark_conflicts(plan.conflicts)
                self.mark_sent(plan.done)

    # -- sending ------------------------------------------------------------

    def push(self, calls: list[Call], settle: Settle | None = None) -> None:
        """Send calls, batched when the service allows; every call gets a result."""
        settle = settle or self.settle
        pending = list(calls)
        while pending:
            self.check_stop()
            answered = self.send_and_settle(pending[:self.batch_size], settle)
            # The batch stops at its first error: the rest go in the next one.
            pending = pending[answered:]

    def send_and_settle(self, chunk: list[Call], settle: Settle) -> int:
        """One request, its results committed at once; returns how many of
        its calls have a result (Moodle stops a batch at its first error)."""
        results = self.send_chunk(chunk)
        stop_error = None
        counted = self.rec.snapshot()
        try:
            with database.obj.atomic():
                # The batch's confirmed events in one statement, not one each.
                self.confirmed = []
                try:
                    for call, result in zip(chunk, results):
                        stop_error = settle(call, result)
                        if stop_error:
                            break
                finally:
                    confirmed, self.confirmed = self.confirmed, None
                self.mark_sent(confirmed)
                self.rec.save()
        except pw.DatabaseError:
            self.rec.restore(counted)  # not committed: the history must not count it either
            raise
        if stop_error:  # raised after the commit: what was confirmed stays sent
            raise stop_error
        return len(results)

    def send_chunk(self, chunk: list[Call]) -> list[CallResult]:
        for attempt in range(MAX_RETRIES + 1):
            try:
                if len(chunk) == 1:  # no batch around a single call
                    try:
                        return [CallResult(True, data=self.client.call(chunk[0].function, chunk[0].args))]
                    except TokenRejected:
                        raise
                    except MoodleError as exc:
                        return [CallResult(False, error=exc)]
                results = self.client.batch([(c.function, c.args) for c in chunk])
                if not results:
                    raise Unreachable("the server answered an empty batch", "bad_answer")
                return results
            except Unreachable as exc:
                wait = exc.retry_after
                if wait is None or wait > MAX_RETRY_WAIT_S or attempt == MAX_RETRIES:
                    raise
                log.info("server asked to retry after %.0f s (%s)", wait, exc.reason)
                if self.stop.wait(wait):
                    raise Interrupted() from None
        raise AssertionError("unreachable")

    def settle(self, call: Call, result: CallResult) -> Exception | None:
        """Record one call's result; return the error that must end the run, if any."""
        if result.ok:
            problem = grade_problem(call, result.data)
            if problem:
                self.mark_conflicts(dict.fromkeys(call.events, problem))
                return None
            self.mark_sent(call.events)
            self.rec.actions[call.kind] += call.count
            k = self.knowledge
            if call.creates_user:
                uid = int(result.data[0]["id"])
                k.ids[call.creates_user] = uid
                k.looked_up.add(call.creates_user)
                k.new.add(uid)
                known.confirm_users(self.site, {call.creates_user: uid})
            if call.enrols is not None:
                course = int(call.args["enrolments"][0]["courseid"])
                k.enrolled.setdefault(course, set()).add(call.enrols)
                k.checked.add((course, call.enrols))
                known.confirm_enrolments(self.site, [(course, call.enrols)])
            return None
        error = result.error
        assert error is not None
        fatal = fatal_error(error)
        if fatal:
            return fatal
        if call.enrols is not None:
            # Refused for an account the box thought it knew (deleted?): look it up next time.
            known.forget_user_ids(self.site, [call.enrols])
        reason = f"the server refused {error.function}: {error.message} ({error.errorcode})"
        self.mark_conflicts(dict.fromkeys(call.events, reason))
        return None

    # -- what the server knows ----------------------------------------------

    def remember(self) -> None:
        """Start from the box's facts still within their age (agent/known.py);
        --force asks the server everything again."""
        if self.force:
            return
        k = self.knowledge
        known.forget_old(self.site)
        trusted, stale = known.users(self.site)
        for username, uid in trusted.items():
            k.ids.setdefault(username, uid)
        if PROFILES in self.functions:  # only its answer names the account
            k.stale.update({u: uid for u, uid in stale.items() if u not in k.ids})
        for course_id, uids in known.trusted_enrolments(self.site).items():
            k.enrolled.setdefault(course_id, set()).update(uids)

    def resolve_users(self, usernames: set[str]) -> None:
        """Look up, now, the usernames this run has not looked up yet, a
        hundred per call. Always the server's answer, never the box's facts:
        verify relies on it to find an account made again under a new id."""
        todo = sorted(u for u in usernames if u not in self.knowledge.looked_up)
        for start in range(0, len(todo), LOOKUP_CHUNK):
            asked = todo[start:start + LOOKUP_CHUNK]
            answer = self.client.call(LOOKUP, lookup_args(asked))
            with database.obj.atomic():
                self.learn_users(asked, answer)

    def learn_users(self, asked: list[str], answer: Any) -> None:
        """A look-up's answer: the ids of the usernames found; the others are
        not on the server."""
        wanted = set(asked)
        found = {str(u["username"]): int(u["id"]) for u in answer or []
                 if isinstance(u, dict) and u.get("username") in wanted}
        k = self.knowledge
        k.looked_up.update(asked)
        for username in asked:
            if username in found:
                k.ids[username] = found[username]
            else:
                k.ids.pop(username, None)
        known.confirm_users(self.site, found)
        known.forget_users(self.site, [u for u in asked if u not in found])

    def learn_profiles(self, pairs: list[tuple[int, int, str]], answer: Any) -> None:
        """An enrolment check's answer: each asked user's profile in the asked
        course, with their roles there (none: not enrolled). No profile, or
        one under another username: the id is not that account any more."""
        profiles = {int(p["id"]): p for p in answer or [] if isinstance(p, dict) and "id" in p}
        k = self.knowledge
        users, enrolled, not_enrolled, gone = {}, [], [], []
        for course, uid, username in pairs:
            profile = profiles.get(uid)
            k.stale.pop(username, None)
            if profile is None or str(profile.get("username")) != username:
                gone.append(username)
                continue
            users[username] = uid
            k.ids.setdefault(username, uid)
            k.checked.add((course, uid))
            if profile.get("roles"):
                k.enrolled.setdefault(course, set()).add(uid)
                enrolled.append((course, uid))
            else:
                k.enrolled.get(course, set()).discard(uid)
                not_enrolled.append((course, uid))
        for username in gone:
            # Asked again, unless this run looked it up already: then it is gone.
            k.ids.pop(username, None)
        known.confirm_users(self.site, users)
        known.forget_users(self.site, gone)
        known.confirm_enrolments(self.site, enrolled)
        known.forget_enrolments(self.site, not_enrolled)

    def learn_participants(self, course: int, pairs: list[tuple[int, int, str]], answer: Any) -> None:
        """The older check's answer: the ids of everyone enrolled in the
        course. Kept for the run (the course is not read twice); only the
        asked learners' enrolments are remembered."""
        ids = {int(u["id"]) for u in answer or [] if isinstance(u, dict) and "id" in u}
        k = self.knowledge
        k.listed.add(course)
        k.enrolled[course] = ids
        for _, _, username in pairs:
            k.stale.pop(username, None)  # this answer names no one: an old id is looked up
        known.confirm_enrolments(self.site, [(course, uid) for _, uid, _ in pairs if uid in ids])
        known.forget_enrolments(self.site, [(course, uid) for _, uid, _ in pairs if uid not in ids])


def lookup_args(usernames: list[str]) -> dict:
    return {"field": "username", "values": usernames}


def fatal_error(error: MoodleError) -> Exception | None:
    """The error that ends the run, not just one call: a rejected token or a
    passing server fault. None for an error that settles only its call."""
    if isinstance(error, TokenRejected):
        return error
    if error.transient:
        return Unreachable(f"{error.function}: {error.message}", "server")
    return None


# -- pushing the queue -------------------------------------------------------

LEARNING = ("completion", "grade")
READ_AHEAD = 1000  # (kind, course, user) rows read ahead, at most: a few batches' worth of look-ups


@dataclass
class Source:
    """One kind of queued event (the accounts; a course's enrolments; a
    course's completions and grades), read in queue order from a cursor: the
    events read stay queued until settled, so the queue is not read again."""

    kind: str  # "user", "enrolment" or "learning"
    course_id: int = 0
    after: int = 0  # the last event id read

    def where(self) -> list[pw.Expression]:
        if self.kind == "user":
            return [Event.type == "user"]
        kinds = Event.type == "enrolment" if self.kind == "enrolment" else Event.type.in_(LEARNING)
        return [kinds, Event.course_id == self.course_id]

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
    """A read whose answer lets waiting events be planned."""

    call: Call
    asks: dict[Want, str]  # what it asks -> how a refusal names it
    learn: Callable[[object], None]


class Pusher:
    """Pushes queued events in one stream of batches. Each request carries
    first the look-ups and enrolment checks that the events still need, then
    as many calls of events already planned as fit; after each answer the
    events that waited for it are planned (agent/plan.py, ``wants``). So the
    look-ups travel inside the batches instead of as requests of their own,
    and a course's events go as soon as what they depend on is known, without
    waiting for another course's look-ups. Before the first request, the
    queue is read ahead (who, in which course) so that the first batch
    already carries every look-up and check it can."""

    def __init__(self, run: Run, sources: list[Source]):
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
        courses = [s.course_id for s in self.sources if s.kind != "user"]
        where = Event.course_id.in_(courses)
        if any(s.kind == "user" for s in self.sources):
            where = where | (Event.type == "user")
        rows: list[Any] = list(Event.select(Event.type, Event.course_id, Event.username)
                               .where(Event.status == Event.QUEUED, where).distinct()
                               .limit(READ_AHEAD).tuples())
        present: set[tuple[str, int]] = set()
        for etype, course_id, username in rows:
            kind = "learning" if etype in LEARNING else etype
            present.add((kind, course_id or 0))
            self.ahead.append(Queued(0, "completion" if kind == "learning" else kind, username, course_id))
        if len(rows) < READ_AHEAD:  # all of it: a source with nothing queued is not read at all
            self.sources = [s for s in self.sources if (s.kind, s.course_id) in present]

    # -- planning --------------------------------------------------------------

    def busy(self) -> Busy:
        busy = Busy()
        for e in self.waiting:
            if e.type == "user":
                busy.users.add(e.username)
            elif e.type == "enrolment":
                busy.enrolling.add((int(e.course_id or 0), e.username))
        for call, owner in self.owners.values():
            if owner.type == "user":
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
                kind = "learning" if e.type in LEARNING else e.type
                ready.setdefault((kind, int(e.course_id or 0)), []).append(e)
            elif want in self.refused:
                refused[e.id] = self.refused[want]
        self.ahead = [a for a in self.ahead if (w := self.want(a, known_now, busy)) != READY and w not in self.refused]
        plans, settled = [], set(refused)
        for (kind, course_id), rows in ready.items():
            plan = self.plan(kind, course_id, rows)
            plans.append(plan)
            settled.update(e.id for e in rows[:plan.planned])  # a second event for an account being created waits
            by_id = {e.id: e for e in rows}
            for call in plan.calls:
                if call.creates_user or call.enrols is not None or call.function == "core_user_update_users":
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

    def plan(self, kind: str, course_id: int, rows: list[Queued]) -> Plan:
        run, k = self.run, self.run.knowledge
        if kind == "user":
            ids = [e.id for e in rows]
            passwords = {s.event_id: s.password for s in Secret.select().where(Secret.event.in_(ids))}
            return plan_users(rows, k.ids, passwords, "core_user_update_users" in run.functions)
        enrolled = k.enrolled.get(course_id, set())
        if kind == "enrolment":
            return plan_enrolments(rows, course_id, k.ids, enrolled)
        if course_id not in self.activities:
            self.activities[course_id] = course_activities(course_id)
            self.shortnames[course_id] = Course.get_by_id(course_id).shortname
        return plan_learning(rows, course_id, self.shortnames[course_id], k.ids, enrolled,
                             self.activities[course_id], run.force, run.config.agent.batch_size)

    # -- asking and sending ----------------------------------------------------

    def queries(self) -> list[Query]:
        """The look-ups first (a check needs the id), a hundred per call."""
        run = self.run
        names = sorted(self.lookups)
        out = [lookup_query(run, names[start:start + LOOKUP_CHUNK]) for start in range(0, len(names), LOOKUP_CHUNK)]
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
            out += [profiles_query(run, layer[start:start + LOOKUP_CHUNK])
                    for layer in layers for start in range(0, len(layer), LOOKUP_CHUNK)]
        else:
            out += [participants_query(run, course_id, [p for p in checks if p[0] == course_id])
                    for course_id in sorted({p[0] for p in checks})]
        return out

    def send(self, queries: list[Query], calls: list[Call]) -> None:
        asked = {id(q.call): q for q in queries}

        def settle(call: Call, result: CallResult) -> Exception | None:
            query = asked.get(id(call))
            if query is None:
                return self.run.settle(call, result)
            if not result.ok:
                assert result.error is not None
                fatal = fatal_error(result.error)
                if fatal:
                    return fatal
                error = result.error
                for want, what in query.asks.items():
                    self.refused[want] = (f"could not ask the server for {what}: it refused {error.function}: "
                                          f"{error.message} ({error.errorcode})")
                return None
            query.learn(result.data)
            return None

        answered = self.run.send_and_settle([q.call for q in queries] + calls, settle)
        done = max(0, answered - len(queries))
        for call in self.pending[:done]:
            self.owners.pop(id(call), None)
        del self.pending[:done]


def lookup_query(run: Run, usernames: list[str]) -> Query:
    def learn(answer: object) -> None:
        run.learn_users(usernames, answer)
    return Query(Call(LOOKUP, lookup_args(usernames), [], "lookup"),
                 {("lookup", u): f"the account {u!r}" for u in usernames}, learn)


def check_asks(pairs: list[tuple[int, int, str]]) -> dict[Want, str]:
    return {("check", (c, uid)): f"the enrolment of {username!r} in course {c}" for c, uid, username in pairs}


def profiles_query(run: Run, pairs: list[tuple[int, int, str]]) -> Query:
    def learn(answer: object) -> None:
        run.learn_profiles(pairs, answer)
    args = {"userlist": [{"userid": uid, "courseid": c} for c, uid, _ in pairs]}
    return Query(Call(PROFILES, args, [], "check"), check_asks(pairs), learn)


def participants_query(run: Run, course_id: int, pairs: list[tuple[int, int, str]]) -> Query:
    def learn(answer: object) -> None:
        run.learn_participants(course_id, pairs, answer)
    args = {"courseid": course_id, "options": [{"name": "userfields", "value": "id"}]}
    return Query(Call(ENROLLED, args, [], "check"), check_asks(pairs), learn)


def course_activities(course_id: int) -> dict[int, str]:
    """cmid -> module name, as the box's copy of the course has them."""
    return {a.cmid: a.modname for a in Activity.select(Activity.cmid, Activity.modname)
            .where(Activity.course == course_id)}


def push_events(run: Run, courses: list[Course]) -> None:
    """The accounts, then each course's enrolments, then its completions and
    grades: one stream of batches (Pusher)."""
    sources = ([Source("user")] + [Source("enrolment", c.id) for c in courses]
               + [Source("learning", c.id) for c in courses])
    Pusher(run, sources).push()


def push_learning(run: Run, course: Course) -> None:
    """Completions and grades of one course, in queue order."""
    Pusher(run, [Source("learning", course.id)]).push()


def queued_ids(course_id: int, *where: pw.Expression) -> list[int]:
    return first_column(Event.select(Event.id).where(Event.status == Event.QUEUED, Event.course_id == course_id,
                                                     *where))


def check_courses(run: Run) -> list[Course]:
    """One request for every course of the box; refresh what changed.
    Returns the courses whose events can be pushed."""
    rec = run.rec
    box = {c.id: c for c in Course.select()}
    wanted = set(box)
    wanted |= set(first_column(Event.select(Event.course_id).where(
        Event.status == Event.QUEUED, Event.course_id.is_null(False)).distinct()))
    rec.save(phase="checking_courses", courses_total=len(wanted), courses_done=0)
    server = courses_mod.fetch_by_ids(run.client, sorted(wanted)) if wanted else {}
    pushable = []
    for done, cid in enumerate(sorted(wanted), 1):
        run.check_stop()
        mine, theirs = box.get(cid), server.get(cid)
        outcome = {"id": cid, "shortname": mine.shortname if mine else (theirs.shortname if theirs else str(cid))}
        if theirs is None:
            # Kept queued, its events would stop every later sync; as
            # conflicts a teacher can retry them (the course restored) or discard them.
            gone = queued_ids(cid)
            run.mark_conflicts(dict.fromkeys(gone, f"course {outcome['shortname']} (id {cid}) is missing on the server"))
            outcome["outcome"] = f"missing on the server: {len(gone)} event(s) kept as conflicts"
        elif mine is not None and courses_mod.is_same(mine, theirs) and not run.force:
            outcome["outcome"] = "unchanged"
            pushable.append(mine)
        else:
            try:
                courses_mod.refresh(run.client, theirs)
            except MoodleError as exc:
                outcome["outcome"] = "refresh failed"
                rec.errors.append(f"course {theirs.shortname}: could not read its contents: {exc}")
                rec.courses[cid] = outcome
                continue
            rec.actions["courses_refreshed"] += 1
            outcome["shortname"] = theirs.shortname
            if run.force:
                outcome["outcome"] = "refreshed (forced)"
            elif mine is None:
                outcome["outcome"] = "fetched"
            else:
                removed = conflicts_for_missing_activities(run, cid, theirs.shortname)
                outcome["outcome"] = "changed on the server: refreshed" + (
                    f"; {removed} event(s) on removed activities kept as conflicts" if removed else "")
            pushable.append(Course.get_by_id(cid))
        rec.courses[cid] = outcome
        rec.row.courses_done = done
        if outcome["outcome"] != "unchanged" or done == len(wanted):
            # One commit (an fsync on the SD card) per course that took a
            # request, not per course: an unchanged one is done at once.
            rec.save()
    return pushable


def conflicts_for_missing_activities(run: Run, course_id: int, shortname: str) -> int:
    present = Activity.select(Activity.cmid).where(Activity.course == course_id)
    gone = list(Event.select(Event.id, Event.cmid).where(
        Event.status == Event.QUEUED, Event.course_id == course_id,
        Event.cmid.is_null(False), Event.cmid.not_in(present)))
    run.mark_conflicts({e.id: f"activity {e.cmid} no longer exists in course {shortname} "
                              "(the course changed on the server)" for e in gone})
    return len(gone)


def check_connection(run: Run) -> bool:
    """The online check; notes the clock offset, the service's functions and the site."""
    try:
        info = run.client.site_info()
    except Unreachable as exc:
        run.rec.errors.append(f"offline: {exc.reason}")
        return False
    run.rec.row.clock_offset_s = run.client.clock_offset_s()
    run.functions = {str(f.get("name")) for f in info.get("functions", []) if isinstance(f, dict)}
    settings.put(token_rejected=False, site_name=info.get("sitename"), site_url=info.get("siteurl"),
                 moodle_release=info.get("release"))
    return True


def execute(run: Run) -> str:
    if not check_connection(run):
        return SyncRun.SKIPPED_OFFLINE
    pushable = check_courses(run)
    run.rec.save(phase="sending_events")
    offset = run.rec.row.clock_offset_s
    corrected = correct_event_times(offset)
    if corrected:
        log.info("corrected the time of %d event(s) stamped while the clock was unknown, by %+.0f s",
                 corrected, offset)
    push_events(run, pushable)
    return run.rec.final_status()


def run_sync(config: Config, trigger: str = "cli", force: bool = False, *,
             stop: threading.Event | None = None, client: MoodleClient | None = None,
             on_started: Callable[[SyncRun], None] | None = None) -> SyncRun:
    """Run one sync and return its history row. Raises AlreadyRunning or SyncDisabled."""
    # Made before the run starts: it imports the HTTP stack (0.05-0.15 s on
    # a small board), which is the process starting, not the sync.
    client = client or MoodleClient(config.moodle)
    with recorded_run(config, trigger, ACTION_KINDS, force=force, on_started=on_started) as rec:
        rec.traffic.append(client.traffic)
        run = Run(config, client, rec, force=force, stop=stop or threading.Event())
        try:
            rec.status = execute(run)
        finally:
            if run.secrets_erased:
                # The WAL still holds the pages with the passwords: fold it into
                # the (zeroed) database file and truncate it.
                database.obj.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return rec.row
