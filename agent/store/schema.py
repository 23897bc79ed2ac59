"""Opening the SQLite file: its connection settings, its private modes, and
bringing an older file to the current schema (the models are agent/store/db.py's)."""

from __future__ import annotations

import os
from pathlib import Path

import peewee as pw

from .db import MODELS, BoxActivity, Run, TwoWayConflict, database

PRAGMAS = {
    # First, so that the pragmas after it wait for a busy file instead of failing.
    "busy_timeout": 10000,
    "journal_mode": "wal",
    # FULL: a commit is on the SD card before we tell anyone it happened;
    # WAL with NORMAL could lose the last commits on a power cut.
    "synchronous": "full",
    "foreign_keys": 1,
    # Freed pages are zeroed, so an erased password does not linger in the file.
    "secure_delete": 1,
}

# Lets retention give space back without a full VACUUM. Only for a new file,
# before journal_mode (SQLite ignores it once the WAL header is written); on
# an existing file, setting it would take the write lock at every open.
NEW_FILE_PRAGMAS = {"busy_timeout": PRAGMAS["busy_timeout"], "auto_vacuum": "incremental", **PRAGMAS}

# 8: a run's kind apart from its trigger; 9: boxactivity.instance (an assignment's id), a run's
# reasons and what it wrote down (issue 23); 10: learners' accounts (BoxAccount, PendingAccount,
# ProfileState), profile conflicts' texts; 11: the runs' indexes under fixed names, the duplicates gone,
# a run's warnings stored when it ends.
SCHEMA_VERSION = 11

# The indexes peewee named after the model (index=True on status and started_at): syncrun_* until
# the model's rename, run_* after. syncrun_started and syncrun_status_started cover what they did.
DUPLICATE_INDEXES = ["syncrun_status", "syncrun_started_at", "run_status", "run_started_at"]


# The page shows how many events wait; counting a million queued rows on each
# request is too slow on an SD card, so triggers keep one counter per status,
# in the same transaction as the change.
EVENT_COUNTERS = [
    "CREATE TABLE IF NOT EXISTS event_count (status TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID",
    """CREATE TRIGGER IF NOT EXISTS event_count_insert AFTER INSERT ON event BEGIN
         INSERT OR IGNORE INTO event_count (status, n) VALUES (NEW.status, 0);
         UPDATE event_count SET n = n + 1 WHERE status = NEW.status;
       END""",
    """CREATE TRIGGER IF NOT EXISTS event_count_delete AFTER DELETE ON event BEGIN
         UPDATE event_count SET n = n - 1 WHERE status = OLD.status;
       END""",
    """CREATE TRIGGER IF NOT EXISTS event_count_update AFTER UPDATE OF status ON event
       WHEN OLD.status IS NOT NEW.status BEGIN
         UPDATE event_count SET n = n - 1 WHERE status = OLD.status;
         INSERT OR IGNORE INTO event_count (status, n) VALUES (NEW.status, 0);
         UPDATE event_count SET n = n + 1 WHERE status = NEW.status;
       END""",
]


def _create_event_counters(db: pw.SqliteDatabase) -> None:
    """Create the counters once, counting the rows already there. Runs inside
    open_db's IMMEDIATE transaction, so two processes cannot both count."""
    if db.execute_sql("SELECT 1 FROM sqlite_master WHERE name = 'event_count_insert'").fetchone():
        return
    for statement in EVENT_COUNTERS:
        db.execute_sql(statement)
    db.execute_sql("DELETE FROM event_count")
    db.execute_sql("INSERT INTO event_count (status, n) SELECT status, COUNT(*) FROM event GROUP BY status")


# Columns added after a release, with their type; create_tables(safe=True)
# does not add columns to a table that exists, so an upgraded box gets them here.
ADDED_COLUMNS = [(Run, Run.conflicts, "INTEGER NOT NULL DEFAULT 0"), (Run, Run.collected, "TEXT"),
                 (Run, Run.direction, "VARCHAR(8)"), (Run, Run.box_bytes, "TEXT"),
                 (BoxActivity, BoxActivity.instance, "INTEGER"),
                 (TwoWayConflict, TwoWayConflict.box_text, "TEXT"), (TwoWayConflict, TwoWayConflict.server_text, "TEXT"),
                 (Run, Run.reasons, "TEXT"), (Run, Run.moved_down, "TEXT"), (Run, Run.warnings, "TEXT")]


def _add_missing_columns(db: pw.SqliteDatabase) -> None:
    for model, column, kind in ADDED_COLUMNS:
        table = model._meta.table_name
        present = {c.name for c in db.get_columns(table)}
        if column.column_name not in present:
            db.execute_sql(f'ALTER TABLE "{table}" ADD COLUMN "{column.column_name}" {kind}')
            if column is BoxActivity.instance:
                # The assignments stored before their instance ids were (version 9): the next
                # collection reads every course's contents again, once (no course on the box's
                # Moodle has a timemodified of -1, so none is the same as the box's copy).
                db.execute_sql('UPDATE "boxcourse" SET "timemodified" = -1, "cacherev" = NULL')


# Version 8 gave the kind of run its own column: the trigger said both who
# started a run and, for a verify or a collection, what it was. Old rows get
# their kind from it; who started those is not known.
SPLIT_KIND = [
    """UPDATE syncrun SET kind = CASE trigger WHEN 'verify' THEN 'verify' WHEN 'collect' THEN 'collect'
       ELSE 'sync' END""",
    "UPDATE syncrun SET trigger = CASE WHEN trigger IN ('verify', 'collect') THEN 'unknown' ELSE trigger END",
    "UPDATE syncrequest SET kind = CASE trigger WHEN 'verify' THEN 'verify' ELSE 'sync' END",
    "UPDATE syncrequest SET trigger = 'page' WHERE trigger IN ('verify', 'manual')",
    "UPDATE syncrun SET trigger = 'page' WHERE trigger = 'manual'",  # the page's button
]


def _split_kind_from_trigger(db: pw.SqliteDatabase) -> None:
    if "kind" in {c.name for c in db.get_columns("syncrun")}:
        return
    for table in ("syncrun", "syncrequest"):
        db.execute_sql(f"ALTER TABLE \"{table}\" ADD COLUMN \"kind\" VARCHAR(8) NOT NULL DEFAULT 'sync'")
    for statement in SPLIT_KIND:
        db.execute_sql(statement)


def create_private(path: Path) -> None:
    """The missing directories 0700 and the file 0600, whatever the umask:
    the queue holds learners' names and passwords on their way. SQLite gives
    its -wal and -shm files the database file's mode."""
    missing = [d for d in (path.parent, *path.parent.parents) if not d.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def open_db(path: str | Path, create: bool = True) -> pw.SqliteDatabase:
    """Open (and create) the database file and bind the models to it."""
    path = Path(path)
    if create:
        create_private(path)
    new_file = not path.exists() or path.stat().st_size == 0
    pragmas = NEW_FILE_PRAGMAS if new_file else PRAGMAS
    db = pw.SqliteDatabase(str(path), pragmas=pragmas, check_same_thread=False)
    database.initialize(db)
    db.connect(reuse_if_open=True)
    # Only a database behind the current schema is written to here: every CLI
    # call opens the database, often while the daemon is in the middle of a
    # sync. IMMEDIATE takes the write lock before reading the schema, so two
    # processes starting together wait for each other instead of failing.
    if create and db.execute_sql("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
        with db.atomic("IMMEDIATE"):
            db.create_tables(MODELS, safe=True)
            db.execute_sql(
                "CREATE INDEX IF NOT EXISTS event_queue ON event (status, course_id, id)"
            )
            # The newest runs of any status (the Target Server's state, the collections
            # between two syncs) without sorting the whole history.
            db.execute_sql("CREATE INDEX IF NOT EXISTS syncrun_started ON syncrun (started_at)")
            # "The last successful run" without sorting the whole history.
            db.execute_sql("CREATE INDEX IF NOT EXISTS syncrun_status_started ON syncrun (status, started_at)")
            # What a sync sent, for its Information dialog (agent/store/run_details.py) and the way down.
            db.execute_sql("CREATE INDEX IF NOT EXISTS event_sync ON event (sync_id) WHERE sync_id IS NOT NULL")
            # The health panel's "offset to the server at the last sync" without
            # walking every run that never reached the server.
            db.execute_sql("CREATE INDEX IF NOT EXISTS syncrun_offset_started ON syncrun (started_at) "
                           "WHERE clock_offset_s IS NOT NULL")
            # A collection checks, page by page, who holds a username in a course (agent/box/check.py).
            db.execute_sql("CREATE INDEX IF NOT EXISTS participant_username ON participant (box_course_id, username)")
            for name in DUPLICATE_INDEXES:
                db.execute_sql(f'DROP INDEX IF EXISTS "{name}"')
            _create_event_counters(db)
            _add_missing_columns(db)
            _split_kind_from_trigger(db)
            db.execute_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return db


def close_db() -> None:
    db = database.obj
    if db is not None and not db.is_closed():
        db.close()
