"""One sync run: online check, course check, push of the queued events.

Guarantees:
- an event is marked sent only after the server's answer for it said success;
- a network failure, a crash or a kill at any moment leaves every event not
  yet confirmed in the queue, and the next run finishes the job;
- re-sending is safe: accounts are looked up before they are created,
  enrolments are checked before they are made, and completion overrides and
  grades set a state rather than add to one;
- one run at a time across processes (agent/runs.py).

What to send is decided by the pure functions of agent/push/plan.py; this module
reads the queue, writes each chunk's outcome in one transaction (the SD card
is slow: one fsync per chunk and per batch, not per event) and talks to the
server.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

import peewee as pw

from . import courses as courses_mod
from .store import settings
from .box.collect import collect_for_sync
from .down.pull import DOWN_KINDS, pull_down, record_pushed
from .config import Config
from .store.db import Activity, Course, Event, Secret, SyncRun, database, first_column
from .store.db import BoxActivity, BoxCourse, Collected
from .store.runkinds import ACTION_KINDS, SYNC
from .moodle import BATCH_FUNCTION, CallResult, MoodleClient, MoodleError, Unreachable
from .push.plan import (READY, Busy, Call, Knowledge, Plan, Queued, Want, plan_enrolments, plan_learning,
                   plan_users, wants)
from .push.plan import ActivityInfo, describe_activity, map_activities
from .store.queue import correct_event_times
from .store.queue import count_by_status
from .runs import recorded_run, unreachable_reason
from .push.session import ENROLLED, LOOKUP, LOOKUP_CHUNK, PROFILES, Run, fatal_error, lookup_args

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
    events that waited for it are planned (agent/push/plan.py, ``wants``). So the
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


# -- the box's own Moodle: its activities mapped to the server's ---------------


def map_box_activities(run: Run, pushable: list[Course]) -> None:
    """Give the completions and grades collected from the box's Moodle the
    server's cmids, per course, before they are pushed (after the course
    check: the server's activities are up to date). The courses are the same
    when every box activity with learner data maps to exactly one server
    activity; otherwise the course is shown as differing, naming the
    activities, and their events become conflicts with the reason. Force
    Sync skips the check, yet pushes only what maps: a mapping is never guessed."""
    for course in pushable:
        box = BoxCourse.get_or_none(BoxCourse.course_id == course.id)
        if box is None:
            continue
        waiting = list(Event.select(Event.id, Event.data).where(
            Event.status == Event.QUEUED, Event.course_id == course.id, Event.type.in_(["completion", "grade"]),
            Event.cmid.is_null()))
        with_data = set(first_column(Collected.select(Collected.box_cmid).where(Collected.box_course == box.id)
                                     .distinct()))
        with_data |= {int(e.data["box_cmid"]) for e in waiting if "box_cmid" in e.data}
        if not with_data:
            continue
        on_box = {a.cmid: ActivityInfo(a.cmid, a.section, a.modname, a.name, a.idnumber)
                  for a in BoxActivity.select().where(BoxActivity.box_course == box.id)}
        on_server = [ActivityInfo(a.cmid, a.section, a.modname, a.name)
                     for a in Activity.select().where(Activity.course == course.id)]
        mapping = map_activities(list(on_box.values()), on_server)
        why = {cmid: f"activity {describe_activity(on_box[cmid])} of the box's course {course.shortname} has no "
                     f"match on the server: {reason}" for cmid, reason in mapping.unmapped.items()}
        why |= {cmid: f"activity {cmid} of the box's course {course.shortname} is no longer on the box's Moodle"
                for cmid in with_data - set(on_box)}
        differs = sorted(why[cmid] for cmid in with_data if cmid in why)
        settle_box_events(run, waiting, mapping.mapped, why)
        if differs and not run.force:
            outcome = run.rec.courses.setdefault(course.id, {"id": course.id, "shortname": course.shortname,
                                                             "outcome": "unchanged"})
            outcome["outcome"] += "; differs from the box's course: " + "; ".join(differs)
            outcome["differs"] = differs
            run.rec.save()


def settle_box_events(run: Run, waiting: list[Event], mapped: dict[int, int], why: dict[int, str]) -> None:
    """The server's cmid on each mapped event, a conflict for each other one: one commit."""
    to_cmid: dict[int, list[int]] = {}
    conflicts = {}
    for e in waiting:
        box_cmid = int(e.data.get("box_cmid") or 0)
        if box_cmid in mapped:
            to_cmid.setdefault(mapped[box_cmid], []).append(e.id)
        else:
            conflicts[e.id] = why.get(box_cmid, f"activity {box_cmid} of the box's Moodle has no match on the server")
    with database.obj.atomic():
        for cmid, ids in to_cmid.items():
            Event.update(cmid=cmid).where(Event.id.in_(ids)).execute()
        run.mark_conflicts(conflicts)


def check_connection(run: Run) -> bool:
    """The online check; notes the clock offset, the service's functions and the site."""
    try:
        info = run.client.site_info()
    except Unreachable as exc:
        run.rec.errors.append(f"offline: {exc.reason}")
        run.rec.reasons.append(unreachable_reason(exc))
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
    map_box_activities(run, pushable)
    if run.direction != "up":
        pull_down(run, pushable)
        if run.direction == "down":
            return run.rec.final_status()
    run.rec.save(phase="sending_events")
    offset = run.rec.row.clock_offset_s
    corrected = correct_event_times(offset)
    if corrected:
        log.info("corrected the time of %d event(s) stamped while the clock was unknown, by %+.0f s",
                 corrected, offset)
    push_events(run, pushable)
    if run.direction == "both":
        record_pushed(run)
    return run.rec.final_status()


def run_sync(config: Config, trigger: str = "cli", force: bool = False, *,
             stop: threading.Event | None = None, client: MoodleClient | None = None,
             on_started: Callable[[SyncRun], None] | None = None, collect: bool = True) -> SyncRun:
    """Run one sync and return its history row. Raises AlreadyRunning or SyncDisabled.
    With a box's Moodle ([box]) and ``collect``, a full collection comes first,
    in its own history row; the sync's row keeps what it found."""
    direction = settings.get(config, "sync_direction")
    kinds = ACTION_KINDS if direction == "up" else ACTION_KINDS + DOWN_KINDS
    # Made before the run starts: it imports the HTTP stack (0.05-0.15 s on
    # a small board), which is the process starting, not the sync.
    client = client or MoodleClient(config.moodle)
    with recorded_run(config, SYNC, trigger, kinds, force=force, on_started=on_started) as rec:
        rec.row.direction = direction
        if collect and config.box is not None:
            rec.save(phase="collecting")
            rec.row.collected = collect_for_sync(config, stop)
            # The progress bar's total: with what the collection queued.
            rec.save(phase="checking_connection", events_total=count_by_status()[Event.QUEUED])
        rec.traffic.append(client.traffic)
        run = Run(config, client, rec, force=force, stop=stop or threading.Event(), direction=direction)
        try:
            rec.status = execute(run)
        finally:
            if run.secrets_erased:
                # The WAL still holds the pages with the passwords: fold it into
                # the (zeroed) database file and truncate it.
                database.obj.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return rec.row
