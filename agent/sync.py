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
from typing import Callable, Iterator

import peewee as pw

from . import courses as courses_mod
from . import settings
from .collect import collect_for_sync
from .down import DOWN_KINDS, pull_down, record_pushed
from .config import Config
from .db import Activity, Course, Event, Secret, SyncRun, database, first_column, iso, utcnow
from .db import BoxActivity, BoxCourse, Collected
from .history import ACTION_KINDS
from .moodle import BATCH_FUNCTION, CallResult, MoodleClient, MoodleError, TokenRejected, Unreachable
from .plan import Call, Plan, Queued, grade_problem, plan_enrolments, plan_learning, plan_users
from .plan import ActivityInfo, describe_activity, map_activities
from .queue import correct_event_times
from .queue import count_by_status
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
    "core_enrol_get_enrolled_users",
    "core_completion_override_activity_completion_status",
    "core_grades_update_grades",
]
OPTIONAL_FUNCTIONS = [BATCH_FUNCTION]

# A Retry-After longer than this ends the run instead; the next run resumes.
MAX_RETRY_WAIT_S = 120.0
MAX_RETRIES = 3
LOOKUP_CHUNK = 100

Settle = Callable[[Call, CallResult], "Exception | None"]


@dataclass
class Run:
    """One run's connection to the server and what it learnt of it."""

    config: Config
    client: MoodleClient
    rec: Record
    force: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    functions: set[str] = field(default_factory=set)
    user_ids: dict[str, int] = field(default_factory=dict)
    enrolled: dict[int, set[int]] = field(default_factory=dict)
    secrets_erased: bool = False
    direction: str = "up"  # [sync] direction / the page's setting, read once when the run starts

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
        batch_size = self.config.agent.batch_size if BATCH_FUNCTION in self.functions else 1
        pending = list(calls)
        while pending:
            self.check_stop()
            chunk = pending[:batch_size]
            results = self.send_chunk(chunk)
            stop_error = None
            counted = self.rec.snapshot()
            try:
                with database.obj.atomic():
                    for call, result in zip(chunk, results):
                        stop_error = settle(call, result)
                        if stop_error:
                            break
                    self.rec.save()
            except pw.DatabaseError:
                self.rec.restore(counted)  # not committed: the history must not count it either
                raise
            if stop_error:  # raised after the commit: what was confirmed stays sent
                raise stop_error
            # The batch stops at its first error: the rest go in the next one.
            pending = pending[len(results):]

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
            if call.creates_user:
                self.user_ids[call.creates_user] = int(result.data[0]["id"])
            if call.enrols is not None:
                self.enrolled.setdefault(int(call.args["enrolments"][0]["courseid"]), set()).add(call.enrols)
            return None
        error = result.error
        assert error is not None
        fatal = fatal_error(error)
        if fatal:
            return fatal
        reason = f"the server refused {error.function}: {error.message} ({error.errorcode})"
        self.mark_conflicts(dict.fromkeys(call.events, reason))
        return None

    # -- what the server knows ----------------------------------------------

    def resolve_users(self, usernames: set[str]) -> None:
        """Look up usernames not yet known, a hundred per call."""
        todo = sorted(u for u in usernames if u not in self.user_ids)
        for start in range(0, len(todo), LOOKUP_CHUNK):
            found = self.client.call("core_user_get_users_by_field",
                                     {"field": "username", "values": todo[start:start + LOOKUP_CHUNK]})
            for user in found or []:
                self.user_ids[str(user["username"])] = int(user["id"])

    def enrolled_in(self, course_id: int) -> set[int]:
        if course_id not in self.enrolled:
            users = self.client.call("core_enrol_get_enrolled_users", {"courseid": course_id})
            self.enrolled[course_id] = {int(u["id"]) for u in users or []}
        return self.enrolled[course_id]


def fatal_error(error: MoodleError) -> Exception | None:
    """The error that ends the run, not just one call: a rejected token or a
    passing server fault. None for an error that settles only its call."""
    if isinstance(error, TokenRejected):
        return error
    if error.transient:
        return Unreachable(f"{error.function}: {error.message}", "server")
    return None


def queued_chunks(size: int, *where: pw.Expression) -> Iterator[list[Queued]]:
    """Queued events, a chunk at a time, re-read each time: settled events
    leave the queue, so a retried chunk never re-sends what was confirmed."""
    while True:
        rows = (Event.select(Event.id, Event.type, Event.username, Event.course_id, Event.cmid, Event.data)
                .where(Event.status == Event.QUEUED, *where).order_by(Event.id).limit(size))
        chunk = [Queued(e.id, e.type, e.username, e.course_id, e.cmid, e.data) for e in rows]
        if not chunk:
            return
        yield chunk


def push_users(run: Run) -> None:
    for rows in queued_chunks(run.read_size * 2, Event.type == "user"):
        run.check_stop()
        run.resolve_users({e.username for e in rows})
        ids = [e.id for e in rows]
        passwords = {s.event_id: s.password for s in Secret.select().where(Secret.event.in_(ids))}
        plan = plan_users(rows, run.user_ids, passwords, "core_user_update_users" in run.functions)
        run.write(plan)
        run.push(plan.calls)


def push_enrolments(run: Run, course_id: int) -> None:
    for rows in queued_chunks(run.read_size * 4, Event.type == "enrolment", Event.course_id == course_id):
        run.check_stop()
        run.resolve_users({e.username for e in rows})
        plan = plan_enrolments(rows, course_id, run.user_ids, run.enrolled_in(course_id))
        run.write(plan)
        run.push(plan.calls)


def push_learning(run: Run, course: Course) -> None:
    """Completions and grades of one course, in queue order."""
    activities = {a.cmid: a.modname for a in Activity.select(Activity.cmid, Activity.modname)
                  .where(Activity.course == course.id)}
    where = (Event.type.in_(["completion", "grade"]), Event.course_id == course.id)
    for rows in queued_chunks(run.read_size * 4, *where):
        run.check_stop()
        run.resolve_users({e.username for e in rows})
        plan = plan_learning(rows, course.id, course.shortname, run.user_ids, run.enrolled_in(course.id),
                             activities, run.force, run.config.agent.batch_size)
        run.write(plan)
        run.push(plan.calls)


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
    push_users(run)
    for course in pushable:
        push_enrolments(run, course.id)
    for course in pushable:
        push_learning(run, course)
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
    with recorded_run(config, trigger, kinds, force=force, on_started=on_started) as rec:
        rec.row.direction = direction
        if collect and config.box is not None:
            rec.save(phase="collecting")
            rec.row.collected = collect_for_sync(config, stop)
            # The progress bar's total: with what the collection queued.
            rec.save(phase="checking_connection", events_total=count_by_status()[Event.QUEUED])
        client = client or MoodleClient(config.moodle)
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
