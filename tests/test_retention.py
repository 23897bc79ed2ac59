"""Retention: expired sent events and old history go; nothing else; the file shrinks."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
from datetime import timedelta

import pytest

from agent.store import retention
from agent.config import load_config
from agent.store.db import Event, Run, iso, utcnow
from agent.store.schema import open_db
from agent.service.daemon import RETENTION_EVERY_S, Daemon
from tests.helpers import Box

CLOSED_LOOPBACK = "http://127.0.0.1:9"


@pytest.fixture
def config(tmp_path):
    config = load_config(Box(tmp_path, CLOSED_LOOPBACK, extra="retention_days = 30").config)
    db = open_db(config.agent.database)
    yield config
    db.close()


def add_events(status: str, age_days: float, n: int, tag: str) -> list[int]:
    when = iso(utcnow() - timedelta(days=age_days))
    rows = [{"key": f"{tag}-{i}", "type": "grade", "course_id": 2, "username": "student1", "cmid": 3,
             "data": {"grade": 50, "feedback": "x" * 1000}, "event_time": when, "queued_at": when,
             "status": status, "sent_at": when if status == Event.SENT else None}
            for i in range(n)]
    for start in range(0, n, 200):
        Event.insert_many(rows[start:start + 200]).execute()
    return [e.id for e in Event.select(Event.id).where(Event.key.startswith(f"{tag}-"))]


def on_disk(config) -> int:
    """Database file plus WAL, as they are on the card."""
    path = config.agent.database
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def test_deletes_exactly_the_expired_sent_events_and_the_file_shrinks(config):
    expired = add_events(Event.SENT, 31, 3000, "expired")
    kept = {
        "recent sent": add_events(Event.SENT, 29, 50, "recent"),
        "old queued": add_events(Event.QUEUED, 400, 50, "queued"),
        "old conflict": add_events(Event.CONFLICT, 400, 50, "conflict"),
        "old discarded": add_events(Event.DISCARDED, 400, 50, "discarded"),
    }
    db = sqlite3.connect(config.agent.database)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = on_disk(config)

    pruned = retention.prune(config)

    assert pruned.events == len(expired)
    assert not Event.select().where(Event.id.in_(expired)).exists()
    for what, ids in kept.items():
        assert Event.select().where(Event.id.in_(ids)).count() == len(ids), what
    after = on_disk(config)
    assert after < before - 2 * 1024 * 1024, (before, after)  # ~3 MB of feedback given back
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()

    assert not retention.prune(config).anything  # a second pass finds nothing


def test_history_is_kept_365_days_or_10000_runs(config):
    now = utcnow()
    old = Run.create(trigger="cli", status=Run.COMPLETED, started_at=iso(now - timedelta(days=366)))
    stuck = Run.create(trigger="cli", status=Run.RUNNING, started_at=iso(now - timedelta(days=400)))
    year = Run.create(trigger="cli", status=Run.COMPLETED, started_at=iso(now - timedelta(days=364)))
    assert retention.prune(config).runs == 1
    assert Run.get_or_none(Run.id == old.id) is None
    assert Run.get_or_none(Run.id == stuck.id) is not None  # a running row is never deleted here
    assert Run.get_or_none(Run.id == year.id) is not None

    # 10,004 more runs, one a minute: the oldest beyond 10,000 go.
    rows = [{"id": f"run-{i:05d}", "trigger": "schedule", "status": Run.COMPLETED,
             "started_at": iso(now - timedelta(minutes=20_000 - i))} for i in range(10_004)]
    for start in range(0, len(rows), 500):
        Run.insert_many(rows[start:start + 500]).execute()
    assert retention.prune(config).runs == 5  # the 364-day-old one and run-00000..00003
    finished = Run.select().where(Run.status != Run.RUNNING)
    assert finished.count() == 10_000
    assert Run.get_or_none(Run.id == "run-00003") is None
    assert Run.get_or_none(Run.id == "run-00004") is not None


def test_nothing_is_deleted_on_a_clock_that_was_never_set(config):
    add_events(Event.SENT, 31, 5, "expired")
    assert not retention.prune(config, now=utcnow().replace(year=2001)).anything
    assert Event.select().count() == 5


def test_the_daemon_applies_retention_when_it_starts(config):
    """Retention is one of the daemon's recurring jobs (at start, then every
    hour), not a step of every run."""
    expired = add_events(Event.SENT, 45, 10, "expired")
    recent = add_events(Event.SENT, 1, 10, "recent")
    daemon = Daemon(config)
    stop = threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    stop.start()
    try:
        assert daemon.run_forever() == 0
    finally:
        stop.cancel()
    assert not Event.select().where(Event.id.in_(expired)).exists()
    assert Event.select().where(Event.id.in_(recent)).count() == 10
    assert RETENTION_EVERY_S == 3600


def test_collections_go_after_two_weeks_and_never_push_syncs_out(config, monkeypatch):
    """The box's Moodle is read every few minutes: its collections must not
    use up the history's 10,000 runs, nor stay a year."""
    monkeypatch.setattr(retention, "HISTORY_RUNS", 3)
    now = utcnow()

    def run(kind: str, days: float) -> str:
        when = iso(now - timedelta(days=days))
        return Run.create(kind=kind, trigger="schedule", status=Run.COMPLETED, started_at=when, completed_at=when).id

    syncs = [run("sync", d) for d in (1, 2, 3)]
    fresh = [run("collect", d / 10) for d in range(1, 20)]  # newer than every sync
    old = [run("collect", d) for d in (15, 20)]
    pruned = retention.prune(config, now)
    assert pruned.runs == 2
    assert {r.id for r in Run.select()} == set(syncs) | set(fresh)
    assert not set(old) & {r.id for r in Run.select()}
