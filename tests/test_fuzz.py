"""Fuzzed input: property-based tests on the event parser, validator and queue
(real SQLite on disk) and on the page's ``POST /api/v1/events``.

Properties, for every generated body, valid or not:
- the only exception is EventError (the API: never a 500);
- a refusal names the field that is wrong (or the input as a whole when it
  is not a list of JSON objects);
- a refused body stores nothing; an accepted body stores every event, once.

Each property runs at once on a set number of generated bodies, counted, so
a test fails if hypothesis ran fewer than promised (10,000 in all).
"""

from __future__ import annotations

import json
import math
import string
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.store.db import Event, Secret, database, iso
from agent.store.schema import open_db
from agent.store.queue import FIELDS, MAX_BATCH, EventError, enqueue, parse_events, validate_events
from agent.roles import ROLES
from tests.helpers import keep_courses

ALL_FIELDS = set().union(*FIELDS.values())
FUZZ = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))

# -- valid events ------------------------------------------------------------

ids = st.integers(1, 2**53)
# The courses the box keeps: an event for any other is refused (tested in test_sync).
COURSE_IDS = (2, 3, 4)
course_ids = st.sampled_from(COURSE_IDS)
usernames = st.text(string.ascii_lowercase + string.digits + "_.@-", min_size=1, max_size=30)
keys = st.text("".join(map(chr, range(0x21, 0x7f))), min_size=1, max_size=64)
# Any text a person might type: no control characters but tab/CR/LF, no lone surrogates.
free_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\t\n\r\u2028\x85"),
                    max_size=30)
names = free_text.filter(lambda s: s.strip()).map(lambda s: s[:100])
emails = st.builds("{}@{}.{}".format, st.text(string.ascii_lowercase + "._%+-", min_size=1, max_size=12),
                   st.text(string.ascii_lowercase + "-", min_size=1, max_size=12),
                   st.text(string.ascii_lowercase, min_size=2, max_size=6))
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
times = st.builds(lambda dt, tz, z: dt.replace(tzinfo=tz).isoformat().replace("+00:00", "Z" if z else "+00:00"),
                  st.datetimes(datetime(1971, 1, 1), datetime(2100, 1, 1)), offsets, st.booleans()) \
    | st.datetimes(datetime(1971, 1, 1), datetime(2100, 1, 1)).map(lambda dt: dt.isoformat())
grades = st.integers(0, 1_000_000) | st.floats(0, 1_000_000, allow_nan=False)


def optional(**fields):
    """Each key present or absent, independently."""
    return st.fixed_dictionaries({}, optional=fields)


def event_of(etype: str, required: dict, extra: dict):
    return st.builds(lambda r, o: {"type": etype, **r, **o}, st.fixed_dictionaries(required),
                     optional(id=keys, time=times, **extra))


valid_events = st.one_of(
    event_of("completion", {"course_id": course_ids, "user": usernames, "cmid": ids, "completed": st.booleans()}, {}),
    event_of("grade", {"course_id": course_ids, "user": usernames, "cmid": ids, "grade": grades},
             {"feedback": free_text}),
    event_of("user", {"user": usernames, "firstname": names, "lastname": names, "email": emails},
             {"idnumber": free_text, "password": free_text.filter(lambda s: s.strip())}),
    event_of("enrolment", {"course_id": course_ids, "user": usernames}, {"role": st.sampled_from(sorted(ROLES))}),
)

# -- one wrong field ---------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                                          max_size=4), max_leaves=8)
not_str = json_values.filter(lambda v: v is not None and not isinstance(v, str))
not_int = json_values.filter(lambda v: v is not None and (isinstance(v, bool) or not isinstance(v, int)))
control = st.sampled_from([chr(c) for c in range(32) if chr(c) not in "\t\n\r"])
surrogate = st.integers(0xD800, 0xDFFF).map(chr)


def spoiled(base: st.SearchStrategy[str], bad_char: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A valid string with one bad character put somewhere in it."""
    return st.builds(lambda s, c, i: s[:i % (len(s) + 1)] + c + s[i % (len(s) + 1):], base, bad_char,
                     st.integers(0, 200))


def too_long(n: int) -> st.SearchStrategy[str]:
    return st.integers(n + 1, n + 50).map(lambda k: "x" * k)


bad_text = not_str | spoiled(names, control | surrogate)
bad_username = st.one_of(
    not_str, st.just(""), st.sampled_from([" ", "\t"]), too_long(100),
    spoiled(usernames, st.sampled_from(list(string.ascii_uppercase + " #$%&*/\\:;,!?\n") + ["é", "\u00a0"])),
    usernames.map(lambda u: u + "\n"),
)
bad_time = st.one_of(
    not_str, too_long(40), st.text(string.ascii_letters + " :-", min_size=1, max_size=30),
    st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2024-13-01T00:00:00Z",
                     "2024-01-01T00:00:00+25:00", "2024-02-30", ""]),
)
bad_int = st.one_of(not_int, st.integers(max_value=0), st.integers(min_value=2**53 + 1))
BAD_VALUES = {
    "id": st.one_of(not_str, too_long(64), st.just(""), spoiled(keys, st.sampled_from([" ", "é", "\n", "\x00"])),
                    keys.map(lambda k: k[:63] + "\n")),
    "user": bad_username,
    "time": bad_time,
    "course_id": bad_int,
    "cmid": bad_int,
    "completed": json_values.filter(lambda v: not isinstance(v, bool)),
    "grade": st.one_of(json_values.filter(lambda v: isinstance(v, bool) or not isinstance(v, (int, float))),
                       st.floats(max_value=-1e-9), st.floats(min_value=1_000_000.001),
                       st.sampled_from([math.nan, math.inf, -math.inf])),
    "feedback": st.one_of(bad_text, too_long(10_000)),
    "firstname": st.one_of(bad_text, too_long(100), st.sampled_from(["", "   "])),
    "lastname": st.one_of(bad_text, too_long(100), st.sampled_from(["", "\n"])),
    "email": st.one_of(not_str, too_long(100), st.sampled_from(["", "kid", "kid@", "@x.org", "a b@c.de", "a@b"]),
                       emails.map(lambda e: e + "\n")),
    "idnumber": st.one_of(bad_text, too_long(255)),
    "password": st.one_of(bad_text, too_long(255)),
    "role": json_values.filter(lambda v: v is not None and not (isinstance(v, str) and v in ROLES)),
    "type": json_values.filter(lambda v: v is not None and not (isinstance(v, str) and v in FIELDS)),
}
REQUIRED = {
    "completion": ["course_id", "user", "cmid", "completed"],
    "grade": ["course_id", "user", "cmid", "grade"],
    "user": ["user", "firstname", "lastname", "email"],
    "enrolment": ["course_id", "user"],
}


@st.composite
def one_wrong_field(draw) -> tuple[list[dict], int, str]:
    """A batch of valid events, one of which has exactly one wrong field."""
    batch = draw(st.lists(valid_events, min_size=1, max_size=3))
    index = draw(st.integers(0, len(batch) - 1))
    event = dict(batch[index])
    how = draw(st.sampled_from(["value", "missing", "unknown"]))
    if how == "missing":
        name = draw(st.sampled_from(["type"] + REQUIRED[event["type"]]))
        del event[name]
    elif how == "unknown":
        name = draw(st.text(max_size=12).filter(lambda k: k not in FIELDS[event["type"]]))
        event[name] = draw(json_values)
    else:
        name = draw(st.sampled_from(sorted(FIELDS[event["type"]])))
        event[name] = draw(BAD_VALUES[name])
    batch[index] = event
    return batch, index, name


# -- bodies ------------------------------------------------------------------

def encode(draw, batch: list, utf8: bool = False) -> str | bytes:
    """As a JSON array, a single object, or JSON lines; as text or bytes.
    ``utf8``: always valid UTF-8 bytes (a lone surrogate escaped), as HTTP sends."""
    how = draw(st.sampled_from(["array", "lines", "single"] if len(batch) == 1 else ["array", "lines"]))
    if how == "array":
        text = json.dumps(batch, ensure_ascii=utf8 or draw(st.booleans()), indent=draw(st.sampled_from([None, 1])))
    elif how == "lines":
        text = "\n".join(json.dumps(e, ensure_ascii=utf8 or draw(st.booleans())) for e in batch) + draw(
            st.sampled_from(["", "\n", "\n\n"]))
    else:
        text = json.dumps(batch[0])
    text = draw(st.sampled_from(["", " ", "\n"])) + text
    if utf8 or draw(st.booleans()):
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, left raw: not UTF-8, so send it as text
            pass
    return text


@st.composite
def valid_bodies(draw) -> tuple[str | bytes, list[dict]]:
    batch = draw(st.lists(valid_events, min_size=1, max_size=6))
    if draw(st.integers(0, 4)) == 0 and any("id" in e for e in batch):
        batch.append(dict(draw(st.sampled_from([e for e in batch if "id" in e]))))  # a duplicate
    return encode(draw, batch), batch


@st.composite
def junk_bodies(draw) -> str | bytes:
    """Anything at all: random bytes and text, arbitrary JSON, event-shaped
    objects with arbitrary values, cut-off or deeply nested documents."""
    kind = draw(st.integers(0, 6))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return draw(st.text(max_size=200))
    if kind == 2:
        return json.dumps(draw(json_values))
    if kind == 3:
        shaped = st.dictionaries(st.sampled_from(sorted(ALL_FIELDS)), json_values, max_size=9)
        typed = st.builds(lambda d, t: {**d, "type": t}, shaped, st.sampled_from(sorted(FIELDS)))
        return encode(draw, draw(st.lists(shaped | typed | valid_events, min_size=1, max_size=4)))
    if kind == 4:
        body = encode(draw, draw(st.lists(valid_events, min_size=1, max_size=4)))
        cut = draw(st.integers(0, len(body)))
        return body[:cut]
    if kind == 5:
        depth = draw(st.integers(1, 5000))
        return draw(st.sampled_from(['{"type":%s}', "[%s]", '[{"type":"user","user":%s}]'])) % (
            "[" * depth + "]" * depth)
    return draw(st.sampled_from(["1" * 5000, "[" + "9" * 4400 + "]", '{"type":"grade","grade":1e999}', "NaN",
                                 "[]", "{}", "null", "\n\n", "[" + "{}," * (MAX_BATCH) + "{}]"]))


# -- the queue ---------------------------------------------------------------

def examples(n: int, *strategies):
    """Run the decorated property at once on ``n`` generated examples, and
    fail if hypothesis ran fewer (the count of bodies is part of the proof)."""
    def run(prop):
        ran = []

        @settings(max_examples=n, **FUZZ)
        @given(st.tuples(*strategies))
        def counted(args):
            ran.append(1)
            prop(*args)

        counted()
        assert len(ran) >= n, f"hypothesis ran {len(ran)} examples, not {n}"
    return run


def without_fsync() -> None:
    """What is stored is the question here, not whether it survives a power
    cut (the crash matrix asks that): skip the fsyncs, 20 ms per example."""
    database.obj.execute_sql("PRAGMA synchronous = OFF")


@pytest.fixture
def db(tmp_path):
    database_ = open_db(tmp_path / "agent.db")
    keep_courses(*COURSE_IDS)
    without_fsync()
    yield database_
    database_.close()


def empty_queue() -> None:
    with database.obj.atomic():
        Secret.delete().execute()
        Event.delete().execute()


def stored() -> tuple[int, int]:
    return Event.select().count(), Secret.select().count()


def submit(body: str | bytes):
    """The whole path a body takes on the box: parse, validate, store."""
    return enqueue(validate_events(parse_events(body)))


def assert_names_the_problem(exc: EventError, body: str | bytes) -> None:
    assert exc.problem and str(exc), exc
    if exc.field is not None:
        assert exc.index is not None and isinstance(exc.field, str), str(exc)
        return
    if exc.index is None and exc.problem.startswith("not valid JSON"):
        return  # how deep a document may be nested depends on the stack: the input as a whole
    try:
        items = parse_events(body)
    except EventError:
        return  # not JSON, not UTF-8, empty, too large: the input as a whole
    if exc.index is None:  # the batch as a whole: empty or too big
        assert not items or len(items) > MAX_BATCH, exc
    else:  # the event as a whole: not an object
        assert not isinstance(items[exc.index], dict), exc


def expected_row(event: dict) -> dict:
    data = {k: event[k] for k in ("completed", "grade", "feedback", "firstname", "lastname", "email", "idnumber")
            if k in event}
    if event["type"] == "enrolment":
        data["role"] = event.get("role", "student")
    return {"type": event["type"], "username": event["user"], "course_id": event.get("course_id"),
            "cmid": event.get("cmid"), "data": data, "status": "queued"}


def expected_rows(batch: list[dict]) -> list[dict]:
    """What the queue must hold: each event once (the first with its id)."""
    rows, ids = [], set()
    for e in batch:
        if "id" in e:
            if e["id"] in ids:
                continue
            ids.add(e["id"])
        data = {k: e[k] for k in ("completed", "grade", "feedback", "firstname", "lastname", "email", "idnumber")
                if k in e}
        if e["type"] == "enrolment":
            data["role"] = e.get("role", "student")
        when = None
        if "time" in e:
            dt = datetime.fromisoformat(e["time"].replace("Z", "+00:00"))
            when = iso(dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc))
        rows.append({"key": e.get("id"), "type": e["type"], "username": e["user"], "course_id": e.get("course_id"),
                     "cmid": e.get("cmid"), "data": data, "time": when, "password": e.get("password")})
    return rows


def queue_rows(batch: list[dict]) -> list[dict]:
    secrets = {s.event_id: s.password for s in Secret.select()}
    given_ids = {e["id"] for e in batch if "id" in e}
    rows = []
    for r in Event.select():
        assert r.status == "queued" and r.attempts == 0
        rows.append({"key": r.key if r.key in given_ids else None, "type": r.type, "username": r.username,
                     "course_id": r.course_id, "cmid": r.cmid, "data": r.data, "time": r.event_time,
                     "password": secrets.get(r.id)})
    return rows


def canonical(rows: list[dict]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in rows)


def test_valid_bodies_are_stored_whole_and_once(db):
    @examples(1500, valid_bodies())
    def prop(generated):
        body, batch = generated
        empty_queue()
        result = submit(body)
        want = expected_rows(batch)
        assert (result.received, result.stored) == (len(batch), len(want))
        [(queued_at,)] = Event.select(Event.queued_at).distinct().tuples()
        for row in want:  # an event without a time is stamped with the time it was queued
            row["time"] = row["time"] or queued_at
        assert canonical(queue_rows(batch)) == canonical(want)


def test_one_wrong_field_is_named_and_nothing_is_stored(db):
    @examples(2500, one_wrong_field(), st.data())
    def prop(generated, data):
        batch, index, name = generated
        body = encode(data.draw, batch)
        empty_queue()
        with pytest.raises(EventError) as caught:
            submit(body)
        assert (caught.value.index, caught.value.field) == (index, name), (caught.value, batch[index])
        assert stored() == (0, 0)


def test_any_input_is_refused_cleanly_or_stored_whole(db):
    @examples(2500, junk_bodies())
    def prop(body):
        empty_queue()
        try:
            result = submit(body)
        except EventError as exc:
            assert_names_the_problem(exc, body)
            assert stored() == (0, 0)
            return
        assert result.stored == stored()[0] and result.stored >= 1


# -- POST /api/v1/events -----------------------------------------------------

@pytest.fixture
def client(tmp_path):
    from tests.helpers import API_KEY, write_config
    from webui import create_app

    app = create_app(write_config(tmp_path))
    keep_courses(*COURSE_IDS)
    without_fsync()
    client_ = app.test_client()
    client_.headers = {"Authorization": f"Bearer {API_KEY}"}
    yield client_
    database.obj.close()


def post_events(client, body: str | bytes):
    if isinstance(body, str):  # a lone surrogate goes out as the bytes a careless client sends
        body = body.encode("utf-8", "surrogatepass")
    answer = client.post("/api/v1/events", data=body, headers=client.headers, content_type="application/json")
    assert answer.status_code in (201, 400, 413), (answer.status_code, answer.get_data()[:300])
    assert answer.mimetype == "application/json"
    return answer, answer.get_json()


def test_api_takes_any_body_whole_or_refuses_it_naming_the_field(client):
    @examples(2000, junk_bodies() | valid_bodies().map(lambda generated: generated[0]))
    def prop(body):
        empty_queue()
        answer, reply = post_events(client, body)
        if answer.status_code == 201:
            assert reply["stored"] == stored()[0] >= 1
            return
        assert stored() == (0, 0)
        assert reply["error"]
        if answer.status_code == 400:
            exc = EventError(reply["error"], reply["index"], reply["field"])
            assert_names_the_problem(exc, body)


def test_api_names_the_one_wrong_field(client):
    @examples(1500, one_wrong_field(), st.data())
    def prop(generated, data):
        batch, index, name = generated
        empty_queue()
        answer, reply = post_events(client, encode(data.draw, batch, utf8=True))
        assert answer.status_code == 400
        assert (reply["index"], reply["field"]) == (index, name), (reply, batch[index])
        assert stored() == (0, 0)
