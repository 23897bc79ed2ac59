"""The agent daemon, ``moodle-sync-agent run``: the one process that syncs.

About once a second (:meth:`Daemon.step`) it re-reads the page's settings,
picks up a sync request, or asks the daily plan (agent/service/schedule.py) whether
a scheduled sync is due; with a box's Moodle ([box]), when nothing else is
to be done, it collects from it every collect_minutes. Syncs, and the server checks before them, run in a
worker process (agent/service/worker.py) that a thread here waits for, so a request
is still seen within two seconds, a switch turned off still stops a run while
one goes on, and the daemon itself never loads the HTTP stack: it idles at
its start-up size. E-mail notices go out in a thread of their own and never
hold anything up.

SIGTERM/SIGINT: the worker is told to stop, its current batch ends and the
run is recorded as interrupted; after STOP_GRACE_S the agent kills it and
leaves anyway (the run is then marked interrupted here and the kernel frees
the lock).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from .. import __version__, health
from ..store import handoff, retention, settings
from . import notify
from ..config import Config, parse_time_utc
from ..store.db import SyncRequest, Run, iso, parse_iso
from ..store.schema import close_db
from ..store.history import record_skipped, recover_stale_runs, running_run
from ..store.runkinds import SCHEDULE
from ..logs import configure_logging
from .schedule import Attempt, Clock, DailyPlan, Missed, Planner, Recurring

log = logging.getLogger(__name__)

STEP_S = 1  # settings reload, request pickup, schedule tick
LOOP_SLEEP_S = 0.2
STOP_GRACE_S = 8.0  # systemd's TimeoutStopSec is 20 s; the README promises 10
RETENTION_EVERY_S = 3600


@dataclass
class Offline:
    """A scheduled attempt's online check found no server."""

    reason: str
    retry_after: float | None
    bytes_sent: int = 0  # what the online check cost
    bytes_received: int = 0
    clock_offset_s: float | None = None


@dataclass
class Broken:
    """The worker could not do its job (the database, a bug, no memory for a
    process): nothing is recorded, and the daily plan backs off as if offline."""

    reason: str


@dataclass
class SlotChecks:
    """The online checks of one scheduled slot, for its row if it is skipped."""

    slot: datetime
    bytes_sent: int = 0
    bytes_received: int = 0
    clock_offset_s: float | None = None


@dataclass
class Job:
    """What the worker is doing: one request, one scheduled attempt, or one
    collection from the box's Moodle."""

    request: SyncRequest | None = None
    slot: datetime | None = None
    collection: bool = False
    forced: bool = False
    halted: bool = False
    proc: subprocess.Popen | None = None
    run_id: str | None = None
    outcome: Run | Offline | Broken | None = None
    thread: threading.Thread | None = None

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def join(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    def halt(self) -> None:
        """Ask the worker to end its run after the current batch."""
        self.halted = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)


def worker_command(config: Config, *job: str) -> list[str]:
    # -P: nothing from the working directory on sys.path
    return [sys.executable, "-P", "-m", "agent.service.worker", "--config", str(config.path), *job]


def worker_env() -> dict[str, str]:
    """Where this agent's modules are (a private directory in the package)."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[2])  # the directory that holds agent/ (this is agent/service/)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return env


class Background:
    """Work the daemon hands to a thread of its own (e-mail, retention): never
    two at once, and asked again while it runs, it runs once more after."""

    def __init__(self, name: str, work: Callable[[], object]):
        self.name, self.work = name, work
        self.thread: threading.Thread | None = None
        self.again = False

    def kick(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            self.again = True
            return
        self.thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            self.again = False
            try:
                self.work()
            except Exception:  # a locked or full database must not end the agent
                log.exception("%s failed", self.name)
            if not self.again:
                close_db()  # this thread's connection: the agent runs for months
                return

    def join(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)


class Daemon:
    def __init__(self, config: Config, clock: Clock | None = None, rng=None):
        self.config = config
        self.clock = clock or Clock()
        self.job: Job | None = None
        self.notifier = Background("notify", lambda: notify.send_pending(config))
        self.pruner = Background("retention", lambda: retention.prune(config))
        self.values: dict = {}
        self._plan: DailyPlan | None = None
        self._checks: SlotChecks | None = None
        self._step_error: str | None = None
        self.planner = Planner(parse_iso(settings.get(config, "schedule_last_slot")), rng,
                               on_handled=lambda slot: settings.put(schedule_last_slot=iso(slot)))
        # The collection from the box's Moodle, at once and then every few
        # minutes, by self.clock: tests drive it with theirs.
        self.collection = Recurring(self.clock)
        if config.box is not None:
            self.collection.every(config.box.collect_minutes * 60, self._start_collection, at_once=True)

    # -- the step ------------------------------------------------------------

    def step(self) -> None:
        self.values = settings.preferences(self.config)
        self._collect()
        if self.job is not None:
            self._while_busy(self.job)
            return
        request = handoff.next_request()
        if request is not None and self._served_by_a_run(request):
            return
        if request is not None:
            log.info("%s request %d picked up (trigger %s)", request.kind, request.id, request.trigger)
            handoff.pick(request)
            self._start(Job(request=request, forced=request.force or bool(self.values["force_next"])),
                        "request", str(request.id))
            return
        jumps = len(self.planner.jumps)
        action = self.planner.tick(self.clock.wall(), self.clock.mono(), self.plan())
        if len(self.planner.jumps) > jumps:
            log.warning("the wall clock jumped by %+.0f s: schedule re-planned from %s",
                        self.planner.jumps[-1], iso(self.clock.wall()))
        if isinstance(action, Attempt):
            self._start(Job(slot=action.slot), "scheduled")
            return
        if isinstance(action, Missed):
            checks = self._checks if self._checks is not None and self._checks.slot == action.slot \
                else SlotChecks(action.slot)
            record_skipped(SCHEDULE, action.reason, checks.bytes_sent, checks.bytes_received,
                           checks.clock_offset_s)
            self._checks = None
            self._notify()
        if self.values["sync_enabled"]:
            self.collection.run_pending()  # a collection due waits while sync is off

    def _start_collection(self) -> None:
        self._start(Job(collection=True), "collect")

    def plan(self) -> DailyPlan:
        v, cfg = self.values, self.config.schedule
        try:
            time_utc = parse_time_utc(v["schedule_time_utc"])
            enabled = bool(v["sync_enabled"] and v["schedule_enabled"])
        except ValueError as exc:
            time_utc, enabled = cfg.time_utc, False
            if self._plan is None or self._plan.enabled:
                log.error("schedule_time_utc in the database %s: no scheduled sync", exc)
        plan = DailyPlan(enabled=enabled, time_utc=time_utc, jitter_s=cfg.jitter_minutes * 60,
                    catch_up_s=cfg.catch_up_hours * 3600)
        if plan != self._plan:
            log.info("schedule: %s", f"daily at {plan.time_utc} UTC" if plan.enabled else
                     "off" + ("" if v["sync_enabled"] else " (sync is turned off)"))
        self._plan = plan
        return plan

    def _while_busy(self, job: Job) -> None:
        if not self.values["sync_enabled"] and not job.halted:
            log.info("sync was turned off: stopping the running sync after its current batch")
            job.halt()
        if job.collection:
            return  # a request waits for the collection's end (a sync collects first anyway)
        request = handoff.next_request()
        if request is None or job.run_id is None or (request.force and not job.forced):
            return  # none waiting, or it runs after this one
        if handoff.attach(request, job.run_id):
            log.info("sync request %d served by the running sync %s", request.id, job.run_id)

    def _served_by_a_run(self, request: SyncRequest) -> bool:
        """A run of a command (`sync`, `verify`) holds the lock: attach the
        request to it, or leave it waiting, rather than start a worker that
        would only find the lock taken."""
        run = running_run(syncs_only=True) or running_run()  # a sync's own collection: the sync
        if run is None:
            return False
        if not (request.force and not run.force) and handoff.attach(request, run.id):
            log.info("sync request %d served by the running sync %s", request.id, run.id)
        return True

    # -- the worker ------------------------------------------------------------

    def _start(self, job: Job, *command: str) -> None:
        def work() -> None:
            try:
                job.outcome = self._run_worker(job, command)
            except Exception as exc:  # the database, no memory for a process: the plan backs off
                log.exception("sync worker failed")
                job.outcome = Broken(f"internal error: {type(exc).__name__}: {exc}")
            finally:
                close_db()  # this thread's connection: the agent runs for months

        job.thread = threading.Thread(target=work, name="sync", daemon=True)
        self.job = job
        job.thread.start()

    def _run_worker(self, job: Job, command: tuple[str, ...]) -> Run | Offline | Broken | None:
        """Run the worker process to its end; its last line of JSON is the outcome."""
        proc = subprocess.Popen(worker_command(self.config, *command), env=worker_env(), cwd="/",
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        job.proc = proc
        if job.halted:  # halted while it was starting
            proc.send_signal(signal.SIGTERM)
        last: dict = {}
        assert proc.stdout is not None  # stdout=PIPE
        for line in proc.stdout:
            try:
                last = json.loads(line)
            except ValueError:
                continue
            if "run" in last:
                job.run_id = last["run"]
        code = proc.wait()
        if "offline" in last:
            return Offline(last["offline"], last["retry_after"], last["bytes_sent"], last["bytes_received"],
                           last["clock_offset_s"])
        if not last.get("done") or "error" in last:
            return Broken(last.get("error") or f"internal error: the worker process ended with status {code}")
        return Run.get_or_none(Run.id == job.run_id) if job.run_id else None

    def _collect(self) -> None:
        """Take the outcome of a finished worker back to the main thread."""
        job = self.job
        if job is None or job.alive():
            return
        self.job = None
        out = job.outcome
        if job.slot is not None:
            now = self.clock.wall()
            if isinstance(out, Offline):
                self._count_check(job.slot, out)
                self.planner.offline(job.slot, now, out.reason, out.retry_after)
                self._log_offline(out.reason, out.retry_after)
            elif isinstance(out, Broken):
                self.planner.offline(job.slot, now, out.reason, None)
                self._log_offline(out.reason, None)
            elif isinstance(out, Run) and out.status == Run.SKIPPED_OFFLINE:
                self.planner.offline(job.slot, now, "; ".join(out.errors or []), recorded=True)
            elif isinstance(out, Run) and out.status == Run.INTERRUPTED:
                pass  # the agent is stopping or sync was turned off: not done for the day
            elif out is not None:
                self.planner.ran(job.slot)
                self._checks = None
        if job.collection:
            return  # no notice for a collection
        if isinstance(out, Run) and out.collected is not None:
            self.collection.restart()  # the sync collected in full just now
        if job.run_id is not None:
            self._notify()

    def _count_check(self, slot: datetime, out: Offline) -> None:
        if self._checks is None or self._checks.slot != slot:
            self._checks = SlotChecks(slot)
        self._checks.bytes_sent += out.bytes_sent
        self._checks.bytes_received += out.bytes_received
        if out.clock_offset_s is not None:
            self._checks.clock_offset_s = out.clock_offset_s

    def _log_offline(self, reason: str, retry_after: float | None) -> None:
        target = self.planner.target
        if target is None or target.give_up:
            log.info("scheduled sync not started (%s); the catch-up window is over", reason)
        else:
            log.info("scheduled sync not started (%s)%s; next check at %s, window ends %s", reason,
                     f", server asked to retry after {retry_after:.0f} s" if retry_after else "",
                     iso(target.next_check), iso(target.window_end))

    # -- background work ------------------------------------------------------

    def _notify(self) -> None:
        self.notifier.kick()

    def _prune(self) -> None:
        self.pruner.kick()

    # -- running and stopping ---------------------------------------------------

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait for the worker and the notifier, then collect (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        if self.job is not None:
            self.job.join(timeout)
        self._collect()
        self.notifier.join(max(0.0, deadline - time.monotonic()))

    def safe_step(self) -> None:
        try:
            self.step()
            self._step_error = None
        except Exception as exc:  # a locked or full database: log, try again next second
            if repr(exc) != self._step_error:  # once, not every second
                log.exception("agent step failed")
            self._step_error = repr(exc)

    def run_forever(self) -> int:
        signalled: list[int] = []

        def on_signal(signum, _frame):
            # Only a flag: an Event's lock could be held by the interrupted code.
            signalled.append(signum)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        health.register_agent()
        log.info("agent %s started: box %s, database %s, server %s%s", __version__, self.config.agent.box_name,
                 self.config.agent.database, self.config.moodle.url,
                 "" if self.config.box is None else
                 f", collecting from {self.config.box.url} every {self.config.box.collect_minutes:g} min")
        jobs = Recurring(self.clock)
        jobs.every(STEP_S, self.safe_step)
        jobs.every(RETENTION_EVERY_S, self._prune)
        self.safe_step()
        self._prune()  # a box switched off every night would otherwise never reach the hour
        while not signalled:
            jobs.run_pending()
            time.sleep(LOOP_SLEEP_S)
        log.info("signal %s: stopping", signal.Signals(signalled[0]).name)
        self.shutdown()
        return 0

    def shutdown(self, grace_s: float = STOP_GRACE_S) -> None:
        deadline = time.monotonic() + grace_s
        job = self.job
        if job is not None:
            job.halt()
            job.join(grace_s)
            if job.alive():
                log.warning("the sync did not stop within %.0f s: leaving it cut off", grace_s)
                if job.proc is not None:
                    job.proc.kill()
                job.join(2.0)
                if job.run_id:
                    recover_stale_runs(job.run_id)
            else:
                self._collect()
        self.notifier.join(max(0.0, deadline - time.monotonic()))
        self.pruner.join(max(0.0, deadline - time.monotonic()))
        log.info("agent stopped")


def run_daemon(config: Config) -> int:
    configure_logging(config)
    return Daemon(config).run_forever()
