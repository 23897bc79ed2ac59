"""The table of reasons (agent/reasons.py): what ended a run or what it left
to look at, as a code with values, and the English words the command line
and the e-mail print."""

from __future__ import annotations

import json
import sqlite3

import pytest

from agent import reasons
from agent.moodle import MoodleError, TokenRejected, Unreachable
from agent.runs import Interrupted, reason_of
from agent.store.diskspace import DiskSpace
from agent.store.queue import StorageFull
from tests.helpers import Box


@pytest.mark.parametrize("exc, kind, expected", [
    (TokenRejected("invalidtoken", "Invalid token"), "sync", {"code": "token_rejected"}),
    (TokenRejected("invalidtoken", "Invalid token"), "collect", {"code": "box_token_rejected"}),
    (Unreachable("cannot reach h: refused"), "sync", {"code": "server_unreachable"}),
    (Unreachable("h answered with an HTML page, not Moodle's JSON", "captive_portal"), "sync",
     {"code": "captive_portal"}),
    (Unreachable("h redirected to http://portal/ (captive portal or wrong URL)", "redirect"), "verify",
     {"code": "captive_portal"}),
    (Unreachable("127.0.0.1:28081 answered HTTP 503", "server"), "sync", {"code": "server_busy", "status": "503"}),
    (Unreachable("h answered HTTP 503", "server", retry_after=120.0), "verify",
     {"code": "server_retry_after", "wait": 120}),
    (Unreachable("h answered HTTP 503", "server"), "collect", {"code": "box_down"}),
    (MoodleError("nopermissions", "No permission", "core_x"), "sync", {"code": "server_refused"}),
    (Interrupted(), "sync", {"code": "interrupted"}),
    (RuntimeError("database or disk is full"), "sync", {"code": "disk_full"}),
    (StorageFull(DiskSpace("/var/lib/x", 10**9, 10**6, 10**8)), "collect", {"code": "disk_full"}),
    (KeyError("oops"), "sync", {"code": "internal"}),
])
def test_what_ended_a_run_has_its_reason(exc, kind, expected):
    assert reason_of(exc, kind) == expected
    sentence, advice = reasons.words(expected)
    assert sentence and advice and "{" not in sentence


def test_the_english_words_count_and_fill_in():
    assert reasons.words({"code": "conflicts", "n": 1})[0] == "1 event could not be applied and waits as a conflict."
    assert reasons.words({"code": "conflicts", "n": 3})[0] == "3 events could not be applied and wait as conflicts."
    assert reasons.words({"code": "server_busy", "status": "503"})[0] == \
        "The school's Moodle is busy or under maintenance (it answered HTTP 503)."
    assert reasons.words({"code": "no_such_code"})[0] == reasons.TABLE["internal"].sentence
    assert all(r.warning == r.code.startswith(("box_", "collection", "course_", "conflicts", "clock"))
               for r in reasons.TABLE.values())


def test_the_command_line_says_what_to_do_and_json_gives_the_codes(tmp_path, simulator):
    box = Box(tmp_path, simulator.url)
    assert box.cli("courses", "add", "C1").returncode == 0
    simulator.faults.set(reject_token=True)
    result = box.cli("sync")
    assert result.returncode == 1
    assert "why: The school's Moodle rejected the box's token.\n    what to do: Ask the Moodle administrator" \
        in result.stdout, result.stdout
    [run] = json.loads(box.cli("history", "--json", "--limit", "1").stdout)
    assert run["status"] == "failed" and run["reasons"] == [{"code": "token_rejected"}]
    simulator.faults.clear()
    simulator.stop()
    result = box.cli("sync")
    assert result.returncode == 3 and "why: The school's Moodle could not be reached." in result.stdout
    with sqlite3.connect(box.database) as db:  # stored as codes, never as words
        stored = db.execute("SELECT reasons FROM syncrun ORDER BY started_at DESC LIMIT 1").fetchone()[0]
    assert json.loads(stored) == [{"code": "server_unreachable"}]


def test_a_run_stores_its_warnings_when_it_ends_and_an_older_row_still_has_them(tmp_path, config):
    """The page's status poll reads them from the row: no query for its collection's reasons."""
    from agent.runs import recorded_run
    from agent.store import history
    from agent.store.db import Run, database
    from agent.store.schema import open_db

    open_db(config.agent.database)
    try:
        box = Run.create(kind="collect", trigger="sync", status=Run.COMPLETED_WITH_ERRORS,
                         started_at="2026-11-01T10:00:00Z", reasons=[{"code": "box_token_rejected"}])
        with recorded_run(config, "sync", "cli", ["completions"]) as record:
            record.row.collected = {"run": box.id, "status": Run.COMPLETED_WITH_ERRORS}
            record.row.conflicts = 2
        row = Run.get_by_id(record.row.id)
        expected = [{"code": "box_token_rejected"}, {"code": "conflicts", "n": 2}]
        assert row.status == Run.COMPLETED_WITH_WARNINGS and row.warnings == expected
        queries: list[str] = []
        database.obj.connection().set_trace_callback(queries.append)
        assert history.run_dict(row)["reasons"] == expected
        database.obj.connection().set_trace_callback(None)
        assert not [q for q in queries if "syncrun" in q], queries
        Run.update(warnings=None).where(Run.id == row.id).execute()  # a row from before version 11
        assert history.run_dict(Run.get_by_id(row.id))["reasons"] == expected
    finally:
        database.obj.close()
