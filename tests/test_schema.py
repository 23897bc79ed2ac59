"""Schema upgrades: a database file written by an older agent opens with the
current one and keeps its rows, with what the new columns must say."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.store import handoff, history
from agent.store.db import BoxActivity, BoxCourse, SyncRequest, Run
from agent.store.schema import SCHEMA_VERSION, close_db, open_db

V7 = Path(__file__).with_name("schema") / "v7.sql"


def test_a_version_7_database_upgrades_and_every_run_gets_its_kind(tmp_path):
    path = tmp_path / "agent.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(V7.read_text())
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 7
        assert "kind" not in {r[1] for r in conn.execute("PRAGMA table_info(syncrun)")}
    open_db(path)
    try:
        runs = {r.id: (r.kind, r.trigger, r.status) for r in Run.select()}
        assert runs == {
            "run-0": ("sync", "page", "completed"),  # "manual": the page's button
            "run-1": ("sync", "schedule", "skipped_offline"),
            "run-2": ("sync", "cli", "completed_with_errors"),
            "run-3": ("verify", "unknown", "completed"),  # who started it was not recorded
            "run-4": ("collect", "unknown", "completed"),
        }
        assert Run.get_by_id("run-3").actions == {"checked": 3}
        # Version 9: an old run has no stored reasons and names nothing moved down.
        assert Run.get_by_id("run-2").reasons is None and Run.get_by_id("run-2").moved_down is None
        # The history keeps the collection out of the page's list, as before.
        assert [r["id"] for r in history.recent(10)] == ["run-3", "run-2", "run-1", "run-0"]
        assert [(r["kind"], r["trigger"]) for r in history.recent(1, collections=True)] == [("collect", "unknown")]
        assert history.last_collection().id == "run-4"
        requests = [(r.id, r.kind, r.trigger, r.force) for r in SyncRequest.select().order_by(SyncRequest.id)]
        assert requests == [(1, "verify", "page", False), (2, "sync", "page", True), (3, "sync", "cli", False)]
        # The waiting verify still absorbs a new one, and a sync request the waiting sync.
        assert handoff.request_sync(kind="verify").id == 1
        assert handoff.request_sync(trigger="cli").id == 2
    finally:
        close_db()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert {"reasons", "moved_down"} <= {r[1] for r in conn.execute("PRAGMA table_info(syncrun)")}
        assert conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'event_sync'").fetchone()
    open_db(path)  # opened again: nothing more to change
    try:
        assert Run.select().where(Run.kind == "collect").count() == 1
    finally:
        close_db()


def test_a_box_course_stored_before_the_assignments_instance_ids_is_read_again_once(tmp_path):
    """Version 9 stores an assignment's instance id: the box's copies of its
    courses made before are no longer the same as any course on the box's
    Moodle, so the next collection reads their contents again; once."""
    path = tmp_path / "agent.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(V7.read_text())
        conn.execute("INSERT INTO boxcourse VALUES (12, 2, 'C1', 1700000000, 5, '2026-01-01T00:00:00Z')")
        conn.execute("INSERT INTO boxactivity VALUES (103, 12, 1, 'Essay', 'assign', NULL)")
    open_db(path)
    try:
        course = BoxCourse.get_by_id(12)
        assert (course.timemodified, course.cacherev) == (-1, None)
        assert BoxActivity.get_by_id(103).instance is None
        BoxCourse.update(timemodified=1700000000, cacherev=5).execute()  # the collection read it again
    finally:
        close_db()
    open_db(path)  # opened again: nothing more to change
    try:
        assert (BoxCourse.get_by_id(12).timemodified, BoxCourse.get_by_id(12).cacherev) == (1700000000, 5)
    finally:
        close_db()


def test_a_version_8_database_gets_the_reasons_of_version_9(tmp_path):
    """A box upgraded to version 8 (the run's kind) gets the stored reasons,
    the changes written down and the events' sync index, and keeps its rows."""
    path = tmp_path / "agent.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(V7.read_text())
        for table in ("syncrun", "syncrequest"):  # what version 8 added
            conn.execute(f"ALTER TABLE {table} ADD COLUMN kind VARCHAR(8) NOT NULL DEFAULT 'sync'")
        conn.execute("UPDATE syncrun SET kind = 'collect', trigger = 'schedule' WHERE id = 'run-4'")
        conn.execute("PRAGMA user_version = 8")
    open_db(path)
    try:
        run = Run.get_by_id("run-4")
        assert (run.kind, run.trigger, run.reasons, run.moved_down) == ("collect", "schedule", None, None)
        Run.update(reasons=[{"code": "box_down"}]).where(Run.id == "run-4").execute()
        assert Run.get_by_id("run-4").reasons == [{"code": "box_down"}]
        assert history.run_dict(Run.get_by_id("run-0"))["reasons"] == []  # a plain success
    finally:
        close_db()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'event_sync'").fetchone()


def test_a_request_names_a_sync_or_a_verify(tmp_path):
    open_db(tmp_path / "agent.db")
    try:
        with pytest.raises(ValueError, match="kind: .*'collect'"):
            handoff.request_sync(kind="collect")
        assert SyncRequest.select().count() == 0
    finally:
        close_db()


# The runs' indexes: every progress write to a run updates each of them on the SD card.
RUN_INDEXES = {
    "syncrun_started": "(started_at)",
    "syncrun_status_started": "(status, started_at)",
    "syncrun_offset_started": "(started_at) WHERE clock_offset_s IS NOT NULL",
}


def run_indexes(path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'syncrun' "
                            "AND sql IS NOT NULL").fetchall()  # the primary key's own index has no sql
    return {name: sql.split(" ON syncrun ", 1)[1] for name, sql in rows}


@pytest.mark.parametrize("start", ["fresh", "v7", "v10"])
def test_the_runs_have_each_index_once_whatever_the_file_started_as(tmp_path, start):
    """The model's rename (SyncRun to Run) renamed peewee's generated indexes: an
    upgraded file had three on started_at and two on status, a new one two on started_at."""
    path = tmp_path / "agent.db"
    if start == "v7":
        with sqlite3.connect(path) as conn:
            conn.executescript(V7.read_text())
    elif start == "v10":  # a file made by version 10 after the rename: peewee's run_* indexes too
        open_db(path)
        close_db()
        with sqlite3.connect(path) as conn:
            conn.execute('CREATE INDEX "run_status" ON "syncrun" ("status")')
            conn.execute('CREATE INDEX "run_started_at" ON "syncrun" ("started_at")')
            conn.execute("PRAGMA user_version = 10")
    open_db(path)
    close_db()
    assert run_indexes(path) == RUN_INDEXES
    open_db(path)  # opened again: nothing more to change
    close_db()
    assert run_indexes(path) == RUN_INDEXES
