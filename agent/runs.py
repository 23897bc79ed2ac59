"""One recorded run: the lock, the history row, and how the run ended.

Every kind of run (a sync, a verify, and later a collection from the box's
Moodle) runs inside :func:`recorded_run`, which owns what they share: one
run at a time across processes (an flock next to the database), the space
reserved for the run's last write, the recovery of a run that died with its
process, the row in the history, and the mapping of whatever ended the run
to its final status and a sentence for the teacher. The run itself only
says what it did.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import peewee as pw

from . import reasons
from .interrupt import Interrupted
from .store import settings
from .config import Config
from .store.db import Event, Run, iso, utcnow
from .store.history import IS_SYNC, recover_stale_runs
from .store.runkinds import COLLECT, RUN_NAMES
from .moodle import MoodleError, TokenRejected, Traffic, Unreachable
from .store.queue import StorageFull, count_by_status
from .store.diskspace import database_problem, keep_reserve, release_reserve

log = logging.getLogger(__name__)


class AlreadyRunning(Exception):
    def __init__(self, run_id: str | None, kind: str | None = None):
        self.run_id, self.kind = run_id, kind
        what = "a collection from the box's Moodle" if kind == COLLECT else "a sync"
        super().__init__(f"{what} is already running (id {run_id or 'unknown'})")


class SyncDisabled(Exception):
    def __init__(self) -> None:
        super().__init__("sync is turned off (Enable Sync on the page)")


def lock_path(config: Config) -> Path:
    return config.agent.database.with_name(config.agent.database.name + ".lock")


@contextmanager
def run_lock(config: Config) -> Iterator[None]:
    """Held for the whole run; the kernel frees it if the process dies."""
    fd = os.open(lock_path(config), os.O_RDWR | os.O_CREAT, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            # A sync's own collection runs inside it: name the sync.
            running = Run.select(Run.id, Run.kind).where(Run.status == Run.RUNNING) \
                .order_by(IS_SYNC.desc(), Run.started_at.desc()).first()
            raise AlreadyRunning(running.id if running else None, running.kind if running else None) from None
        yield
    finally:
        os.close(fd)  # closing releases the flock


@dataclass
class Record:
    """What a run has done so far, written into its history row by save()."""

    row: Run
    counters: Sequence[str]  # the action counters the row shows
    actions: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    courses: dict[int, dict] = field(default_factory=dict)
    traffic: list[Traffic] = field(default_factory=list)
    # The box's own Moodle's, counted apart: it is local, not the school's line (a sync down).
    box_traffic: list[Traffic] = field(default_factory=list)
    status: str | None = None  # set by the run when it ends by itself
    reasons: list[dict] = field(default_factory=list)  # why it failed (agent/reasons.py codes)
    moved_down: list[dict] = field(default_factory=list)  # the first changes written down (the dialog names them)

    def save(self, **fields: object) -> None:
        for key, value in fields.items():
            setattr(self.row, key, value)
        self.row.bytes_sent = sum(t.bytes_sent for t in self.traffic)
        self.row.bytes_received = sum(t.bytes_received for t in self.traffic)
        if self.box_traffic:
            self.row.box_bytes = {"sent": sum(t.bytes_sent for t in self.box_traffic),
                                  "received": sum(t.bytes_received for t in self.box_traffic)}
        self.row.actions = {kind: self.actions.get(kind, 0) for kind in self.counters}
        self.row.courses = list(self.courses.values())
        self.row.errors = self.errors
        self.row.reasons = self.reasons or None
        self.row.moved_down = self.moved_down or None
        if fields.get("phase") == "done" and self.row.kind != COLLECT:
            # Worked out once, from the final row: every later read (the page, its status poll, the
            # e-mail) takes them from the row instead of reading the collection's row again.
            self.row.warnings = reasons.warnings_of(self.row, reasons.collection_reasons(self.row))
        self.row.save()

    def snapshot(self) -> tuple[int, int, Counter]:
        return self.row.events_sent, self.row.conflicts, Counter(self.actions)

    def restore(self, snapshot: tuple[int, int, Counter]) -> None:
        """Forget counts whose transaction did not commit (a full disk)."""
        self.row.events_sent, self.row.conflicts, self.actions = snapshot

    def final_status(self) -> str:
        """Errors turn a run red; a sync whose collection failed, that left a
        course aside or settled events as conflicts is amber (agent/reasons.py)."""
        if self.errors:
            return Run.COMPLETED_WITH_ERRORS
        if self.row.kind != COLLECT and reasons.warnings_of(self.row, reasons.collection_reasons(self.row)):
            return Run.COMPLETED_WITH_WARNINGS
        return Run.COMPLETED


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


def describe_failure(config: Config, exc: BaseException) -> tuple[str, str]:
    """The final status and the sentence for the history, of what ended a run."""
    if isinstance(exc, Interrupted):
        return Run.INTERRUPTED, "interrupted: the agent was asked to stop; unsent events stay queued"
    if isinstance(exc, TokenRejected):
        settings.put(token_rejected=True)
        return Run.FAILED, "the server rejected the token"
    if isinstance(exc, Unreachable):
        waiting = count_by_status()[Event.QUEUED]
        return Run.FAILED, f"lost the connection to the server: {exc.reason}; {waiting} event(s) kept in the queue"
    if isinstance(exc, MoodleError):
        return Run.FAILED, f"the server refused a request: {exc}"
    full = disk_full_error(exc)
    if full is not None:
        log.error("the database cannot be written: %s", full)
        return Run.FAILED, f"{database_problem(config, full)}; the events not yet confirmed stay queued"
    log.exception("run failed", exc_info=exc)
    return Run.FAILED, f"internal error: {type(exc).__name__}: {exc}"


def reason_of(exc: BaseException, kind: str = "") -> dict:
    """The reason (agent/reasons.py) for what ended a run; on a collection, in the box's words."""
    box = kind == COLLECT
    if isinstance(exc, TokenRejected):
        return reasons.reason("box_token_rejected" if box else "token_rejected")
    if isinstance(exc, Unreachable):
        return reasons.reason("box_down") if box else unreachable_reason(exc)
    if isinstance(exc, MoodleError):
        return reasons.reason("collection_failed" if box else "server_refused")
    if disk_full_error(exc) is not None or isinstance(exc, StorageFull):
        return reasons.reason("disk_full")
    if isinstance(exc, Interrupted):
        return reasons.reason("interrupted")
    return reasons.reason("collection_failed" if box else "internal")


def unreachable_reason(exc: Unreachable) -> dict:
    """Which kind of silence: a captive portal, a busy server (HTTP 5xx, Retry-After), or no answer."""
    if exc.kind in ("captive_portal", "redirect"):
        return reasons.reason("captive_portal")
    if exc.kind == "server":
        if exc.retry_after:
            return reasons.reason("server_retry_after", wait=int(exc.retry_after))
        status = exc.reason.rsplit("HTTP ", 1)[-1] if "HTTP " in exc.reason else "5xx"
        return reasons.reason("server_busy", status=status)
    return reasons.reason("server_unreachable")


@contextmanager
def recorded_run(config: Config, kind: str, trigger: str, counters: Sequence[str], *, force: bool = False,
                 on_started: Callable[[Run], None] | None = None,
                 describe: Callable[[BaseException], tuple[str, str] | None] | None = None) -> Iterator[Record]:
    """Hold the lock and the history row of one run; give it its final status.
    Raises AlreadyRunning or SyncDisabled before anything is recorded. Whatever
    the body raises ends the run with a status and a sentence, never a run
    left "running"; the exception does not propagate. ``kind``: what the run
    does (agent/store/runkinds.py), ``trigger``: who started it. ``describe``: the run's
    own status and sentence for an exception, before the common ones."""
    if not settings.get(config, "sync_enabled"):
        raise SyncDisabled()
    with run_lock(config):
        keep_reserve(config)
        recover_stale_runs()
        with _recorded(config, kind, trigger, counters, force, on_started, describe) as record:
            yield record


@contextmanager
def nested_run(config: Config, kind: str, trigger: str, counters: Sequence[str], *, force: bool = False,
               describe: Callable[[BaseException], tuple[str, str] | None] | None = None) -> Iterator[Record]:
    """A run of its own in the history, inside a run that holds the lock (the
    collection a sync starts with). Like recorded_run, it never raises."""
    with _recorded(config, kind, trigger, counters, force, None, describe) as record:
        yield record


@contextmanager
def _recorded(config: Config, kind: str, trigger: str, counters: Sequence[str], force: bool,
              on_started: Callable[[Run], None] | None,
              describe: Callable[[BaseException], tuple[str, str] | None] | None) -> Iterator[Record]:
    started = time.monotonic()
    row = Run.create(kind=kind, trigger=trigger, force=force, status=Run.RUNNING, started_at=iso(utcnow()),
                         pid=os.getpid(), phase="checking_connection",
                         events_total=count_by_status()[Event.QUEUED])
    record = Record(row=row, counters=counters)
    if on_started:
        on_started(row)
    log.info("%s %s started (trigger %s%s)", RUN_NAMES[kind], row.id, trigger,
             ("" if not force else ", full" if kind == COLLECT else ", forced"))
    try:
        yield record
        row.status = record.status or record.final_status()
    except Exception as exc:
        row.status, sentence = (describe and describe(exc)) or describe_failure(config, exc)
        record.errors.append(sentence)
        record.reasons.append(reason_of(exc, kind))
    row.completed_at = iso(utcnow())
    row.duration_s = round(time.monotonic() - started, 3)
    try:
        record.save(phase="done")
    except pw.OperationalError as exc:
        if disk_full_error(exc) is None or not release_reserve(config):
            raise
        record.save(phase="done")  # in the space the reserve held
    log.info("run %s ended: %s in %.1f s, %d B sent, %d B received",
             row.id, row.status, row.duration_s, row.bytes_sent, row.bytes_received)
