"""The agent daemon against the Moodle simulator on loopback, with SQLite on
disk. Scheduled days run on an injected clock; requests, SIGTERM and
``sync --via-agent`` use the real ``moodle-sync-agent run`` in a subprocess."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent.store import handoff, history, settings
from agent.config import load_config
from agent.cli import request_sync_via_agent
from agent.service.daemon import Daemon
from agent.logs import LineFormatter
from agent.store.db import Event, SyncRequest, Run, parse_iso
from agent.store.schema import close_db, open_db
from agent.store.queue import enqueue, validate_events
from agent.sync import run_sync
from tests.helpers import TOKEN, Box, FakeClock, MoodleReader, drive

D = datetime(2026, 12, 1, tzinfo=timezone.utc)  # after agent.BUILD_DATE
C1 = 2


def at(day: int, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    return D + timedelta(days=day, hours=hh, minutes=mm, seconds=ss)


@pytest.fixture
def box(tmp_path, simulator):
    return Box(tmp_path, simulator.url, token=TOKEN, batch_size=5, timeout=5,
               extra="[schedule]\ntime_utc = 02:00\njitter_minutes = 0\ncatch_up_hours = 6\n")


@pytest.fixture
def config(box):
    cfg = load_config(box.config)
    open_db(cfg.agent.database)
    yield cfg
    close_db()


def new_daemon(config, start: datetime) -> tuple[Daemon, FakeClock]:
    fake = FakeClock(start)
    return Daemon(config, fake.clock, rng=random.Random(7)), fake


def runs(trigger: str = "schedule") -> list[Run]:
    return list(Run.select().where(Run.trigger == trigger).order_by(Run.started_at))


def statuses(trigger: str = "schedule") -> list[str]:
    return [r.status for r in runs(trigger)]


# -- the daily schedule --------------------------------------------------------

def test_daily_run_at_the_set_utc_time_once_and_settings_followed_within_a_step(config):
    daemon, fake = new_daemon(config, at(0, 1, 50))
    drive(daemon, fake, at(0, 1, 59, 50), step_s=10)
    assert runs() == []
    drive(daemon, fake, at(0, 3), step_s=10)
    assert statuses() == ["completed"]
    drive(daemon, fake, at(1, 1))  # the rest of the day: nothing more
    assert len(runs()) == 1

    settings.put(schedule_time_utc="01:30")  # the page changes the time
    fake.advance(1)
    daemon.step()  # the next step (one second later) follows it
    assert daemon.planner.target.slot == at(1, 1, 30)
    drive(daemon, fake, at(1, 3))
    assert len(runs()) == 2  # at 01:30, not at 02:00 as well

    settings.put(sync_enabled=False)  # the page turns sync off
    fake.advance(1)
    daemon.step()
    assert daemon.planner.target is None
    drive(daemon, fake, at(3, 3), step_s=120)
    assert len(runs()) == 2
    settings.put(sync_enabled=True)
    drive(daemon, fake, at(4, 3), step_s=120)
    assert len(runs()) == 3
    settings.put(schedule_enabled=False)
    drive(daemon, fake, at(5, 3), step_s=120)
    assert len(runs()) == 3


def test_offline_at_the_time_then_back_inside_the_window_one_run(config, simulator):
    simulator.faults.set(captive_portal=True)  # 200 with HTML: not online
    daemon, fake = new_daemon(config, at(0, 1, 59))
    drive(daemon, fake, at(0, 2, 10), step_s=10)
    assert runs() == []  # no run and no history row per check
    assert simulator.stats.snapshot()["faults_fired"]["captive_portal"] == 4  # 02:00, :01, :03, :07
    simulator.faults.set(captive_portal=False)
    drive(daemon, fake, at(0, 9), step_s=10)
    assert statuses() == ["completed"]
    assert parse_iso(settings.get(config, "schedule_last_slot")) == at(0, 2)


def test_offline_through_the_window_one_skipped_row_and_no_run(config, simulator):
    simulator.faults.set(captive_portal=True)
    daemon, fake = new_daemon(config, at(0, 1, 59))
    drive(daemon, fake, at(0, 9))
    [row] = runs()
    assert row.status == "skipped_offline"
    assert "captive portal" in row.errors[0] and row.bytes_sent > 0 and row.clock_offset_s is not None
    assert simulator.stats.snapshot()["faults_fired"]["captive_portal"] == 28
    simulator.faults.set(captive_portal=False)
    drive(daemon, fake, at(1, 3))
    assert statuses() == ["skipped_offline", "completed"]


def test_powered_off_across_the_time_caught_up_once_at_start(config):
    daemon, fake = new_daemon(config, at(0, 1, 59))
    drive(daemon, fake, at(0, 2, 30))
    assert len(runs()) == 1
    # the box is off from 02:30 to 04:00 the next day; a new agent starts
    daemon, fake = new_daemon(config, at(1, 4))
    drive(daemon, fake, at(1, 12))
    assert statuses() == ["completed", "completed"]
    # off for three days, back after the window: one skipped row, no run
    daemon, fake = new_daemon(config, at(4, 10))
    drive(daemon, fake, at(4, 12))
    assert statuses() == ["completed", "completed", "skipped_offline"]
    assert "not running" in runs()[-1].errors[0]


def test_retry_after_on_the_online_check_is_honoured(config, simulator):
    simulator.faults.set(status=503, retry_after=1800)
    daemon, fake = new_daemon(config, at(0, 1, 59))
    drive(daemon, fake, at(0, 2, 29), step_s=10)
    assert simulator.stats.snapshot()["requests"] == 1  # no check at +1, +2, +4 ... minutes
    simulator.faults.set(status=None, retry_after=None)
    drive(daemon, fake, at(0, 2, 31), step_s=10)
    assert statuses() == ["completed"]


def test_wall_clock_jumps_a_day_re_plan_without_a_burst(config):
    daemon, fake = new_daemon(config, at(1, 1, 59))
    drive(daemon, fake, at(1, 5))
    assert len(runs()) == 1
    fake.jump(-24 * 3600)  # a time server: it is really day 0, 05:00
    drive(daemon, fake, at(1, 1))
    assert len(runs()) == 1  # day 0's run was the one done: not again
    drive(daemon, fake, at(1, 5))
    assert len(runs()) == 2  # and day 1's is not skipped
    fake.jump(+24 * 3600)  # corrected forward: day 2, 05:00, inside the window
    drive(daemon, fake, at(2, 12))
    assert len(runs()) == 2  # that run counts for day 2: no burst
    drive(daemon, fake, at(3, 5))
    assert len(runs()) == 3
    assert daemon.planner.jumps == [-24 * 3600, 24 * 3600]


def test_clock_jump_forward_across_days_at_most_one_catch_up(config):
    daemon, fake = new_daemon(config, at(0, 1))  # wrong by 3 days and 3 hours
    drive(daemon, fake, at(0, 1, 30))
    fake.jump(3 * 24 * 3600 + 3 * 3600)
    drive(daemon, fake, at(3, 12))
    assert statuses() == ["completed"]


def test_clock_before_build_date_blocks_scheduled_runs_until_sane(config):
    daemon, fake = new_daemon(config, datetime(1970, 1, 1, 0, 30, tzinfo=timezone.utc))
    drive(daemon, fake, datetime(1970, 1, 3, tzinfo=timezone.utc), step_s=300)
    assert runs() == []
    fake.jump((at(0, 3) - fake.now).total_seconds())  # the time server answers
    drive(daemon, fake, at(0, 12))
    assert statuses() == ["completed"]


# -- clock without RTC: the offset and the events stamped with a wrong clock ------

def test_events_stamped_with_an_unknown_clock_are_corrected_by_the_servers_offset(config, simulator):
    wrong = datetime(1970, 1, 1, 0, 5, tzinfo=timezone.utc)
    enqueue(validate_events([{"type": "user", "id": "u1", "user": "kid1", "firstname": "K", "lastname": "One",
                              "email": "k1@example.org", "time": "1970-01-01T00:04:00Z"}]), now=wrong)
    enqueue(validate_events([{"type": "user", "id": "u2", "user": "kid2", "firstname": "K", "lastname": "Two",
                              "email": "k2@example.org", "time": "2026-11-20T10:00:00Z"}]))
    simulator.faults.set(clock_offset_s=7200)  # the server's Date says our clock is two hours behind
    row = run_sync(config, trigger="cli")
    assert row.status == "completed_with_warnings"  # two hours off: set the box's time (agent/reasons.py)
    assert row.reasons is None and history.run_dict(row)["reasons"] == [{"code": "clock_off", "minutes": 120}]
    assert 7190 < row.clock_offset_s < 7210
    e1, e2 = Event.get(Event.key == "u1"), Event.get(Event.key == "u2")
    assert e1.clock_suspect and e1.data["time_as_stamped"] == "1970-01-01T00:04:00Z"
    assert abs((parse_iso(e1.event_time) - parse_iso("1970-01-01T02:04:00Z")).total_seconds()) < 10
    assert not e2.clock_suspect and e2.event_time == "2026-11-20T10:00:00Z" and "time_as_stamped" not in e2.data
    assert e1.status == e2.status == "sent"


def test_a_small_offset_corrects_nothing(config, simulator):
    enqueue(validate_events([{"type": "user", "id": "u1", "user": "kid1", "firstname": "K", "lastname": "One",
                              "email": "k1@example.org"}]), now=datetime(1970, 1, 1, tzinfo=timezone.utc))
    run_sync(config)
    e1 = Event.get(Event.key == "u1")
    assert e1.event_time == "1970-01-01T00:00:00Z" and "time_as_stamped" not in e1.data


# -- the real daemon process: requests, overlap, SIGTERM -------------------------

class Agent:
    """``moodle-sync-agent run`` in a subprocess, stderr in a file (the
    database must be open in the test: the ``config`` fixture)."""

    def __init__(self, box: Box):
        # Off, so that the real time of day never adds a scheduled run here.
        settings.put(schedule_enabled=False)
        self.log = box.dir / "agent.log"
        self.proc = subprocess.Popen(box.argv("run"), env=box.env(), cwd=box.dir, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "a"))

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> tuple[int, float]:
        start = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - start

    def text(self) -> str:
        return self.log.read_text()


@pytest.fixture
def agent(box, config):
    started = Agent(box)
    yield started
    if started.proc.poll() is None:
        started.proc.kill()
        started.proc.wait()


def wait_for(predicate, timeout: float = 30, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out")


def picked(request_id: int) -> SyncRequest | None:
    request = SyncRequest.get_by_id(request_id)
    return request if request.picked_at else None


def finished(request_id: int) -> Run | None:
    """The run that served the request, once it ended."""
    run_id = SyncRequest.get_by_id(request_id).sync_id
    row = Run.get_or_none(Run.id == run_id) if run_id else None
    return row if row is not None and row.status != "running" else None


def test_a_page_request_is_picked_up_within_2_seconds(agent, config):
    first = handoff.request_sync()
    wait_for(lambda: finished(first.id))  # the agent is up
    for _ in range(3):
        time.sleep(0.37)  # anywhere in the agent's one-second step
        start = time.monotonic()
        request = handoff.request_sync()
        wait_for(lambda: picked(request.id), timeout=5, interval=0.01)
        assert time.monotonic() - start < 2.0
        wait_for(lambda: finished(request.id))
    assert statuses("page") == ["completed"] * 4
    code, took = agent.stop()
    assert code == 0 and took < 10
    log = agent.text()
    assert TOKEN not in log
    assert all(line.startswith(("INFO ", "WARNING ", "ERROR ", "DEBUG ")) for line in log.splitlines()), log


def queue_a_long_push(box: Box, n: int = 30) -> None:
    assert box.cli("courses", "add", "C1").returncode == 0
    users = [{"type": "user", "id": f"u{i}", "user": f"kid{i}", "firstname": "Kid", "lastname": str(i),
              "email": f"kid{i}@example.org"} for i in range(n)]
    enrols = [{"type": "enrolment", "id": f"e{i}", "course_id": C1, "user": f"kid{i}"} for i in range(n)]
    marks = [{"type": "completion", "id": f"c{i}", "course_id": C1, "user": f"kid{i}", "cmid": 1 + i % 2,
              "completed": True} for i in range(n)]
    assert box.enqueue(users + enrols + marks).returncode == 0


def sent_count(box: Box) -> int:
    with sqlite3.connect(box.database) as conn:
        return conn.execute("SELECT COUNT(*) FROM event WHERE status = 'sent'").fetchone()[0]


def test_a_request_during_a_run_does_not_start_a_second_run(box, simulator, config):
    queue_a_long_push(box, 20)
    simulator.faults.set(latency_ms=100)
    agent = Agent(box)
    try:
        first = handoff.request_sync()
        wait_for(lambda: sent_count(box) >= 5)
        second = handoff.request_sync(force=False)
        assert second.id != first.id
        wait_for(lambda: picked(second.id), timeout=3)
        run_id = SyncRequest.get_by_id(first.id).sync_id
        assert SyncRequest.get_by_id(second.id).sync_id == run_id
        wait_for(lambda: Run.get_by_id(run_id).status != "running", timeout=60)
        time.sleep(2.5)  # two more steps of the agent
        assert [r.id for r in Run.select()] == [run_id]
        assert Run.get_by_id(run_id).status == "completed"
    finally:
        agent.stop()


def test_sigterm_during_a_push_exits_within_10s_and_the_next_run_finishes_the_job(box, simulator, config):
    queue_a_long_push(box, 30)
    simulator.faults.set(latency_ms=150, call_cost_ms=50)
    agent = Agent(box)
    try:
        handoff.request_sync()
        wait_for(lambda: sent_count(box) >= 10, timeout=60)
    finally:
        code, took = agent.stop(signal.SIGTERM)
    assert code == 0 and took < 10, agent.text()
    [row] = Run.select()
    assert row.status == "interrupted" and any("interrupted" in e for e in row.errors)
    sent = sent_count(box)
    assert 10 <= sent < 90
    assert TOKEN not in agent.text()

    simulator.faults.set(latency_ms=0, call_cost_ms=0)
    again = Agent(box)
    try:
        result = box.cli("sync", "--via-agent", "--json", timeout=60)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["status"] == "completed"
    finally:
        again.stop()
    moodle = MoodleReader(simulator.url, TOKEN)
    calls = simulator.stats.snapshot()["calls"]
    assert calls["core_user_create_users"] == 30  # none sent twice
    assert calls["enrol_manual_enrol_users"] == 30
    assert calls["core_completion_override_activity_completion_status"] == 30
    enrolled = moodle.enrolled(C1)
    for i in range(30):
        assert len(moodle.users(f"kid{i}")) == 1
        assert enrolled[f"kid{i}"] == [5]
        assert moodle.completion(C1, moodle.user_id(f"kid{i}"), 1 + i % 2) == 1
    with sqlite3.connect(box.database) as conn:
        assert conn.execute("SELECT status, COUNT(*) FROM event GROUP BY status").fetchall() == [("sent", 90)]


def test_sync_turned_off_stops_the_running_sync_within_seconds(box, simulator, config):
    queue_a_long_push(box, 20)
    simulator.faults.set(latency_ms=100)
    daemon = Daemon(config)
    handoff.request_sync()
    daemon.step()
    wait_for(lambda: sent_count(box) >= 5)
    settings.put(sync_enabled=False)
    start = time.monotonic()
    daemon.step()  # the loop's next step, within a second
    daemon.wait_idle(10)
    assert time.monotonic() - start < 3
    [row] = Run.select()
    assert row.status == "interrupted" and sent_count(box) < 60


def test_sigterm_while_a_request_hangs_still_exits_within_10s(box, simulator, config):
    box.write_config(simulator.url, batch_size=5, timeout=60)
    simulator.faults.set(latency_ms=30_000)  # the server takes 30 s to answer
    agent = Agent(box)
    try:
        handoff.request_sync()
        wait_for(lambda: Run.get_or_none(Run.status == "running"))
        time.sleep(0.5)
    finally:
        code, took = agent.stop(signal.SIGTERM)
    assert code == 0 and took < 10, agent.text()
    [row] = Run.select()
    assert row.status == "interrupted" and "cut off" in row.errors[-1]
    assert "did not stop within" in agent.text()


def test_commands_starting_together_with_the_agent_never_find_the_database_locked(box, config, agent):
    procs = [subprocess.Popen(box.argv("status", "--json"), env=box.env(), cwd=box.dir, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(12)]
    results = [(p.wait(60), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), [err for code, err in results if code]


def test_sync_via_agent_prints_the_run_and_fails_clearly_without_an_agent(box, config, agent, capsys):
    result = box.cli("sync", "--via-agent", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "[completed]" in result.stdout and "trigger cli" in result.stdout
    agent.stop()
    start = time.monotonic()
    assert request_sync_via_agent(config, pickup_timeout_s=0.5) == 1
    assert time.monotonic() - start < 3
    assert "no agent picked up the request" in capsys.readouterr().err


def test_log_lines_are_single_and_never_show_the_token():
    secret = "wstoken-5f0c2a9e77d1b3"
    formatter = LineFormatter([secret], journal=True)
    try:
        raise RuntimeError(f"boom with {secret}\nsecond line")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", (secret,), sys.exc_info())
    line = formatter.format(record)
    assert "\n" not in line and secret not in line and line.startswith("<3>x: failed [hidden]")
    assert "RuntimeError: boom with [hidden] | second line" in line


def test_the_daemon_leaves_the_http_stack_to_its_worker_process(box, config):
    """What keeps the idle daemon small (scripts/bench, section 3): it syncs
    in a worker process and never loads requests or urllib3 itself."""
    script = (
        "import sys\n"
        "from agent.store import handoff\n"
        "from agent.config import load_config\n"
        "from agent.service.daemon import Daemon\n"
        "from agent.store.db import Run\n"
        "from agent.store.schema import open_db\n"
        f"config = load_config({str(box.config)!r})\n"
        "open_db(config.agent.database)\n"
        "daemon = Daemon(config)\n"
        "handoff.request_sync()\n"
        "daemon.step()\n"
        "daemon.wait_idle(60)\n"
        "print([r.status for r in Run.select()])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('requests', 'urllib3')))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=box.dir, env=box.env(), capture_output=True,
                            text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["['completed']", "[]"], result.stdout + result.stderr


def test_a_request_during_a_command_line_run_starts_no_worker(box, simulator, config):
    """`sync` from a shell holds the lock: a sync request is served by that
    run, a verify request waits for its end, and no worker is started."""
    queue_a_long_push(box, 20)
    simulator.faults.set(latency_ms=100)
    cli = subprocess.Popen(box.argv("sync"), env=box.env(), cwd=box.dir, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        running = wait_for(lambda: Run.get_or_none(Run.status == "running"))
        sync_request = handoff.request_sync()
        verify_request = handoff.request_sync(kind="verify")
        daemon = Daemon(config)
        for _ in range(3):
            daemon.step()
            assert daemon.job is None
        assert SyncRequest.get_by_id(sync_request.id).sync_id == running.id
        assert SyncRequest.get_by_id(verify_request.id).picked_at is None
    finally:
        cli.wait(60)
    simulator.faults.set(latency_ms=0)
    daemon.step()  # the lock is free: the verify runs now
    daemon.wait_idle(60)
    assert Run.get_by_id(SyncRequest.get_by_id(verify_request.id).sync_id).kind == "verify"


def test_the_worker_finds_the_agent_where_the_daemon_found_it(monkeypatch):
    """The worker runs as ``python -P -m agent.service.worker`` from /: the
    package's private directory must be on its path, whatever the daemon's."""
    import agent
    from agent.service.daemon import worker_env

    monkeypatch.delenv("PYTHONPATH", raising=False)
    first = worker_env()["PYTHONPATH"].split(os.pathsep)[0]
    assert Path(first) == Path(agent.__file__).resolve().parent.parent
