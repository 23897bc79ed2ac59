"""One sync run: online check, course check, push of the queued events.

Guarantees:
- an event is marked sent only after the server's answer for it said success;
- a network failure, a crash or a kill at any moment leaves every event not
  yet confirmed in the queue, and the next run finishes the job;
- re-sending is safe: accounts are looked up before they are created,
  enrolments are checked before they are made, and completion overrides and
  grades set a state rather than add to one;
- one run at a time across processes (an flock next to the database).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import peewee as pw

from . import courses as courses_mod
from . import retention, settings
from .config import Config
from .db import Activity, Course, Event, Secret, SyncRun, database, iso, utcnow
from .moodle import BATCH_FUNCTION, CallResult, MoodleClient, MoodleError, TokenRejected, Unreachable
from .queue import ROLES, correct_event_times, count_by_status
from .storage import database_problem, keep_reserve, release_reserve

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

ACTION_KINDS = ["users_created", "users_updated", "enrolments", "completions", "grades", "courses_refreshed"]

# A Retry-After longer than this ends the run instead; the next run resumes.
MAX_RETRY_WAIT_S = 120.0
MAX_RETRIES = 3
LOOKUP_CHUNK = 100


class AlreadyRunning(Exception):
    def __init__(self, run_id: str | None):
        self.run_id = run_id
        super().__init__(f"a sync is already running (id {run_id or 'unknown'})")


class SyncDisabled(Exception):
    def __init__(self) -> None:
        super().__init__("sync is turned off (Enable Sync on the page)")


class Interrupted(Exception):
    pass


def lock_path(config: Config) -> Path:
    return config.agent.database.with_name(config.agent.database.name + ".lock")


@contextmanager
def sync_lock(config: Config) -> Iterator[None]:
    """Held for the whole run; the kernel frees it if the process dies."""
    path = lock_path(config)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            running = SyncRun.select(SyncRun.id).where(SyncRun.status == SyncRun.RUNNING) \
                .order_by(SyncRun.started_at.desc()).first()
            raise AlreadyRunning(running.id if running else None) from None
        yield
    finally:
        os.close(fd)  # closing releases the flock


def running_run() -> SyncRun | None:
    """The run going on now: a row marked running whose process still exists.
    (Probing the flock instead would race with a sync starting at that moment.)"""
    row = SyncRun.select().where(SyncRun.status == SyncRun.RUNNING).order_by(SyncRun.started_at.desc()).first()
    if row is None or not row.pid:
        return None
    try:
        os.kill(row.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, under another user
        pass
    return row


def is_running(config: Config) -> bool:
    return running_run() is not None


@dataclass
class Call:
    """One web service call and the events it settles."""

    function: str
    args: dict
    events: list[int]
    kind: str  # which action counter a success adds to
    count: int = 1  # how much it adds
    on_success: Callable[[object], None] | None = None


@dataclass
class Run:
    config: Config
    client: MoodleClient
    row: SyncRun
    force: bool
    stop: threading.Event
    functions: set[str] = field(default_factory=set)
    actions: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    course_outcomes: dict[int, dict] = field(default_factory=dict)
    user_ids: dict[str, int] = field(default_factory=dict)
    enrolled: dict[int, set[int]] = field(default_factory=dict)
    conflicts: int = 0
    secrets_erased: bool = False
    progress_cb: Callable[[SyncRun], None] | None = None

    # -- progress and bookkeeping -------------------------------------------

    def save_progress(self, **fields) -> None:
        for key, value in fields.items():
            setattr(self.row, key, value)
        self.row.bytes_sent = self.client.traffic.bytes_sent
        self.row.bytes_received = self.client.traffic.bytes_received
        self.row.actions = self.action_dict()
        self.row.save()
        if self.progress_cb:
            self.progress_cb(self.row)

    def action_dict(self) -> dict[str, int]:
        return {kind: self.actions.get(kind, 0) for kind in ACTION_KINDS}

    @property
    def read_size(self) -> int:
        """Queued events are read a multiple of this at a time: at least a
        look-up's worth, so that small batches do not multiply the look-ups."""
        return max(self.config.agent.batch_size, LOOKUP_CHUNK)

    def check_stop(self) -> None:
        if self.stop.is_set():
            raise Interrupted()

    def mark_sent(self, ids: list[int]) -> None:
        if not ids:
            return
        with database.obj.atomic():
            Event.update(status=Event.SENT, sent_at=iso(utcnow()), sync_id=self.row.id, last_error=None,
                         attempts=Event.attempts + 1).where(Event.id.in_(ids)).execute()
            if Secret.delete().where(Secret.event.in_(ids)).execute():
                self.secrets_erased = True
        self.row.events_sent += len(ids)

    def mark_conflict(self, ids: list[int], reason: str) -> None:
        if not ids:
            return
        with database.obj.atomic():
            Event.update(status=Event.CONFLICT, last_error=reason[:1000], sync_id=self.row.id,
                         attempts=Event.attempts + 1).where(Event.id.in_(ids)).execute()
        self.conflicts += len(ids)
        self.row.events_sent += len(ids)  # settled for this run, for the progress bar

    # -- sending ------------------------------------------------------------

    def push(self, calls: list[Call]) -> None:
        """Send calls, batched when the service allows; every call gets a result."""
        if not calls:
            return
        batch_size = self.config.agent.batch_size if BATCH_FUNCTION in self.functions else 1
        pending = list(calls)
        while pending:
            self.check_stop()
            chunk = pending[:batch_size]
            results = self.send_chunk(chunk)
            # One commit (one fsync) per batch, not per event: the SD card is slow.
            stop_error = None
            counted = self.row.events_sent, self.conflicts, Counter(self.actions)
            try:
                with database.obj.atomic():
                    for call, result in zip(chunk, results):
                        stop_error = self.settle(call, result)
                        if stop_error:
                            break
                    self.save_progress()
            except pw.DatabaseError:
                # Not committed (a full disk): the history must not count it either.
                self.row.events_sent, self.conflicts, self.actions = counted
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
                self.mark_conflict(call.events, problem)
                return None
            self.mark_sent(call.events)
            self.actions[call.kind] += call.count
            if call.on_success:
                call.on_success(result.data)
            return None
        error = result.error
        fatal = fatal_error(error)
        if fatal:
            return fatal
        self.mark_conflict(call.events, f"the server refused {error.function}: {error.message} ({error.errorcode})")
        return None

    def work(self) -> str:
        """The run's job; returns its final status. A sync by default."""
        return execute(self)

    # -- users --------------------------------------------------------------

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


def grade_problem(call: Call, data: object) -> str | None:
    """core_grades_update_grades answers 0 for OK, else a GRADE_UPDATE_* code."""
    if call.function != "core_grades_update_grades" or data in (0, "0"):
        return None
    meaning = {1: "failed", 2: "multiple grade items", 4: "the grade item is locked"}.get(data, "refused")
    return f"the server did not take the grade (core_grades_update_grades answered {data}: {meaning})"


def chunks_of(query_fn: Callable[[int], list[Event]], size: int) -> Iterator[list[Event]]:
    """Queued events, a chunk at a time, re-read each time: settled events
    leave the queue, so a retried chunk never re-sends what was confirmed."""
    while True:
        rows = query_fn(size)
        if not rows:
            return
        yield rows


def _queued(*where):
    def query(size: int) -> list[Event]:
        return list(Event.select().where(Event.status == Event.QUEUED, *where).order_by(Event.id).limit(size))
    return query


def push_users(run: Run) -> None:
    size = run.read_size * 2
    for rows in chunks_of(_queued(Event.type == "user"), size):
        run.check_stop()
        run.resolve_users({e.username for e in rows})
        passwords = {s.event_id: s.password for s in Secret.select().where(Secret.event.in_([e.id for e in rows]))}
        calls, seen_new = [], set()
        for e in rows:
            profile = {k: e.data[k] for k in ("firstname", "lastname", "email", "idnumber") if k in e.data}
            password = passwords.get(e.id)
            if e.username in run.user_ids or e.username in seen_new:
                if e.username in seen_new:
                    break  # its creation must be confirmed first: next chunk
                if "core_user_update_users" not in run.functions:
                    run.mark_conflict([e.id], "the token's service lacks core_user_update_users, "
                                              f"so the existing account {e.username!r} cannot be updated")
                    continue
                user = {"id": run.user_ids[e.username], **profile}
                if password:
                    user["password"] = password
                calls.append(Call("core_user_update_users", {"users": [user]}, [e.id], "users_updated"))
            else:
                user = {"username": e.username, "auth": "manual", **profile}
                if password:
                    user["password"] = password
                else:
                    user["createpassword"] = 1
                seen_new.add(e.username)

                def created(data, username=e.username):
                    run.user_ids[username] = int(data[0]["id"])

                calls.append(Call("core_user_create_users", {"users": [user]}, [e.id], "users_created",
                                  on_success=created))
        run.push(calls)


def push_enrolments(run: Run, course_id: int) -> None:
    size = run.read_size * 4
    for rows in chunks_of(_queued(Event.type == "enrolment", Event.course_id == course_id), size):
        run.check_stop()
        run.resolve_users({e.username for e in rows})
        enrolled = run.enrolled_in(course_id)
        calls, done, planned = [], [], set()
        for e in rows:
            uid = run.user_ids.get(e.username)
            if uid is None:
                run.mark_conflict([e.id], f"unknown user {e.username!r} on the server, and no account for it is queued")
            elif uid in enrolled or (uid, e.data["role"]) in planned:
                done.append(e.id)  # already enrolled: nothing to send
            else:
                planned.add((uid, e.data["role"]))
                calls.append(Call("enrol_manual_enrol_users",
                                  {"enrolments": [{"roleid": ROLES[e.data["role"]], "userid": uid, "courseid": course_id}]},
                                  [e.id], "enrolments", on_success=lambda _d, uid=uid: enrolled.add(uid)))
        run.mark_sent(done)
        run.push(calls)


def push_learning(run: Run, course: Course, force: bool) -> None:
    """Completions and grades of one course, in queue order."""
    size = run.read_size * 4
    activities = {a.cmid: a for a in Activity.select().where(Activity.course == course.id)}
    for rows in chunks_of(_queued(Event.type.in_(["completion", "grade"]), Event.course_id == course.id), size):
        run.check_stop()
        run.resolve_users({e.username for e in rows})
        enrolled = run.enrolled_in(course.id)
        calls: list[Call] = []
        grade_calls: dict[int, Call] = {}
        for e in rows:
            uid = run.user_ids.get(e.username)
            activity = activities.get(e.cmid)
            if uid is None:
                run.mark_conflict([e.id], f"unknown user {e.username!r} on the server")
            elif uid not in enrolled:
                run.mark_conflict([e.id], f"user {e.username!r} is not enrolled in course {course.shortname}")
            elif activity is None and not force:
                run.mark_conflict([e.id], f"activity {e.cmid} does not exist in course {course.shortname}")
            elif e.type == "completion":
                calls.append(Call("core_completion_override_activity_completion_status",
                                  {"userid": uid, "cmid": e.cmid, "newstate": 1 if e.data["completed"] else 0},
                                  [e.id], "completions"))
            elif activity is None:
                run.mark_conflict([e.id], f"activity {e.cmid} does not exist in course {course.shortname}, "
                                          "so its grade item is unknown")
            else:
                # One update_grades call per activity, of up to batch_size
                # grades (1: a call per event, as the Moodle app sends them);
                # a later grade for the same student replaces the earlier one
                # in that call, or follows it in the next call.
                call = grade_calls.get(e.cmid)
                if call is None or len(call.events) >= run.config.agent.batch_size:
                    call = Call("core_grades_update_grades",
                                {"source": "moodle-sync-agent", "courseid": course.id,
                                 "component": f"mod_{activity.modname}", "activityid": e.cmid,
                                 "itemnumber": 0, "grades": []}, [], "grades", count=0)
                    grade_calls[e.cmid] = call
                    calls.append(call)
                grades = [g for g in call.args["grades"] if g["studentid"] != uid]
                entry = {"studentid": uid, "grade": e.data["grade"]}
                if "feedback" in e.data:
                    entry["str_feedback"] = e.data["feedback"]
                call.args["grades"] = grades + [entry]
                call.events.append(e.id)
                call.count = len(call.args["grades"])
        run.push(calls)


def check_courses(run: Run) -> list[Course]:
    """One request for every course of the box; refresh what changed.
    Returns the courses whose events can be pushed."""
    box = {c.id: c for c in Course.select()}
    wanted = set(box)
    wanted |= {cid for (cid,) in Event.select(Event.course_id).where(
        Event.status == Event.QUEUED, Event.course_id.is_null(False)).distinct().tuples()}
    run.save_progress(phase="checking_courses", courses_total=len(wanted), courses_done=0)
    server = courses_mod.fetch_by_ids(run.client, sorted(wanted)) if wanted else {}
    pushable = []
    for done, cid in enumerate(sorted(wanted), 1):
        run.check_stop()
        mine, theirs = box.get(cid), server.get(cid)
        outcome = {"id": cid, "shortname": mine.shortname if mine else (theirs.shortname if theirs else str(cid))}
        if theirs is None:
            waiting = Event.select().where(Event.status == Event.QUEUED, Event.course_id == cid).count()
            outcome["outcome"] = "missing on the server"
            run.errors.append(f"course {outcome['shortname']} (id {cid}) is missing on the server; "
                              f"{waiting} event(s) kept in the queue")
        elif mine is not None and courses_mod.is_same(mine, theirs) and not run.force:
            outcome["outcome"] = "unchanged"
            pushable.append(mine)
        else:
            try:
                courses_mod.refresh(run.client, theirs)
            except MoodleError as exc:
                outcome["outcome"] = "refresh failed"
                run.errors.append(f"course {theirs.shortname}: could not read its contents: {exc}")
                run.course_outcomes[cid] = outcome
                continue
            run.actions["courses_refreshed"] += 1
            outcome["shortname"] = theirs.shortname
            if run.force:
                outcome["outcome"] = "refreshed (forced)"
            elif mine is None:
                outcome["outcome"] = "fetched"
            else:
                outcome["outcome"] = "changed on the server: refreshed"
                conflicts_for_missing_activities(run, cid, theirs.shortname)
            pushable.append(Course.get_by_id(cid))
        run.course_outcomes[cid] = outcome
        run.row.courses_done = done
        if outcome["outcome"] != "unchanged" or done == len(wanted):
            # One commit (an fsync on the SD card) per course that took a
            # request, not per course: an unchanged one is done at once.
            run.save_progress()
    return pushable


def conflicts_for_missing_activities(run: Run, course_id: int, shortname: str) -> None:
    present = Activity.select(Activity.cmid).where(Activity.course == course_id)
    gone = list(Event.select(Event.id, Event.cmid).where(
        Event.status == Event.QUEUED, Event.course_id == course_id,
        Event.cmid.is_null(False), Event.cmid.not_in(present)))
    for e in gone:
        run.mark_conflict([e.id], f"activity {e.cmid} no longer exists in course {shortname} "
                                  "(the course changed on the server)")
    if gone:
        run.errors.append(f"course {shortname}: {len(gone)} event(s) on removed activities kept as conflicts")


def recover_stale_runs(run_id: str | None = None) -> None:
    """A run still marked running while we hold the lock died with its process.
    With ``run_id``: the agent is leaving before that run could end itself."""
    now = iso(utcnow())
    query = SyncRun.select().where(SyncRun.status == SyncRun.RUNNING)
    for stale in query.where(SyncRun.id == run_id) if run_id else query:
        stale.status = SyncRun.INTERRUPTED
        stale.completed_at = stale.completed_at or now
        stale.errors = (stale.errors or []) + ["the run was cut off (the agent stopped or lost power)"]
        stale.phase = "done"
        stale.save()


def final_status(run: Run) -> str:
    if run.errors or run.conflicts:
        return SyncRun.COMPLETED_WITH_ERRORS
    return SyncRun.COMPLETED


def run_sync(config: Config, trigger: str = "cli", force: bool = False, *,
             stop: threading.Event | None = None, client: MoodleClient | None = None,
             progress_cb: Callable[[SyncRun], None] | None = None,
             on_started: Callable[[SyncRun], None] | None = None,
             make_run: Callable[..., Run] = Run) -> SyncRun:
    """Run one sync and return its history row. Raises AlreadyRunning or SyncDisabled.
    ``make_run`` builds the Run whose ``work()`` is done (verify passes its own)."""
    if not settings.get(config, "sync_enabled"):
        raise SyncDisabled()
    with sync_lock(config):
        keep_reserve(config)
        recover_stale_runs()
        started = time.monotonic()
        row = SyncRun.create(trigger=trigger, force=force, status=SyncRun.RUNNING, started_at=iso(utcnow()),
                             pid=os.getpid(), phase="checking_connection",
                             events_total=count_by_status()[Event.QUEUED])
        if on_started:
            on_started(row)
        run = make_run(config=config, client=client or MoodleClient(config.moodle), row=row, force=force,
                       stop=stop or threading.Event(), progress_cb=progress_cb)
        log.info("sync %s started (trigger %s%s)", row.id, trigger, ", forced" if force else "")
        try:
            row.status = run.work()
        except Interrupted:
            row.status = SyncRun.INTERRUPTED
            run.errors.append("interrupted: the agent was asked to stop; unsent events stay queued")
        except TokenRejected:
            row.status = SyncRun.FAILED
            run.errors.append("the server rejected the token")
            settings.put(token_rejected=True)
        except Unreachable as exc:
            row.status = SyncRun.FAILED
            waiting = count_by_status()[Event.QUEUED]
            run.errors.append(f"lost the connection to the server: {exc.reason}; {waiting} event(s) kept in the queue")
        except MoodleError as exc:
            row.status = SyncRun.FAILED
            run.errors.append(f"the server refused a request: {exc}")
        except Exception as exc:  # a full disk, a bug: record it, never leave the run "running"
            row.status = SyncRun.FAILED
            full = disk_full_error(exc)
            if full is not None:
                log.error("sync %s: the database cannot be written: %s", row.id, full)
                run.errors.append(f"{database_problem(config, full)}; the events not yet confirmed stay queued")
            else:
                log.exception("sync %s failed", row.id)
                run.errors.append(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            if run.secrets_erased:
                # The WAL still holds the pages with the passwords: fold it into
                # the (zeroed) database file and truncate it.
                database.obj.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        row.completed_at = iso(utcnow())
        row.duration_s = round(time.monotonic() - started, 3)
        row.courses = list(run.course_outcomes.values())
        row.errors = run.errors
        try:
            run.save_progress(phase="done")
        except pw.OperationalError as exc:
            if disk_full_error(exc) is None or not release_reserve(config):
                raise
            run.save_progress(phase="done")  # in the space the reserve held
        try:
            retention.prune(config)
        except pw.DatabaseError as exc:  # e.g. a full disk: the next run tries again
            log.warning("retention skipped: %s", exc)
        log.info("sync %s ended: %s in %.1f s, %d B sent, %d B received",
                 row.id, row.status, row.duration_s, row.bytes_sent, row.bytes_received)
        return row


def disk_full_error(exc: BaseException | None) -> BaseException | None:
    """SQLite's "database or disk is full", if that is what ``exc`` comes
    from. SQLite rolls the transaction back itself on SQLITE_FULL, so the
    error raised is often peewee's failed ROLLBACK, with the real one as its
    context."""
    while exc is not None:
        if "database or disk is full" in str(exc):
            return exc
        exc = exc.__context__
    return None


def record_skipped(trigger: str, reason: str, bytes_sent: int = 0, bytes_received: int = 0,
                   clock_offset_s: float | None = None) -> SyncRun:
    """The one history row for a scheduled sync that did not happen because
    the server could not be reached, with what its checks cost: the checks
    themselves record nothing."""
    now = iso(utcnow())
    row = SyncRun.create(trigger=trigger, status=SyncRun.SKIPPED_OFFLINE, started_at=now, completed_at=now,
                         duration_s=0.0, phase="done", errors=[reason], bytes_sent=bytes_sent,
                         bytes_received=bytes_received, clock_offset_s=clock_offset_s)
    log.info("sync %s recorded: %s (%s)", row.id, row.status, reason)
    return row


def check_connection(run: Run) -> bool:
    """The online check; notes the clock offset, the service's functions and the site."""
    try:
        info = run.client.site_info()
    except Unreachable as exc:
        run.errors.append(f"offline: {exc.reason}")
        return False
    run.row.clock_offset_s = run.client.clock_offset_s()
    run.functions = {f.get("name") for f in info.get("functions", []) if isinstance(f, dict)}
    settings.put(token_rejected=False, site_name=info.get("sitename"), site_url=info.get("siteurl"),
                 moodle_release=info.get("release"))
    return True


def execute(run: Run) -> str:
    if not check_connection(run):
        return SyncRun.SKIPPED_OFFLINE
    pushable = check_courses(run)
    run.save_progress(phase="sending_events")
    corrected = correct_event_times(run.row.clock_offset_s)
    if corrected:
        log.info("corrected the time of %d event(s) stamped while the clock was unknown, by %+.0f s",
                 corrected, run.row.clock_offset_s)
    push_users(run)
    for course in pushable:
        push_enrolments(run, course.id)
    for course in pushable:
        push_learning(run, course, run.force)
    return final_status(run)
