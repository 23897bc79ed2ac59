"""The daily plan, driven by an injected clock: days pass in milliseconds."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from agent.service.schedule import BACKOFF_S, Attempt, Clock, DailyPlan, Missed, Planner, Recurring, slot_on_or_before

pytestmark = pytest.mark.pure  # no simulator, no database: pytest -m pure

D = datetime(2026, 12, 1, tzinfo=timezone.utc)  # after agent.BUILD_DATE
HOUR = 3600


def at(day: int, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    return D + timedelta(days=day, hours=hh, minutes=mm, seconds=ss)


class Box:
    """A planner with a fake clock, a server that is up or down, and a log of
    what happened. Ticks every ``step`` seconds like the daemon's loop."""

    def __init__(self, start: datetime, time_utc: str = "02:00", jitter_min: float = 0, catch_up_h: float = 6,
                 handled: datetime | None = None, seed: int = 1, step: float = 10):
        self.wall, self.mono, self.step = start, 5000.0, step
        self.plan = DailyPlan(True, time_utc, jitter_min * 60, catch_up_h * HOUR)
        self.planner = Planner(handled, random.Random(seed))
        self.online = lambda now: True
        self.retry_after = lambda now: None
        self.checks: list[datetime] = []
        self.runs: list[datetime] = []
        self.missed: list[tuple[datetime, datetime]] = []

    def tick(self) -> None:
        action = self.planner.tick(self.wall, self.mono, self.plan)
        if isinstance(action, Attempt):
            self.checks.append(self.wall)
            if self.online(self.wall):
                self.runs.append(self.wall)
                self.planner.ran(action.slot)
            else:
                self.planner.offline(action.slot, self.wall, "connection refused", self.retry_after(self.wall))
        elif isinstance(action, Missed):
            self.missed.append((action.slot, self.wall))

    def until(self, when: datetime) -> None:
        while self.wall < when:
            self.tick()
            self.wall += timedelta(seconds=self.step)
            self.mono += self.step

    def jump(self, seconds: float) -> None:
        """The wall clock is stepped (a time server); the monotonic one is not."""
        self.wall += timedelta(seconds=seconds)


def test_fires_daily_at_the_set_utc_time_once():
    box = Box(at(0, 0), jitter_min=0)
    box.until(at(3, 0))
    assert box.runs == [at(0, 2), at(1, 2), at(2, 2)]
    assert box.checks == box.runs and box.missed == []


def test_changed_time_applies_from_now_and_switch_off_stops():
    box = Box(at(0, 9))
    box.until(at(0, 10))
    box.plan = DailyPlan(True, "10:05", 0, 6 * HOUR)  # later today: runs today
    box.until(at(0, 12))
    assert box.runs == [at(0, 10, 5)]
    box.plan = DailyPlan(True, "11:00", 0, 6 * HOUR)  # earlier than now: not caught up, tomorrow
    box.until(at(1, 10, 30))
    assert box.runs == [at(0, 10, 5)]
    box.until(at(1, 12))
    assert box.runs == [at(0, 10, 5), at(1, 11)]
    box.plan = DailyPlan(False, "11:00", 0, 6 * HOUR)
    box.until(at(3, 12))
    assert len(box.runs) == 2 and box.missed == []
    box.plan = DailyPlan(True, "11:00", 0, 6 * HOUR)  # on again at 12:00: the 11:00 slot was before it
    box.until(at(4, 12))
    assert box.runs[2:] == [at(4, 11)]


def test_offline_at_the_time_then_back_inside_the_window_runs_once_at_the_next_check():
    box = Box(at(0, 1), step=1)
    box.online = lambda now: now >= at(0, 2, 20)
    box.until(at(1, 1))
    # checks at +0, then 1, 2, 4, 8 and 15 minutes later (the backoff)
    assert box.checks == [at(0, 2), at(0, 2, 1), at(0, 2, 3), at(0, 2, 7), at(0, 2, 15), at(0, 2, 30)]
    assert box.runs == [at(0, 2, 30)] and box.missed == []
    assert [b // 60 for b in BACKOFF_S] == [1, 2, 4, 8, 15]


def test_offline_through_the_window_one_skipped_and_no_run_then_next_day_normal():
    box = Box(at(0, 1))
    box.online = lambda now: now >= at(0, 9)
    box.until(at(1, 3))
    assert box.runs == [at(1, 2)]
    assert [slot for slot, _ in box.missed] == [at(0, 2)]
    assert at(0, 8) <= box.missed[0][1] <= at(0, 8, 15)  # recorded when the window closed
    day0 = [c for c in box.checks if c < at(1, 0)]
    gaps = {b - a for a, b in zip(day0[5:], day0[6:])}
    assert day0[:6] == [at(0, 2), at(0, 2, 1), at(0, 2, 3), at(0, 2, 7), at(0, 2, 15), at(0, 2, 30)]
    assert gaps == {timedelta(minutes=15)} and day0[-1] <= at(0, 8)  # 28 checks, one skipped record


def test_catch_up_zero_means_only_at_the_exact_time():
    box = Box(at(0, 1), catch_up_h=0, step=1)
    box.online = lambda now: now >= at(0, 2, 0, 30)
    box.until(at(1, 1))
    assert box.checks == [at(0, 2)] and box.runs == []
    assert [slot for slot, _ in box.missed] == [at(0, 2)]


def test_powered_off_across_the_time_caught_up_once_at_start():
    box = Box(at(1, 4), handled=at(0, 2))  # last ran yesterday; starts two hours late
    box.until(at(2, 0))
    assert box.runs == [at(1, 4)] and box.missed == []


def test_powered_off_past_the_window_one_skipped_row_for_many_days():
    box = Box(at(5, 10), handled=at(0, 2))  # off for five days
    box.until(at(6, 3))
    assert [slot for slot, _ in box.missed] == [at(5, 2)]
    assert box.runs == [at(6, 2)]


def test_fresh_box_owes_nothing_before_its_first_start():
    box = Box(at(0, 10))
    box.until(at(1, 0))
    assert box.missed == [] and box.runs == []
    box = Box(at(0, 3))  # inside the window of its first day: one sync
    box.until(at(1, 0))
    assert box.runs == [at(0, 3)]


@hsettings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), jitter=st.floats(0, 720), hh=st.integers(0, 23), mm=st.integers(0, 59))
def test_jitter_stays_within_its_bound(seed, jitter, hh, mm):
    plan = DailyPlan(True, f"{hh:02d}:{mm:02d}", jitter * 60, 6 * HOUR)
    now = at(0, 0) - timedelta(seconds=1)
    planner = Planner(handled=slot_on_or_before(now, plan.time_utc), rng=random.Random(seed))
    assert planner.tick(now, 0.0, plan) is None
    slot = planner.target.slot
    assert slot == slot_on_or_before(now, plan.time_utc) + timedelta(days=1)
    assert slot <= planner.target.next_check <= slot + timedelta(minutes=jitter)


def test_jitter_spreads_a_fleet():
    dues = []
    for seed in range(200):
        box = Box(at(0, 1), jitter_min=10, seed=seed, step=5)
        box.until(at(0, 2, 11))
        [run] = box.runs
        assert at(0, 2) <= run <= at(0, 2, 10, 5)
        dues.append(run)
    assert len(set(dues)) > 50  # not all in the same second
    # started late inside the window (powered on together): still spread
    late = set()
    for seed in range(50):
        box = Box(at(1, 8), jitter_min=10, seed=seed, handled=at(0, 2), step=5)
        box.until(at(1, 8, 11))
        [run] = box.runs
        assert at(1, 8) <= run <= at(1, 8, 10, 5)
        late.add(run)
    assert len(late) > 10


def test_retry_after_pushes_the_next_check_back():
    box = Box(at(0, 1), step=1)
    box.online = lambda now: now >= at(0, 2, 1)
    box.retry_after = lambda now: 1800.0  # 503 with Retry-After: 1800
    box.until(at(0, 2, 29, 59))
    assert box.checks == [at(0, 2)]  # not at +1 min
    box.until(at(0, 4))
    assert box.checks == [at(0, 2), at(0, 2, 30)] and box.runs == [at(0, 2, 30)]


def test_retry_after_beyond_the_window_records_the_day_once():
    box = Box(at(0, 1))
    box.online = lambda now: False
    box.retry_after = lambda now: 12 * HOUR
    box.until(at(0, 12))
    assert box.checks == [at(0, 2)] and [s for s, _ in box.missed] == [at(0, 2)]


def test_clock_corrected_forward_one_day_after_the_run_no_burst():
    box = Box(at(0, 1))
    box.until(at(0, 5))
    assert box.runs == [at(0, 2)]
    box.jump(24 * HOUR)  # that run was really on day 1
    box.until(at(2, 5))
    assert box.runs == [at(0, 2), at(2, 2)] and box.missed == []
    assert box.planner.jumps == [24 * HOUR]


def test_clock_corrected_back_one_day_after_the_run_neither_repeats_nor_skips():
    box = Box(at(1, 1))
    box.until(at(1, 3))
    assert box.runs == [at(1, 2)]
    box.jump(-24 * HOUR)  # the run was really on day 0, at 02:00
    box.until(at(1, 3))  # day 0 again: already done
    assert box.runs == [at(1, 2), at(1, 2)]  # (the same timestamp: day 1 comes again, once)
    assert box.runs.count(at(1, 2)) == 2 and box.missed == []
    box.until(at(2, 3))
    assert len(box.runs) == 3


def test_clock_corrected_forward_across_slots_at_most_one_catch_up():
    box = Box(at(0, 1))  # the clock says day 0, 01:00; it is really day 3, 04:00
    box.until(at(0, 1, 30))
    box.jump(3 * 24 * HOUR + 3 * HOUR)
    box.until(at(4, 3))
    assert box.runs == [at(3, 4, 30), at(4, 2)]  # one catch-up inside the window, then daily


def test_clock_before_build_date_blocks_until_sane():
    box = Box(datetime(1970, 1, 1, 1, tzinfo=timezone.utc), handled=at(0, 2))
    box.until(datetime(1970, 1, 3, tzinfo=timezone.utc))
    assert box.checks == [] and box.missed == []
    box.jump((at(1, 3) - box.wall).total_seconds())  # the time server answers: day 1, 03:00
    box.until(at(2, 0))
    assert box.runs == [at(1, 3)] and box.missed == []


def test_slot_on_or_before():
    assert slot_on_or_before(at(0, 2), "02:00") == at(0, 2)
    assert slot_on_or_before(at(0, 1, 59, 59), "02:00") == at(-1, 2)
    assert slot_on_or_before(at(0, 23, 59), "00:00") == at(0, 0)


# -- the recurring jobs (the schedule package, timed by the given clock) ------

class Ticking:
    """A daemon loop over Recurring with a fake clock, one tick a second."""

    def __init__(self, start: datetime = D):
        self.wall, self.mono = start, 1000.0
        self.recurring = Recurring(Clock(wall=lambda: self.wall, mono=lambda: self.mono))
        self.ran: list[tuple[str, float]] = []  # (job, monotonic time)

    def job(self, name: str, every_s: float, at_once: bool = False) -> None:
        self.recurring.every(every_s, lambda: self.ran.append((name, self.mono)), at_once=at_once)

    def run(self, seconds: int) -> None:
        for _ in range(seconds):
            self.recurring.run_pending()
            self.wall += timedelta(seconds=1)
            self.mono += 1

    def times(self, name: str) -> list[float]:
        return [t - 1000.0 for n, t in self.ran if n == name]


def test_recurring_jobs_run_every_n_seconds_of_the_given_clock():
    box = Ticking()
    box.job("collect", 900, at_once=True)
    box.job("prune", 3600)
    box.run(2 * HOUR + 1)
    assert box.times("collect") == [0, 900, 1800, 2700, 3600, 4500, 5400, 6300, 7200]
    assert box.times("prune") == [3600, 7200]


def test_a_wall_clock_set_back_a_day_does_not_hold_a_job_back():
    box = Ticking()
    box.job("collect", 900, at_once=True)
    box.run(100)
    box.wall -= timedelta(days=1)  # a time server corrects a clock a day ahead
    box.run(1000)
    assert box.times("collect") == [0, 900]  # by elapsed time, as before the step
    assert box.recurring.jumps == [-86400.0]


def test_a_wall_clock_set_forward_neither_runs_a_job_early_nor_twice():
    box = Ticking()
    box.job("collect", 900, at_once=True)
    box.run(100)
    box.wall += timedelta(days=3)  # a box that booted with its last shutdown's time
    box.run(1000)
    assert box.times("collect") == [0, 900]


def test_restart_starts_the_interval_again():
    box = Ticking()
    box.job("collect", 900, at_once=True)
    box.run(600)
    box.recurring.restart()  # a sync just collected in full
    box.run(1600)
    assert box.times("collect") == [0, 1500]


def test_recurring_times_in_utc_whatever_the_wall_clocks_zone():
    east = timezone(timedelta(hours=2))
    box = Ticking(D.astimezone(east))
    box.job("step", 1, at_once=True)
    box.run(5)
    [job] = box.recurring.scheduler.jobs
    assert job.next_run == datetime(2026, 12, 1, 0, 0, 5)  # naive UTC, as schedule keeps its times
