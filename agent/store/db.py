"""The SQLite database: models, connection settings and schema creation.

Everything the agent knows lives in one SQLite file: the event queue, the
box's copy of each course, the sync history, the page's settings and the
sync requests the page hands to the daemon. Written for peewee 3.14
(bookworm) and peewee 4.x alike: only ``atomic()`` and the plain query API.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import peewee as pw

# The database is bound at run time by open_db(): one file per process.
database = pw.DatabaseProxy()

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

SCHEMA_VERSION = 8


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime | None) -> str | None:
    """ISO 8601 UTC with a Z, second precision, or None."""
    if dt is None:
        return None
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def first_column(query: Any) -> list[Any]:
    """The first column of a query's rows, without building model objects."""
    return [row[0] for row in query.tuples()]


class JSONField(pw.TextField):
    def db_value(self, value):
        return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)

    def python_value(self, value):
        return None if value is None else json.loads(value)


class BaseModel(pw.Model):
    class Meta:
        database = database


class Event(BaseModel):
    """One learner event. ``key`` is the idempotency key: stored once."""

    QUEUED, SENT, CONFLICT, DISCARDED = "queued", "sent", "conflict", "discarded"

    id = pw.AutoField()

    key = pw.CharField(max_length=64, unique=True)
    type = pw.CharField(max_length=16, index=True)
    course_id = pw.IntegerField(null=True, index=True)
    username = pw.CharField(max_length=100)
    cmid = pw.IntegerField(null=True)
    data = JSONField()  # the validated event minus the password
    event_time = pw.CharField(null=True)  # ISO 8601 UTC, as stamped by the app
    clock_suspect = pw.BooleanField(default=False)
    queued_at = pw.CharField()
    status = pw.CharField(max_length=16, default=QUEUED, index=True)
    attempts = pw.IntegerField(default=0)
    last_error = pw.TextField(null=True)
    sync_id = pw.CharField(max_length=36, null=True)  # the run that sent it
    sent_at = pw.CharField(null=True, index=True)


class Secret(BaseModel):
    """A new account's password, kept apart from the event and erased once the
    server confirmed the account (secure_delete overwrites the page)."""

    event = pw.ForeignKeyField(Event, primary_key=True, on_delete="CASCADE")
    password = pw.CharField(max_length=255)
    event_id: int  # made by peewee from the foreign key


class Course(BaseModel):
    id = pw.IntegerField(primary_key=True)
    shortname = pw.CharField()
    fullname = pw.CharField()
    timemodified = pw.IntegerField()
    cacherev = pw.IntegerField(null=True)
    fetched_at = pw.CharField()
    contents = JSONField()  # sections with their modules, as the server sent them
    activities: pw.ModelSelect  # the backref of Activity.course


class Activity(BaseModel):
    cmid = pw.IntegerField(primary_key=True)
    course = pw.ForeignKeyField(Course, backref="activities", on_delete="CASCADE")
    section = pw.IntegerField()
    name = pw.CharField()
    modname = pw.CharField()
    instance = pw.IntegerField(null=True)
    completion = pw.IntegerField(default=0)  # 0 none, 1 manual, 2 automatic


class SyncRun(BaseModel):
    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    SKIPPED_OFFLINE = "skipped_offline"
    INTERRUPTED = "interrupted"

    id = pw.CharField(max_length=36, primary_key=True, default=lambda: str(uuid.uuid4()))
    trigger = pw.CharField(max_length=16)
    force = pw.BooleanField(default=False)
    status = pw.CharField(max_length=24, index=True)
    started_at = pw.CharField(index=True)
    completed_at = pw.CharField(null=True)
    duration_s = pw.FloatField(null=True)
    bytes_sent = pw.IntegerField(default=0)
    bytes_received = pw.IntegerField(default=0)
    courses = JSONField(default=list)
    actions = JSONField(default=dict)
    errors = JSONField(default=list)
    clock_offset_s = pw.FloatField(null=True)
    # Live progress, written while the run goes so the page can poll it.
    pid = pw.IntegerField(null=True)
    phase = pw.CharField(max_length=24, null=True)
    courses_done = pw.IntegerField(default=0)
    courses_total = pw.IntegerField(default=0)
    events_sent = pw.IntegerField(default=0)  # confirmed by the server
    conflicts = pw.IntegerField(default=0)  # events this run made conflicts
    events_total = pw.IntegerField(default=0)  # queued when it started
    notified = pw.BooleanField(default=False)
    # A sync: what the collection from the box's Moodle before it found
    # (agent/box/collect.py), for the Information dialog. None without [box].
    collected = JSONField(null=True)
    # A sync: up, down or both (the direction it ran with); None before issue 13.
    direction = pw.CharField(max_length=8, null=True)
    # A sync down: the bytes to and from the box's own Moodle {"sent", "received"}, apart from the server's.
    box_bytes = JSONField(null=True)


class Setting(BaseModel):
    key = pw.CharField(primary_key=True)
    value = JSONField()


class SyncRequest(BaseModel):
    """A sync asked for by the page or ``sync --via-agent``; the daemon runs it."""

    id = pw.AutoField()
    requested_at = pw.CharField()
    trigger = pw.CharField(max_length=16, default="manual")
    force = pw.BooleanField(default=False)
    picked_at = pw.CharField(null=True)
    sync_id = pw.CharField(max_length=36, null=True)


class LoginAttempt(BaseModel):
    """A failed login on the page, kept in the database so that the rate limit
    holds across all gunicorn workers."""

    address = pw.CharField(max_length=64, index=True)  # "<scope> <client address>", scope login or api-key
    at = pw.FloatField(index=True)  # Unix time


class BoxCourse(BaseModel):
    """A kept course as the box's own Moodle has it: its own id, found by the
    short name (the same on both sides), and what its contents were."""

    id = pw.IntegerField(primary_key=True)  # the course id on the box's Moodle
    # The server's course (Course.id). Not a foreign key: refreshing a Course
    # replaces its row, which would cascade to all that was collected.
    course_id = pw.IntegerField(unique=True)
    shortname = pw.CharField()
    timemodified = pw.IntegerField()
    cacherev = pw.IntegerField(null=True)
    fetched_at = pw.CharField()


class BoxActivity(BaseModel):
    """An activity of a course on the box's Moodle (its cmid is the box's)."""

    cmid = pw.IntegerField(primary_key=True)
    box_course = pw.ForeignKeyField(BoxCourse, backref="activities", on_delete="CASCADE")
    section = pw.IntegerField()
    name = pw.CharField()
    modname = pw.CharField()
    idnumber = pw.CharField(null=True)  # from the grade book, for graded activities
    box_course_id: int


class Participant(BaseModel):
    """Someone enrolled in a course on the box's Moodle, as last collected."""

    box_course = pw.ForeignKeyField(BoxCourse, on_delete="CASCADE")
    userid = pw.IntegerField()  # the box's user id
    username = pw.CharField(max_length=100)
    profile = JSONField()  # firstname, lastname, email, idnumber
    roles = JSONField()  # role short names
    lastcourseaccess = pw.IntegerField(default=0)
    recheck = pw.BooleanField(default=False)  # read again at the next collection (box_diff.needs_recheck)
    box_course_id: int

    class Meta:
        primary_key = pw.CompositeKey("box_course", "userid")


class Collected(BaseModel):
    """The last state collected per course, learner, activity and kind
    (completion or grade): what the next collection compares with. Only
    states with learner data have a row."""

    box_course = pw.ForeignKeyField(BoxCourse, on_delete="CASCADE")
    username = pw.CharField(max_length=100)
    box_cmid = pw.IntegerField()
    kind = pw.CharField(max_length=16)
    value = pw.FloatField(null=True)  # completion state, or the raw grade
    version = pw.CharField(max_length=32)  # timecompleted, or the date graded
    box_course_id: int

    class Meta:
        primary_key = pw.CompositeKey("box_course", "username", "box_cmid", "kind")


class ServerSeen(BaseModel):
    """The last state read from (or pushed to) the server per course, learner,
    activity (the server's cmid) and kind: what the next sync down compares
    with, so that only what changed on the server is written into the box's
    Moodle, and what the agent pushed does not come back down (agent/down/pull.py)."""

    course_id = pw.IntegerField()  # the server's
    username = pw.CharField(max_length=100)
    cmid = pw.IntegerField()  # the server's
    kind = pw.CharField(max_length=16)
    value = pw.FloatField()

    class Meta:
        primary_key = pw.CompositeKey("course_id", "username", "cmid", "kind")


class TwoWayConflict(BaseModel):
    """The conflicts log: the same learner's same activity changed on both
    sides since the last sync, both values and the one kept."""

    id = pw.AutoField()
    sync_id = pw.CharField(max_length=36, index=True)
    course_id = pw.IntegerField()  # the server's
    username = pw.CharField(max_length=100)
    cmid = pw.IntegerField()  # the server's
    kind = pw.CharField(max_length=16)
    box_value = pw.FloatField()
    server_value = pw.FloatField()
    kept = pw.CharField(max_length=8)  # "box" or "server"
    rule = pw.CharField(max_length=120)
    at = pw.CharField()



class KnownUser(BaseModel):
    """A username's account id on a server, as the server last confirmed it
    (agent/store/known.py says how long that is trusted)."""

    site = pw.CharField()  # the server's address ([moodle] url)
    username = pw.CharField(max_length=100)
    user_id = pw.IntegerField()
    confirmed_at = pw.CharField()  # ISO 8601 UTC

    class Meta:
        primary_key = pw.CompositeKey("site", "username")


class KnownEnrolment(BaseModel):
    """A user id the server confirmed enrolled in a course, and when."""

    site = pw.CharField()
    course_id = pw.IntegerField()
    user_id = pw.IntegerField()
    confirmed_at = pw.CharField()

    class Meta:
        primary_key = pw.CompositeKey("site", "course_id", "user_id")


# New tables (KnownUser, KnownEnrolment: schema version 5) are created on an
# upgraded box by create_tables(safe=True) in open_db.
MODELS = [Event, Secret, Course, Activity, SyncRun, Setting, SyncRequest, LoginAttempt, BoxCourse, BoxActivity,
          Participant, Collected, ServerSeen, TwoWayConflict,
          KnownUser, KnownEnrolment]

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
ADDED_COLUMNS = [(SyncRun, SyncRun.conflicts, "INTEGER NOT NULL DEFAULT 0"), (SyncRun, SyncRun.collected, "TEXT"),
                 (SyncRun, SyncRun.direction, "VARCHAR(8)"), (SyncRun, SyncRun.box_bytes, "TEXT")]


def _add_missing_columns(db: pw.SqliteDatabase) -> None:
    for model, column, kind in ADDED_COLUMNS:
        table = model._meta.table_name
        present = {c.name for c in db.get_columns(table)}
        if column.column_name not in present:
            db.execute_sql(f'ALTER TABLE "{table}" ADD COLUMN "{column.column_name}" {kind}')


def open_db(path: str | Path, create: bool = True) -> pw.SqliteDatabase:
    """Open (and create) the database file and bind the models to it."""
    path = Path(path)
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
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
            # "The last successful run" without sorting the whole history.
            db.execute_sql("CREATE INDEX IF NOT EXISTS syncrun_status_started ON syncrun (status, started_at)")
            # The health panel's "offset to the server at the last sync" without
            # walking every run that never reached the server.
            db.execute_sql("CREATE INDEX IF NOT EXISTS syncrun_offset_started ON syncrun (started_at) "
                           "WHERE clock_offset_s IS NOT NULL")
            # A collection checks, page by page, who holds a username in a course (agent/box/check.py).
            db.execute_sql("CREATE INDEX IF NOT EXISTS participant_username ON participant (box_course_id, username)")
            _create_event_counters(db)
            _add_missing_columns(db)
            db.execute_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return db


def close_db() -> None:
    db = database.obj
    if db is not None and not db.is_closed():
        db.close()
