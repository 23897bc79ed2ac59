"""The SQLite database's models (agent/store/schema.py opens the file and
brings it to the current schema).

Everything the agent knows lives in one SQLite file: the event queue, the
box's copy of each course, the sync history, the page's settings and the
sync requests the page hands to the daemon. Written for peewee 3.14
(bookworm) and peewee 4.x alike: only ``atomic()`` and the plain query API.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any

import peewee as pw

# The database is bound at run time by open_db(): one file per process.
database = pw.DatabaseProxy()



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


def erase_wal() -> None:
    """After a password was erased (a pending account's row, a sent event's
    Secret): the WAL still holds the pages with it. Fold it into the database
    file, whose freed pages secure_delete zeroed, and truncate it."""
    database.obj.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")


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


class Run(BaseModel):
    """One run in the history: a sync, a verify or a collection (its ``kind``),
    and who started it (its ``trigger``)."""

    class Meta:  # the table keeps the name it had in the releases before (the model was SyncRun)
        table_name = "syncrun"

    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    # Did its work, with something for a teacher to look at (agent/reasons.py).
    COMPLETED_WITH_WARNINGS = "completed_with_warnings"
    FAILED = "failed"
    SKIPPED_OFFLINE = "skipped_offline"
    INTERRUPTED = "interrupted"

    id = pw.CharField(max_length=36, primary_key=True, default=lambda: str(uuid.uuid4()))
    # What the run does (sync, verify, collect) and who started it (page, cli,
    # schedule ...): agent/store/runkinds.py. One column until version 8.
    kind = pw.CharField(max_length=8, default="sync")
    trigger = pw.CharField(max_length=16)
    force = pw.BooleanField(default=False)
    # Indexed by agent/store/schema.py under fixed names (syncrun_started, syncrun_status_started):
    # index=True would name them after the model, which was renamed (SyncRun), and each index is
    # one more write per progress update on the SD card.
    status = pw.CharField(max_length=24)
    started_at = pw.CharField()
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
    # Why it failed, as agent/reasons.py codes: [{"code": ..., values...}]; None before issue 23.
    reasons = JSONField(null=True)
    # A sync down: the first changes written into the box's Moodle
    # [{"username", "course_id", "cmid" (the server's), "kind", "value"}], for the Information dialog.
    moved_down = JSONField(null=True)
    # A sync or verify: its warnings (agent/reasons.py warnings_of), worked out once when it ended,
    # so that the page's status poll does not read its collection's row again. None before version 11.
    warnings = JSONField(null=True)


class Setting(BaseModel):
    key = pw.CharField(primary_key=True)
    value = JSONField()


class SyncRequest(BaseModel):
    """A sync (or a verify) asked for by the page or ``sync --via-agent``; the daemon runs it."""

    id = pw.AutoField()
    requested_at = pw.CharField()
    kind = pw.CharField(max_length=8, default="sync")  # sync or verify
    trigger = pw.CharField(max_length=16, default="page")
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
    instance = pw.IntegerField(null=True)  # core_course_get_contents' instance: an assignment's grades go under it
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
    # A profile field (kind firstname, lastname, email or idnumber): both texts; the values are 0.
    box_text = pw.TextField(null=True)
    server_text = pw.TextField(null=True)



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


# Learners' accounts (issue 19, agent/learners.py).


class PendingAccount(BaseModel):
    """A learner's account or password being written into the box's Moodle
    (agent/learners.py): stored before the first call, deleted in the
    transaction that queues what the server gets. A kill in between leaves
    it here; the next collection or learners command finishes it. Its
    password is erased with it (secure_delete, then the WAL checkpointed)."""

    username = pw.CharField(max_length=100, primary_key=True)
    action = pw.CharField(max_length=16)  # "add" or "password"
    data = JSONField()  # the profile, the server's course ids, also_server
    password = pw.CharField(max_length=255)
    created_at = pw.CharField()


class BoxAccount(BaseModel):
    """An account the agent made on the box's Moodle: added by a teacher
    (origin "page": with a password) or brought down from the server
    (origin "down": made with Moodle's createpassword, whose e-mail never
    leaves an offline box: it needs a password set on the page)."""

    username = pw.CharField(max_length=100, primary_key=True)
    box_userid = pw.IntegerField()
    origin = pw.CharField(max_length=8)
    password_set = pw.BooleanField(default=False)
    made_at = pw.CharField()


class ProfileState(BaseModel):
    """A learner's profile (firstname, lastname, email, idnumber) as last
    collected from the box's Moodle, and as last read from the server, with
    when: what the next collection and the next sync down compare with."""

    username = pw.CharField(max_length=100, primary_key=True)
    box = JSONField(null=True)
    box_version = pw.IntegerField(default=0)  # how many box changes were queued: in the events' ids
    server = JSONField(null=True)
    server_seen_at = pw.CharField(null=True)  # ISO 8601 UTC: the last sync that read it


# New tables (KnownUser, KnownEnrolment: schema version 5) are created on an
# upgraded box by create_tables(safe=True) in open_db.
MODELS = [Event, Secret, Course, Activity, Run, Setting, SyncRequest, LoginAttempt, BoxCourse, BoxActivity,
          Participant, Collected, ServerSeen, TwoWayConflict,
          KnownUser, KnownEnrolment, PendingAccount, BoxAccount, ProfileState]
