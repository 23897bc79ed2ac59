"""The daily UTC plan: when the next scheduled sync is due, and what to do now.

Pure logic, driven by :meth:`Planner.tick` with the wall clock and the
monotonic clock passed in, so tests run days in milliseconds. The daemon
calls it about once a second and does what it answers: nothing, an
:class:`Attempt` (check the server; sync if it answers) or a :class:`Missed`
(record the one "skipped (offline)" row for the day).

Why not ``schedule``'s ``every().day.at()`` for the daily sync: schedule
1.1 has no time zone argument and reads ``datetime.now()`` (naive local
time) itself, so it can neither take an injected clock nor survive a clock
that jumps a day after boot, nor catch up a slot the box was off for. The
due times are computed here in UTC. The ``schedule`` library keeps the
daemon's recurring local jobs (:class:`Recurring`: the one-second step,
retention every hour, the collection every few minutes), where "every N
seconds" is all that is wanted, timed by the daemon's clock.

Rules:
- one slot a day at ``time_utc``; a random jitter (0..jitter) before it;
- the server is checked first; offline, it is re-checked with backoff
  (1, 2, 4, 8, 15, 15 ... minutes, or longer when the server sent
  Retry-After) until the catch-up window closes, then the day is recorded
  once as skipped;
- started inside a slot's window that was not done (box off at the time):
  caught up once; a slot whose window passed while the agent was not
  running is recorded once, never one row per missed day;
- a changed time, or sync turned back on, applies from now on: a slot before
  the change is not caught up;
- a wall-clock jump (against the monotonic clock) re-plans from the new time;
  a slot this process handled moves with the clock, so a correction by a day
  neither repeats the day's run nor skips the next one;
- a clock before the build date is unknown: nothing is scheduled until it is
  sane.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

import schedule

from ..clock import clock_is_sane

BACKOFF_S = (60, 120, 240, 480, 900)  # then 900 until the window closes
# Wall and monotonic clocks disagreeing by more than this between two ticks is
# a clock step (a time server correcting the clock), not drift or slewing.
JUMP_TOLERANCE_S = 30.0
# A tick can come a little after the due moment; with catch_up_hours = 0 the
# slot still gets its one check if the tick is this late.
GRACE_S = 120.0


@dataclass(frozen=True)
class Clock:
    """Where the time comes from; tests pass their own functions."""

    wall: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    mono: Callable[[], float] = time.monotonic


@dataclass(frozen=True)
class DailyPlan:
    """What the page and the config say now."""

    enabled: bool  # sync on and schedule on
    time_utc: str  # HH:MM
    jitter_s: float = 0.0
    catch_up_s: float = 0.0


@dataclass(frozen=True)
class Attempt:
    """Check the server now and sync if it answers; report back with
    :meth:`Planner.ran` or :meth:`Planner.offline`."""

    slot: datetime


@dataclass(frozen=True)
class Missed:
    """Record one skipped (offline) row for this slot; it counts as handled."""

    slot: datetime
    reason: str


def slot_on_or_before(now: datetime, time_utc: str) -> datetime:
    """The latest daily slot at or before ``now`` (UTC)."""
    hour, minute = (int(p) for p in time_utc.split(":"))
    now = now.astimezone(timezone.utc)
    slot = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return slot if slot <= now else slot - timedelta(days=1)


def backoff_s(failures: int) -> float:
    """Wait after the n-th failed check (1-based)."""
    return float(BACKOFF_S[min(failures, len(BACKOFF_S)) - 1])


@dataclass
class _Target:
    slot: datetime
    due: datetime
    window_end: datetime
    next_check: datetime
    failures: int = 0
    recorded: bool = False  # a skipped row exists for this slot already
    give_up: str | None = None  # set when the window closed while offline


class Planner:
    """The scheduled-sync state of one daemon: the slot it aims at, its checks
    and backoff, and the last slot that needs nothing more (``handled``)."""

    def __init__(self, handled: datetime | None = None, rng: random.Random | None = None,
                 on_handled: Callable[[datetime], None] | None = None):
        # The latest slot that needs nothing more: run, recorded as skipped,
        # or before a change of the plan. Persisted by the caller.
        self.handled = handled
        self._handled_here = False  # stamped with this process's clock
        self.rng = rng or random.Random()
        self.on_handled = on_handled or (lambda slot: None)
        self.target: _Target | None = None
        self._plan: DailyPlan | None = None
        self._last: tuple[datetime, float] | None = None
        self.jumps: list[float] = []  # seconds, for the log and the tests

    # -- the step ------------------------------------------------------------

    def tick(self, now: datetime, mono: float, plan: DailyPlan) -> Attempt | Missed | None:
        self._watch_clock(now, mono)
        if not clock_is_sane(now):
            # Unknown time: no slot can be judged, neither run nor missed.
            self.target, self._plan = None, None
            return None
        previous, self._plan = self._plan, plan
        if not plan.enabled:
            self.target = None
            return None
        if previous is not None and (not previous.enabled or previous.time_utc != plan.time_utc):
            # The plan changed: it applies from now on.
            self.target = None
            self._mark(slot_on_or_before(now, plan.time_utc))
        slot = slot_on_or_before(now, plan.time_utc)
        if self.handled is not None and slot <= self.handled:
            slot += timedelta(days=1)  # today's is done: plan the next one, jitter included
        if self.target is None or self.target.slot != slot:
            self.target = self._new_target(slot, now, plan)
        t = self.target
        if t.give_up is not None:
            return self._missed(t, t.give_up)
        if t.failures == 0 and now > t.window_end + timedelta(seconds=GRACE_S):
            # Never checked: the agent was not running (or the clock was wrong)
            # through the whole window. A fresh box owes nothing for the days
            # before its first start.
            owed = self.handled is not None
            missed = self._missed(t, "the agent was not running, or the clock was wrong, "
                                     f"at {plan.time_utc} UTC and during the catch-up window")
            return missed if owed else None
        if now >= t.next_check:
            return Attempt(slot)
        return None

    # -- what the daemon reports back ----------------------------------------

    def ran(self, slot: datetime) -> None:
        """A scheduled sync ran for this slot."""
        self._mark(slot)
        self.target = None

    def offline(self, slot: datetime, now: datetime, reason: str, retry_after: float | None = None,
                recorded: bool = False) -> None:
        """The check found the server offline. ``recorded``: the run itself
        already wrote a skipped row (the server went away between check and run)."""
        t = self.target
        if t is None or t.slot != slot:
            return
        t.failures += 1
        t.recorded = t.recorded or recorded
        wait = max(backoff_s(t.failures), retry_after or 0.0)
        t.next_check = now + timedelta(seconds=wait)
        if t.next_check > t.window_end:
            t.give_up = f"offline: {reason}"

    # -- internals -----------------------------------------------------------

    def _new_target(self, slot: datetime, now: datetime, plan: DailyPlan) -> _Target:
        due = slot + timedelta(seconds=self.rng.uniform(0, plan.jitter_s))
        window_end = due + timedelta(seconds=plan.catch_up_s)
        if due < now <= window_end:
            # Late: started, or the clock corrected, inside the window. A fleet
            # powered on together still spreads out.
            due = min(now + timedelta(seconds=self.rng.uniform(0, plan.jitter_s)), window_end)
        return _Target(slot=slot, due=due, window_end=window_end, next_check=due)

    def _missed(self, t: _Target, reason: str) -> Missed | None:
        self._mark(t.slot)
        self.target = None
        return None if t.recorded else Missed(t.slot, reason)

    def _mark(self, slot: datetime) -> None:
        if self.handled is None or slot > self.handled:
            self.handled = slot
            self._handled_here = True
            self.on_handled(slot)

    def _watch_clock(self, now: datetime, mono: float) -> None:
        last, self._last = self._last, (now, mono)
        if last is None:
            return
        expected = last[0] + timedelta(seconds=mono - last[1])
        delta = (now - expected).total_seconds()
        if abs(delta) <= JUMP_TOLERANCE_S:
            return
        self.jumps.append(delta)
        self.target = None
        if self._handled_here and self.handled is not None:
            # That slot was judged by the clock before the correction.
            self.handled += timedelta(seconds=delta)
            self.on_handled(self.handled)


class Recurring:
    """The daemon's recurring local jobs, each every N seconds: the one-second
    step, retention every hour, the collection from the box's Moodle every
    few minutes. A ``schedule.Scheduler`` keeps the jobs and runs them; when
    one is due is judged here, by the clock the daemon was given (tests pass
    theirs), in UTC: schedule 1.1 reads naive local time itself, which steps
    back an hour at the end of summer time. A wall-clock step (a time server
    reached at last), seen against the monotonic clock, moves every job by
    the step, so a job keeps its spacing in elapsed time: a clock set back
    a day does not hold the collection back a day, nor set forward run it
    early."""

    def __init__(self, clock: Clock | None = None):
        self.clock = clock or Clock()
        self.scheduler = schedule.Scheduler()
        self._last: tuple[datetime, float] | None = None
        self.jumps: list[float] = []  # seconds, for the tests

    def every(self, seconds: float, work: Callable[[], object], *, at_once: bool = False) -> schedule.Job:
        """Run ``work`` every ``seconds``; the first time now (``at_once``) or after one interval."""
        job = self.scheduler.every(max(1, round(seconds))).seconds.do(work)
        job.next_run = self._now() + (timedelta(0) if at_once else self._interval(job))
        return job

    def run_pending(self) -> None:
        now = self._now()
        self._follow_steps(now)
        for job in sorted(j for j in self.scheduler.jobs if j.next_run is not None and j.next_run <= now):
            job.run()  # the work, then schedule's own bookkeeping (last_run)
            job.next_run = self._now() + self._interval(job)

    def restart(self) -> None:
        """The jobs' work was just done another way: each next run one interval from now."""
        for job in self.scheduler.jobs:
            job.next_run = self._now() + self._interval(job)

    def _now(self) -> datetime:
        return self.clock.wall().astimezone(timezone.utc).replace(tzinfo=None)  # naive, as schedule keeps it

    @staticmethod
    def _interval(job: schedule.Job) -> timedelta:
        return timedelta(seconds=job.interval)

    def _follow_steps(self, now: datetime) -> None:
        mono = self.clock.mono()
        last, self._last = self._last, (now, mono)
        if last is None:
            return
        delta = (now - (last[0] + timedelta(seconds=mono - last[1]))).total_seconds()
        if abs(delta) <= JUMP_TOLERANCE_S:
            return
        self.jumps.append(delta)
        for job in self.scheduler.jobs:
            if job.next_run is not None:
                job.next_run += timedelta(seconds=delta)
