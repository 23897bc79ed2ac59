"""The queue: parsing, validation with the index and field named, atomic storage."""

import json
import sqlite3
import subprocess
import sys

import pytest

from agent.store.db import Event, Secret
from agent.store.schema import open_db
from agent.store.queue import EventError, enqueue, parse_events, validate_events
from tests.helpers import Box, keep_courses

GOOD = [
    {"type": "completion", "course_id": 2, "user": "student1", "cmid": 1, "completed": True},
    {"type": "grade", "course_id": 2, "user": "student1", "cmid": 3, "grade": 87.5, "feedback": "Well done"},
    {"type": "user", "user": "kid1", "firstname": "Kid", "lastname": "One", "email": "kid1@example.org",
     "idnumber": "K1", "password": "Sup3r#secret"},
    {"type": "enrolment", "course_id": 2, "user": "kid1", "role": "student"},
]


@pytest.fixture
def db(tmp_path):
    database = open_db(tmp_path / "agent.db")
    keep_courses(2)
    yield database
    database.close()


@pytest.mark.pure  # no database, no server
def test_parses_single_array_and_json_lines():
    one = json.dumps(GOOD[0])
    assert parse_events(one) == [GOOD[0]]
    assert parse_events(json.dumps(GOOD)) == GOOD
    assert parse_events("\n".join(json.dumps(e) for e in GOOD) + "\n") == GOOD


@pytest.mark.pure  # no database, no server
def test_bad_json_lines_name_the_line():
    with pytest.raises(EventError, match="line 2"):
        parse_events(json.dumps(GOOD[0]) + "\n{oops\n")


BAD = [
    ({"type": "homework"}, "type", "must be one of"),
    ({**GOOD[0], "course_id": "2"}, "course_id", "positive whole number"),
    ({**GOOD[0], "course_id": True}, "course_id", "positive whole number"),
    ({**GOOD[0], "cmid": -1}, "cmid", "positive whole number"),
    ({**GOOD[0], "completed": "yes"}, "completed", "true or false"),
    ({**GOOD[0], "user": "Student One"}, "user", "not a valid Moodle username"),
    ({**GOOD[0], "user": "x" * 101}, "user", "too long"),
    ({k: v for k, v in GOOD[0].items() if k != "user"}, "user", "is required"),
    ({**GOOD[0], "id": "x" * 65}, "id", "too long"),
    ({**GOOD[0], "time": "yesterday"}, "time", "ISO 8601"),
    ({**GOOD[0], "colour": "red"}, "colour", "not a field"),
    ({**GOOD[1], "grade": "A"}, "grade", "must be a number"),
    ({**GOOD[1], "grade": float("inf")}, "grade", "from 0 to"),
    ({**GOOD[1], "feedback": "x" * 10_001}, "feedback", "too long"),
    ({**GOOD[2], "email": "not-an-address"}, "email", "not a valid e-mail"),
    ({**GOOD[2], "firstname": ""}, "firstname", "must not be empty"),
    ({**GOOD[3], "role": "manager"}, "role", "must be one of"),
]


@pytest.mark.parametrize("bad, field, problem", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
@pytest.mark.pure  # no database, no server
def test_invalid_event_names_index_and_field(bad, field, problem):
    with pytest.raises(EventError) as err:
        validate_events([GOOD[0], bad])
    assert err.value.index == 1
    assert err.value.field == field
    assert problem in str(err.value)
    assert str(err.value).startswith("event 1: field ")


@pytest.mark.pure  # no database, no server
def test_limits():
    with pytest.raises(EventError, match="at most 10000"):
        validate_events([GOOD[0]] * 10_001)
    with pytest.raises(EventError, match="empty"):
        validate_events([])


def test_batch_is_stored_whole_and_ids_are_idempotent(db):
    events = validate_events([{**e, "id": f"e{i}"} for i, e in enumerate(GOOD)])
    assert enqueue(events).stored == 4
    again = enqueue(validate_events([{**GOOD[0], "id": "e0"}, {**GOOD[0], "id": "new"}]))
    assert (again.stored, again.duplicates) == (1, 1)
    assert Event.select().count() == 5
    # The password is kept apart from the event data and never in it.
    user = Event.get(Event.type == "user")
    assert "password" not in user.data
    assert Secret.get(Secret.event == user.id).password == "Sup3r#secret"


def test_cli_refuses_whole_batch_and_stores_nothing(tmp_path):
    box = Box(tmp_path, "http://127.0.0.1:9")
    box.keep_courses(2)
    assert box.enqueue(GOOD[:1]).returncode == 0
    for bad, field, _ in BAD:
        result = box.enqueue([GOOD[1], GOOD[3], bad])
        assert result.returncode == 2, result
        assert f"event 2: field '{field}'" in result.stderr
    result = box.enqueue("{not json")
    assert result.returncode == 2 and "not valid JSON" in result.stderr
    with sqlite3.connect(box.database) as conn:
        assert conn.execute("SELECT COUNT(*) FROM event").fetchone()[0] == 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_cli_reads_a_file_and_reports_duplicates(tmp_path):
    box = Box(tmp_path, "http://127.0.0.1:9")
    box.keep_courses(2)
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps({**e, "id": f"f{i}"}) for i, e in enumerate(GOOD)))
    assert box.cli("enqueue", str(path)).stdout.strip() == "queued 4 event(s)"
    assert box.cli("enqueue", str(path)).stdout.strip() == "queued 0 event(s), 4 already queued"
    assert box.status()["queued"] == 4


def test_enqueue_stops_reading_at_the_limit(tmp_path):
    """1 GB on standard input: refused with the limit, never read whole."""
    box = Box(tmp_path, "http://127.0.0.1:9")
    script = (
        "import resource, subprocess, sys\n"
        "child = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stderr=subprocess.PIPE)\n"
        "block = b'[' + b' ' * (1024 * 1024 - 1)\n"
        "try:\n"
        "    for _ in range(1024):\n"
        "        child.stdin.write(block)\n"
        "except BrokenPipeError:\n"
        "    pass\n"
        "child.stdin.close()\n"
        "err = child.stderr.read().decode()\n"
        "code = child.wait()\n"
        "peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(code, peak_kb, err.strip())\n")
    result = subprocess.run([sys.executable, "-c", script, *box.argv("enqueue", "-")], capture_output=True,
                            text=True, env=box.env(), timeout=300)
    code, peak_kb, message = result.stdout.split(" ", 2)
    assert int(code) == 2 and "input is larger than 20 MB" in message
    assert int(peak_kb) < 60 * 1024, f"peak RSS {int(peak_kb) // 1024} MB"
