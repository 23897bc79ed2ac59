"""The per-status event counters that triggers keep (the page reads them
instead of counting a million rows) always equal a real count."""

from __future__ import annotations

import sqlite3

from agent.store.db import Event
from agent.store.schema import close_db, open_db
from agent.store.queue import count_by_status, enqueue, set_conflicts, validate_events
from agent.sync import run_sync
from tests.helpers import Box, keep_courses


def real_counts(db) -> dict[str, int]:
    counts = {"queued": 0, "sent": 0, "conflict": 0, "discarded": 0}
    counts.update(dict(db.execute_sql("SELECT status, COUNT(*) FROM event GROUP BY status").fetchall()))
    return counts


def events(n, prefix="e", **extra):
    return validate_events([{"type": "completion", "id": f"{prefix}{i}", "course_id": 2, "user": f"student{1 + i % 5}",
                             "cmid": 1 + i % 3, "completed": True, **extra} for i in range(n)])


def test_counters_follow_every_change(tmp_path):
    db = open_db(tmp_path / "agent.db")
    keep_courses(2)
    enqueue(events(10))
    enqueue(events(12))  # 10 duplicates, 2 new
    assert count_by_status() == real_counts(db) == {"queued": 12, "sent": 0, "conflict": 0, "discarded": 0}
    Event.update(status=Event.CONFLICT).where(Event.id <= 5).execute()
    Event.update(status=Event.SENT).where(Event.id.between(6, 8)).execute()
    Event.update(status=Event.SENT).where(Event.id.between(6, 8)).execute()  # no change: no double count
    set_conflicts([1, 2], Event.QUEUED)
    set_conflicts(None, Event.DISCARDED)
    assert count_by_status() == real_counts(db) == {"queued": 6, "sent": 3, "conflict": 0, "discarded": 3}
    Event.delete().where(Event.status == Event.SENT).execute()
    with db.atomic() as tx:  # a rolled back change leaves the counters as they were
        Event.update(status=Event.SENT).execute()
        tx.rollback()
    assert count_by_status() == real_counts(db) == {"queued": 6, "sent": 0, "conflict": 0, "discarded": 3}
    db.close()


def test_counters_after_a_real_sync(tmp_path, simulator):
    box = Box(tmp_path, simulator.url)
    assert box.cli("courses", "add", "C1").returncode == 0
    from agent.config import load_config
    config = load_config(box.config)
    db = open_db(config.agent.database)
    enqueue(events(20) + events(3, prefix="bad", user="nobody"))
    run = run_sync(config, trigger="cli")
    assert run.status == "completed_with_warnings" and run.conflicts == 3  # settled: shown amber, not red
    assert count_by_status() == real_counts(db) == {"queued": 0, "sent": 20, "conflict": 3, "discarded": 0}
    db.close()


def test_counters_created_for_a_database_from_before(tmp_path):
    """A box upgraded from a version without counters counts what it holds, once."""
    path = tmp_path / "agent.db"
    db = open_db(path)
    keep_courses(2)
    enqueue(events(7))
    Event.update(status=Event.SENT).where(Event.id <= 2).execute()
    close_db()
    raw = sqlite3.connect(path)
    for name in ("event_count_insert", "event_count_update", "event_count_delete"):
        raw.execute(f"DROP TRIGGER {name}")
    raw.execute("DROP TABLE event_count")
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    db = open_db(path)
    assert count_by_status() == real_counts(db) == {"queued": 5, "sent": 2, "conflict": 0, "discarded": 0}
    close_db()
    db = open_db(path)  # opening again does not count twice
    enqueue(events(1, prefix="new"))
    assert count_by_status() == real_counts(db) == {"queued": 6, "sent": 2, "conflict": 0, "discarded": 0}
    db.close()
