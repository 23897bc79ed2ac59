"""The learner-event queue: parsing, validation and durable storage.

A batch of events is validated whole before anything is written, then stored
in one transaction: all of it or none of it. The same event id queued twice
is stored once.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

from ..clock import clock_is_sane
from ..config import AgentConfig, Config
from .db import Course, Event, Secret, database, first_column, iso, parse_iso, utcnow
from ..kinds import COMMON_FIELDS, KINDS, grade_value
from ..roles import ROLES
from .diskspace import DiskSpace, probed_disk_space

MAX_BATCH = 10_000
MAX_INPUT_BYTES = 20 * 1024 * 1024

USERNAME_RE = re.compile(r"^[a-z0-9_.@-]+$")  # Moodle's default username rule
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
KEY_RE = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces


class EventError(ValueError):
    """An invalid event; names the event's index in the batch and the field."""

    def __init__(self, problem: str, index: int | None = None, field: str | None = None):
        self.index, self.field, self.problem = index, field, problem
        where = []
        if index is not None:
            where.append(f"event {index}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(": ".join(where + [problem]))


class StorageFull(EventError):
    """Too little free space on the data filesystem: new events are refused
    (the events already queued are kept, and syncing still runs)."""

    def __init__(self, space: DiskSpace):
        self.space = space
        super().__init__(f"{space.shortage()}; new events are refused until space is freed "
                         "(queued events are kept and still sync)")


@dataclass
class NewEvent:
    key: str
    type: str
    username: str
    course_id: int | None = None
    cmid: int | None = None
    data: dict = field(default_factory=dict)
    event_time: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_events(text: str | bytes) -> list:
    """Read one JSON event, a JSON array of events, or JSON lines."""
    if isinstance(text, bytes):
        if len(text) > MAX_INPUT_BYTES:
            raise EventError(f"input is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MB")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventError(f"input is not UTF-8 (byte {exc.start})") from None
    stripped = text.strip()
    if not stripped:
        raise EventError("no events given (empty input)")
    try:
        value = _loads(stripped)
    except json.JSONDecodeError as whole:
        # Not one document: try JSON lines, naming the first bad line. Only
        # "\n" ends a line: splitlines() would also cut at U+2028 and the like,
        # which JSON allows unescaped inside strings.
        items = []
        for lineno, line in enumerate(stripped.split("\n"), 1):
            if not line.strip():
                continue
            try:
                items.append(_loads(line))
            except json.JSONDecodeError as exc:
                if lineno == 1:
                    raise EventError(f"not valid JSON: {whole.msg} at line {whole.lineno} column {whole.colno}") from None
                raise EventError(f"not valid JSON on line {lineno}: {exc.msg} at column {exc.colno}") from None
        return items
    if isinstance(value, list):
        return value
    return [value]


def _loads(text: str) -> Any:
    """json.loads, with its other failures (nesting deeper than the
    interpreter's stack, integers of thousands of digits) as EventError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise EventError("not valid JSON: nested too deeply") from None
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError):
            raise
        raise EventError("not valid JSON: a number has too many digits") from None


def _shown(value: Any) -> str:
    """A bad value, short, for an error message."""
    if isinstance(value, (list, dict)):
        return "an array" if isinstance(value, list) else "an object"
    return json.dumps(value)[:40]


def _int(item: dict, name: str, index: int, required: bool = True) -> int | None:
    value = item.get(name)
    if value is None:
        if required:
            raise EventError("is required", index, name)
        return None
    # bool is an int in Python; a JSON true is not a course id.
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventError(f"must be a positive whole number, got {_shown(value)}", index, name)
    if not 1 <= value <= 2**53:
        raise EventError(f"must be a positive whole number, got {value}", index, name)
    return value


def _str(item: dict, name: str, index: int, max_len: int, required: bool = True,
         pattern: re.Pattern | None = None, what: str = "") -> str | None:
    value = item.get(name)
    if value is None:
        if required:
            raise EventError("is required", index, name)
        return None
    if not isinstance(value, str):
        raise EventError(f"must be a string, got {_shown(value)}", index, name)
    if required and not value.strip():
        raise EventError("must not be empty", index, name)
    if len(value) > max_len:
        raise EventError(f"is too long ({len(value)} characters, at most {max_len})", index, name)
    if any(ord(c) < 32 and c not in "\t\n\r" for c in value):
        raise EventError("contains control characters", index, name)
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):  # JSON's "\ud800": not storable as UTF-8
        raise EventError("contains a lone surrogate (not valid Unicode)", index, name)
    # fullmatch: re's "$" also matches before a final newline.
    if pattern is not None and not pattern.fullmatch(value):
        raise EventError(f"is not a valid {what}: {value[:40]!r}", index, name)
    return value


def _time(item: dict, index: int) -> str | None:
    value = item.get("time")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise EventError("must be an ISO 8601 date and time string", index, "time")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise EventError(f"is not an ISO 8601 date and time: {value!r}", index, "time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)  # apps on the box stamp UTC
    try:
        return iso(dt)
    except OverflowError:  # year 1 or 9999 moved out of range by its UTC offset
        raise EventError(f"is out of range: {value!r}", index, "time") from None


# The fields each kind of event may hold: from the kinds table (agent/kinds.py).
FIELDS = {k.name: COMMON_FIELDS | k.fields for k in KINDS.values()}


def validate_event(item: Any, index: int) -> NewEvent:
    if not isinstance(item, dict):
        raise EventError(f"must be a JSON object, got {type(item).__name__}", index)
    etype = item.get("type")
    if not isinstance(etype, str) or etype not in FIELDS:
        allowed = ", ".join(sorted(FIELDS))
        raise EventError(f"must be one of {allowed}, got {_shown(etype)}", index, "type")
    unknown = sorted(set(item) - FIELDS[etype])
    if unknown:
        raise EventError(f"is not a field of a {etype} event", index, unknown[0])
    key = _str(item, "id", index, 64, required=False, pattern=KEY_RE, what="id (printable, no spaces)")
    username = _str(item, "user", index, 100, pattern=USERNAME_RE,
                    what="Moodle username (lowercase letters, digits, _ . @ -)")
    event = NewEvent(key=key or uuid.uuid4().hex, type=etype, username=str(username),
                     event_time=_time(item, index))
    kind = KINDS[etype]
    if kind.in_course:
        event.course_id = _int(item, "course_id", index)
    if kind.on_activity:
        event.cmid = _int(item, "cmid", index)
    kind.validate()(item, index, event)
    return event


# Each kind's own fields, into event.data (the kinds table names these).

def check_completion(item: dict, index: int, event: NewEvent) -> None:
    completed = item.get("completed")
    if not isinstance(completed, bool):
        raise EventError("must be true or false", index, "completed")
    event.data = {"completed": completed}


def check_grade(item: dict, index: int, event: NewEvent) -> None:
    grade = item.get("grade")
    value = grade_value(grade)
    if value is None and not isinstance(grade, float):  # NaN and Infinity are out of range
        raise EventError("must be a number", index, "grade")
    if value is None or not 0 <= value <= 1_000_000:
        raise EventError(f"must be a number from 0 to 1000000, got {grade}", index, "grade")
    event.data = {"grade": grade}
    feedback = _str(item, "feedback", index, 10_000, required=False)
    if feedback is not None:
        event.data["feedback"] = feedback


def check_user(item: dict, index: int, event: NewEvent) -> None:
    data: dict[str, Any] = {}
    data["firstname"] = _str(item, "firstname", index, 100)
    data["lastname"] = _str(item, "lastname", index, 100)
    data["email"] = _str(item, "email", index, 100, pattern=EMAIL_RE, what="e-mail address")
    idnumber = _str(item, "idnumber", index, 255, required=False)
    if idnumber is not None:
        data["idnumber"] = idnumber
    event.data = data
    event.password = _str(item, "password", index, 255, required=False)


def check_enrolment(item: dict, index: int, event: NewEvent) -> None:
    role = item.get("role", "student")
    if not isinstance(role, str) or role not in ROLES:
        raise EventError(f"must be one of {', '.join(ROLES)}, got {_shown(role)}", index, "role")
    event.data = {"role": role}


def validate_events(items: list) -> list[NewEvent]:
    if not isinstance(items, list):
        raise EventError("must be a JSON array of events")
    if not items:
        raise EventError("no events given (empty batch)")
    if len(items) > MAX_BATCH:
        raise EventError(f"too many events in one batch: {len(items)} (at most {MAX_BATCH})")
    return [validate_event(item, i) for i, item in enumerate(items)]


@dataclass
class EnqueueResult:
    received: int
    stored: int

    @property
    def duplicates(self) -> int:
        return self.received - self.stored


_INSERT_FIELDS = (Event.key, Event.type, Event.course_id, Event.username, Event.cmid, Event.data, Event.event_time,
                  Event.clock_suspect, Event.queued_at, Event.status, Event.attempts)
_INSERT_SQL = 'INSERT OR IGNORE INTO "{}" ({}) VALUES ({})'.format(
    Event._meta.table_name, ", ".join(f'"{f.column_name}"' for f in _INSERT_FIELDS), ", ".join("?" * len(_INSERT_FIELDS)))


def check_storage(config: Config | None = None) -> None:
    """Raise StorageFull when the database's filesystem is under its budget.
    Without a config the defaults apply: the budget is never skipped."""
    agent = config.agent if config is not None else AgentConfig()
    space = probed_disk_space(Path(database.obj.database).parent, agent)
    if space.full:
        raise StorageFull(space)


def check_courses_kept(events: list[NewEvent]) -> None:
    """An event for a course the box does not keep could never be synced:
    refused at the door, not left to stop every later sync."""
    kept = set(first_column(Course.select(Course.id)))
    for index, e in enumerate(events):
        if e.course_id is not None and e.course_id not in kept:
            raise EventError(f"course {e.course_id} is not kept on this box "
                             f"(moodle-sync-agent courses add {e.course_id})", index, "course_id")


def read_input(stream: BinaryIO) -> bytes:
    """Read a batch of events, stopping at the size limit: a gigabyte on
    standard input costs no more memory than the limit."""
    data = stream.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise EventError(f"input is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MB")
    return data


def enqueue(events: list[NewEvent], now: datetime | None = None, *, config: Config | None = None) -> EnqueueResult:
    """Store a validated batch in one transaction; duplicates (by id) are skipped.
    Raises StorageFull, before writing anything, when storage is under budget."""
    check_storage(config)
    now = now or utcnow()
    queued_at = iso(now)
    suspect = not clock_is_sane(now)
    rows = [
        (e.key, e.type, e.course_id, e.username, e.cmid, Event.data.db_value(e.data), e.event_time or queued_at,
         suspect, queued_at, Event.QUEUED, 0)
        for e in events
    ]
    # A password belongs to the first event with its id, and only if this
    # batch creates that event: a duplicate never gives another event its password.
    first: dict[str, NewEvent] = {}
    for e in events:
        first.setdefault(e.key, e)
    secrets = {key: e.password for key, e in first.items() if e.password}
    db = database.obj
    with db.atomic("IMMEDIATE"):  # read, then write: see handoff.request_sync
        check_courses_kept(events)
        existing: set[str] = set()
        for keys in _chunks(list(secrets)):
            existing.update(first_column(Event.select(Event.key).where(Event.key.in_(keys))))
        # One prepared statement for every row: building multi-row INSERTs
        # with the query builder took longer than SQLite took to write them.
        cursor = db.cursor()
        cursor.executemany(_INSERT_SQL, rows)
        stored = cursor.rowcount  # rows inserted; duplicates ignored count 0
        for keys in _chunks([k for k in secrets if k not in existing]):
            for ev in Event.select(Event.id, Event.key).where(Event.key.in_(keys)):
                Secret.insert(event=ev.id, password=secrets[ev.key]).on_conflict_ignore().execute()
    return EnqueueResult(received=len(events), stored=stored)


def _chunks(items: list, size: int = 500) -> Iterator[list]:
    """Slices small enough for SQLite's variable limit on old builds."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


# A measured offset smaller than this is the network's delay, not a wrong clock.
MIN_CLOCK_CORRECTION_S = 60.0


def correct_event_times(offset_s: float | None) -> int:
    """Shift the time of queued events stamped while the clock was unknown by
    the offset just measured against the server (its Date header minus our
    clock). Valid while our clock is still as wrong as when they were stamped,
    which is the case a box without RTC and without a time server is in; once
    a time server corrected the clock the offset is ~0 and they stay flagged.
    The stamp is kept as ``data.time_as_stamped``, which also makes this run
    at most once per event. Returns how many were corrected."""
    if offset_s is None or abs(offset_s) < MIN_CLOCK_CORRECTION_S:
        return 0
    corrected = 0
    with database.obj.atomic("IMMEDIATE"):  # read, then write: see handoff.request_sync
        for e in Event.select().where(Event.status == Event.QUEUED, Event.clock_suspect == True):  # noqa: E712
            if "time_as_stamped" in e.data or not e.event_time:
                continue
            e.data = {**e.data, "time_as_stamped": e.event_time}
            stamped = parse_iso(e.event_time)
            assert stamped is not None  # checked above
            e.event_time = iso(stamped + timedelta(seconds=offset_s))
            e.save()
            corrected += 1
    return corrected


def count_by_status() -> dict[str, int]:
    """Events per status, from the counters the database keeps (see db.py)."""
    counts = {s: 0 for s in (Event.QUEUED, Event.SENT, Event.CONFLICT, Event.DISCARDED)}
    for status, n in database.obj.execute_sql("SELECT status, n FROM event_count"):
        counts[status] = n
    return counts


def conflict_dicts(limit: int | None = None) -> list[dict]:
    query = Event.select().where(Event.status == Event.CONFLICT).order_by(Event.id)
    if limit is not None:
        query = query.limit(limit)
    return [
        {"id": e.id, "key": e.key, "type": e.type, "user": e.username, "course_id": e.course_id,
         "cmid": e.cmid, "reason": e.last_error, "queued_at": e.queued_at}
        for e in query
    ]


def set_conflicts(ids: Iterable[int] | None, status: str) -> int:
    """Retry (back to the queue) or discard conflicts by id, or all of them
    (ids None); returns how many changed."""
    query = (Event.update(status=status, last_error=None if status == Event.QUEUED else Event.last_error)
             .where(Event.status == Event.CONFLICT))
    if ids is not None:
        query = query.where(Event.id.in_(list(ids)))
    with database.obj.atomic():
        return query.execute()

