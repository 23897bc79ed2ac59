"""The agent daemon, ``moodle-sync-agent run``: the one process that syncs.

About once a second (:meth:`Daemon.step`) it re-reads the page's settings,
picks up a sync request, or asks the daily plan (agent/schedule.py) whether
a scheduled sync is due. Syncs, and the server checks before them, run in a
worker process (agent/worker.py) that a thread here waits for, so a request
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
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import schedule as pacing

from . import __version__, handoff, health, notify, settings
from .cli import EXIT_ERRORS, report_run
from .config import Config, parse_time_utc
from .db import SyncRequest, SyncRun, close_db, iso, parse_iso
from .schedule import Attempt, Clock, Missed, Plan, Planner
from .sync import SyncDisabled, is_running, record_skipped, recover_stale_runs, running_run

log = logging.getLogger(__name__)

STEP_S = 1  # settings reload, request pickup, schedule tick
LOOP_SLEEP_S = 0.2
STOP_GRACE_S = 8.0  # systemd's TimeoutStopSec is 20 s; the brief promises 10
PICKUP_TIMEOUT_S = 10.0


@dataclass
class Offline:
    reason: str
    retry_after: float | None
    bytes_sent: int = 0  # what the online check cost
    bytes_received: int = 0
    clock_offset_s: float | None = None


@dataclass
class SlotChecks:
    """The online checks of one scheduled slot, for its row if it is skipped."""

    slot: datetime
    bytes_sent: int = 0
    bytes_received: int = 0
    clock_offset_s: float | None = None


@dataclass
class Job:
    """What the worker is doing: one request, or one scheduled attempt."""

    request: SyncRequest | None = None
    slot: datetime | None = None
    forced: bool = False
    halted: bool = False
    proc: subprocess.Popen | None = None
    run_id: str | None = None
    outcome: SyncRun | Offline | None = None
    thread: threading.Thread | None = None

    def halt(self) -> None:
        """Ask the worker to end its run after the current batch."""
        self.halted = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)


def worker_command(config: Config, *job: str) -> list[str]:
    # -P: nothing from the working directory on sys.path
    return [sys.executable, "-P", "-m", "agent.worker", "--config", str(config.path), *job]


def worker_env() -> dict[str, str]:
    """Where this agent's modules are (a private directory in the package)."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return env


class Daemon:
    def __init__(self, config: Config, clock: Clock | None = None, rng=None):
        self.config = config
        self.clock = clock or Clock()
        self.job: Job | None = None
        self.notifier: threading.Thread | None = None
        self._notify_again = False
        self.values: dict = {}
        self._plan: Plan | None = None
        self._checks: SlotChecks | None = None
        self._step_error: str | None = None
        self.planner = Planner(parse_iso(settings.get(config, "schedule_last_slot")), rng,
                               on_handled=lambda slot: settings.put(schedule_last_slot=iso(slot)))

    # -- the step ------------------------------------------------------------

    def step(self) -> None:
        self.values = settings.preferences(self.config)
        self._collect()
        if self.job is not None:
            self._while_busy()
            return
        request = handoff.next_request()
        if request is not None and self._served_by_a_run(request):
            return
        if request is not None:
            log.info("sync request %d picked up (trigger %s)", request.id, request.trigger)
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
        elif isinstance(action, Missed):
            checks = self._checks if self._checks is not None and self._checks.slot == action.slot \
                else SlotChecks(action.slot)
            record_skipped("schedule", action.reason, checks.bytes_sent, checks.bytes_received,
                           checks.clock_offset_s)
            self._checks = None
            self._notify()

    def plan(self) -> Plan:
        v, cfg = self.values, self.config.schedule
        try:
            time_utc = parse_time_utc(v["schedule_time_utc"])
            enabled = bool(v["sync_enabled"] and v["schedule_enabled"])
        except ValueError as exc:
            time_utc, enabled = cfg.time_utc, False
            if self._plan is None or self._plan.enabled:
                log.error("schedule_time_utc in the database %s: no scheduled sync", exc)
        plan = Plan(enabled=enabled, time_utc=time_utc, jitter_s=cfg.jitter_minutes * 60,
                    catch_up_s=cfg.catch_up_hours * 3600)
        if plan != self._plan:
            log.info("schedule: %s", f"daily at {plan.time_utc} UTC" if plan.enabled else
                     "off" + ("" if v["sync_enabled"] else " (sync is turned off)"))
        self._plan = plan
        return plan

    def _while_busy(self) -> None:
        job = self.job
        if not self.values["sync_enabled"] and not job.halted:
            log.info("sync was turned off: stopping the running sync after its current batch")
            job.halt()
        request = handoff.next_request()
        if request is None or job.run_id is None or (request.force and not job.forced):
            return  # none waiting, or it runs after this one
        if handoff.attach(request, job.run_id):
            log.info("sync request %d served by the running sync %s", request.id, job.run_id)

    def _served_by_a_run(self, request: SyncRequest) -> bool:
        """A run of a command (`sync`, `verify`) holds the lock: attach the
        request to it, or leave it waiting, rather than start a worker that
        would only find the lock taken."""
        run = running_run()
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
                job.outcome = Offline(f"internal error: {type(exc).__name__}: {exc}", None)
            finally:
                close_db()  # this thread's connection: the agent runs for months

        job.thread = threading.Thread(target=work, name="sync", daemon=True)
        self.job = job
        job.thread.start()

    def _run_worker(self, job: Job, command: tuple[str, ...]) -> SyncRun | Offline | None:
        """Run the worker process to its end; its last line of JSON is the outcome."""
        proc = subprocess.Popen(worker_command(self.config, *command), env=worker_env(), cwd="/",
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        job.proc = proc
        if job.halted:  # halted while it was starting
            proc.send_signal(signal.SIGTERM)
        last: dict = {}
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
            return Offline(last.get("error") or f"internal error: the worker process ended with status {code}", None)
        return SyncRun.get_or_none(SyncRun.id == job.run_id) if job.run_id else None

    def _collect(self) -> None:
        """Take the outcome of a finished worker back to the main thread."""
        job = self.job
        if job is None or job.thread.is_alive():
            return
        self.job = None
        out = job.outcome
        if job.slot is not None:
            now = self.clock.wall()
            if isinstance(out, Offline):
                self._count_check(job.slot, out)
                self.planner.offline(job.slot, now, out.reason, out.retry_after)
                self._log_offline(out)
            elif isinstance(out, SyncRun) and out.status == SyncRun.SKIPPED_OFFLINE:
                self.planner.offline(job.slot, now, "; ".join(out.errors or []), recorded=True)
            elif isinstance(out, SyncRun) and out.status == SyncRun.INTERRUPTED:
                pass  # the agent is stopping or sync was turned off: not done for the day
            elif out is not None:
                self.planner.ran(job.slot)
                self._checks = None
        if job.run_id is not None:
            self._notify()

    def _count_check(self, slot: datetime, out: Offline) -> None:
        if self._checks is None or self._checks.slot != slot:
            self._checks = SlotChecks(slot)
        self._checks.bytes_sent += out.bytes_sent
        self._checks.bytes_received += out.bytes_received
        if out.clock_offset_s is not None:
            self._checks.clock_offset_s = out.clock_offset_s

    def _log_offline(self, out: Offline) -> None:
        target = self.planner.target
        if target is None or target.give_up:
            log.info("scheduled sync not started (%s); the catch-up window is over", out.reason)
        else:
            log.info("scheduled sync not started (%s)%s; next check at %s, window ends %s", out.reason,
                     f", server asked to retry after {out.retry_after:.0f} s" if out.retry_after else "",
                     iso(target.next_check), iso(target.window_end))

    # -- e-mail ---------------------------------------------------------------

    def _notify(self) -> None:
        if self.notifier is not None and self.notifier.is_alive():
            self._notify_again = True
            return
        self.notifier = threading.Thread(target=self._send_notices, name="notify", daemon=True)
        self.notifier.start()

    def _send_notices(self) -> None:
        while True:
            self._notify_again = False
            try:
                notify.send_pending(self.config)
            except Exception:  # a database error here must not end the agent
                log.exception("e-mail notices failed")
            if not self._notify_again:
                close_db()
                return

    # -- running and stopping ---------------------------------------------------

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait for the worker and the notifier, then collect (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        if self.job is not None:
            self.job.thread.join(timeout)
        self._collect()
        if self.notifier is not None:
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
        log.info("agent %s started: box %s, database %s, server %s", __version__, self.config.agent.box_name,
                 self.config.agent.database, self.config.moodle.url)
        pace = pacing.Scheduler()
        pace.every(STEP_S).seconds.do(self.safe_step)
        self.safe_step()
        while not signalled:
            pace.run_pending()
            idle = pace.idle_seconds
            if idle is None or idle > STEP_S:
                # The library times its jobs by the wall clock: after a step back
                # it would wait that long. Start it again from the new time.
                pace.clear()
                pace.every(STEP_S).seconds.do(self.safe_step)
            time.sleep(LOOP_SLEEP_S)
        log.info("signal %s: stopping", signal.Signals(signalled[0]).name)
        self.shutdown()
        return 0

    def shutdown(self, grace_s: float = STOP_GRACE_S) -> None:
        deadline = time.monotonic() + grace_s
        job = self.job
        if job is not None:
            job.halt()
            job.thread.join(grace_s)
            if job.thread.is_alive():
                log.warning("the sync did not stop within %.0f s: leaving it cut off", grace_s)
                if job.proc is not None:
                    job.proc.kill()
                job.thread.join(2.0)
                if job.run_id:
                    recover_stale_runs(job.run_id)
            else:
                self._collect()
        if self.notifier is not None:
            self.notifier.join(max(0.0, deadline - time.monotonic()))
        log.info("agent stopped")


# -- logging -------------------------------------------------------------------

PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class LineFormatter(logging.Formatter):
    """One line per record (journald shows a traceback's lines as separate
    entries otherwise), with systemd's <priority> prefix when stderr is the
    journal, and every secret of the config masked."""

    def __init__(self, secrets: list[str], journal: bool):
        super().__init__("%(name)s: %(message)s" if journal else "%(levelname)s %(name)s: %(message)s")
        self.secrets = [s for s in secrets if s]
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self.secrets:
            text = text.replace(secret, "[hidden]")
        text = text.replace("\r", "").replace("\n", " | ")
        return f"<{PRIORITY.get(record.levelno, 6)}>{text}" if self.journal else text


def stderr_is_journal() -> bool:
    """systemd sets JOURNAL_STREAM to the device:inode of the journal stream."""
    try:
        device, inode = (int(x) for x in os.environ.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == (device, inode)


def configure_logging(config: Config) -> None:
    formatter = LineFormatter([config.moodle.token, config.smtp.password, config.web.api_key],
                              stderr_is_journal())
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for handler in root.handlers:
        handler.setFormatter(formatter)


def run_daemon(config: Config) -> int:
    configure_logging(config)
    return Daemon(config).run_forever()


# -- sync --via-agent ------------------------------------------------------------

def request_sync_via_agent(config: Config, force: bool = False, as_json: bool = False, *,
                           pickup_timeout_s: float = PICKUP_TIMEOUT_S, poll_s: float = 0.1) -> int:
    """Queue a request for the agent, wait for its run to end, print it like
    ``sync`` does and return the same exit status."""
    if not settings.get(config, "sync_enabled"):
        print(SyncDisabled(), file=sys.stderr)
        return EXIT_ERRORS
    request_id = handoff.request_sync(config, trigger="cli", force=force).id
    deadline = time.monotonic() + pickup_timeout_s
    while True:
        request = SyncRequest.get_by_id(request_id)
        if request.sync_id:
            break
        if request.picked_at and not settings.get(config, "sync_enabled"):
            print(SyncDisabled(), file=sys.stderr)
            return EXIT_ERRORS
        if time.monotonic() > deadline:
            print(f"moodle-sync-agent: no agent picked up the request within {pickup_timeout_s:g} s: "
                  "is `moodle-sync-agent run` running (systemctl status moodle-sync-agent)? "
                  "The request stays queued until it starts.", file=sys.stderr)
            return EXIT_ERRORS
        time.sleep(poll_s)
    while True:
        row = SyncRun.get_by_id(request.sync_id)
        if row.status != SyncRun.RUNNING:
            break
        if not is_running(config):
            row = SyncRun.get_by_id(request.sync_id)  # it may have ended just now
            if row.status == SyncRun.RUNNING:
                print(f"moodle-sync-agent: the agent stopped during sync {row.id}", file=sys.stderr)
                return EXIT_ERRORS
            break
        time.sleep(poll_s)
    return report_run(row, as_json)
