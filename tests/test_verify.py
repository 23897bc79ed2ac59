"""verify: read back what the server holds, queue again what it lost, against the simulator."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest

from agent.config import load_config
from agent.runs import run_lock
from tests.helpers import Box, control, stats, sync

STUDENTS = {"student1": 3, "student2": 4, "student3": 5}
C1, C2 = 2, 3


def learning_events() -> list[dict]:
    events = []
    for i, user in enumerate(STUDENTS, 1):
        events += [
            {"type": "completion", "id": f"{user}-c1", "course_id": C1, "user": user, "cmid": 1, "completed": True},
            {"type": "completion", "id": f"{user}-c2", "course_id": C1, "user": user, "cmid": 2, "completed": True},
            {"type": "grade", "id": f"{user}-g3", "course_id": C1, "user": user, "cmid": 3, "grade": 50 + i},
            {"type": "completion", "id": f"{user}-c4", "course_id": C2, "user": user, "cmid": 4, "completed": True},
            {"type": "grade", "id": f"{user}-g6", "course_id": C2, "user": user, "cmid": 6, "grade": 70.25 + i},
        ]
    return events


@pytest.fixture
def box(tmp_path, simulator):
    box = Box(tmp_path, simulator.url)
    assert box.cli("courses", "add", "C1", "C2").returncode == 0
    assert box.enqueue(learning_events()).returncode == 0
    code, run, err = sync(box)
    assert code == 0 and run["actions"]["completions"] == 9 and run["actions"]["grades"] == 6, (run, err)
    return box


def verify(box, *args):
    result = box.cli("verify", "--json", *args)
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else None, result.stderr


def queued_keys(box) -> set[str]:
    with sqlite3.connect(box.database) as db:
        return {key for (key,) in db.execute("SELECT key FROM event WHERE status = 'queued'")}


def test_nothing_lost_nothing_queued_again(box, simulator):
    before = stats(simulator)
    code, run, err = verify(box)
    assert code == 0, err
    assert (run["kind"], run["trigger"]) == ("verify", "cli") and run["status"] == "completed" and run["errors"] == []
    assert run["actions"] == {"checked": 15, "matching": 15, "requeued": 0, "not_checked": 0}
    assert [c["outcome"] for c in run["courses"]] == ["9 checked, 9 matching, 0 queued again",
                                                     "6 checked, 6 matching, 0 queued again"]
    assert queued_keys(box) == set()
    # Read per course and user, batched: 3 users x 2 courses x (completions + grades) in one request.
    after = stats(simulator)
    calls = {k: after["calls"].get(k, 0) - before["calls"].get(k, 0) for k in after["calls"]}
    assert calls["core_completion_get_activities_completion_status"] == 6
    assert calls["gradereport_user_get_grade_items"] == 6
    assert after["batches"] - before["batches"] == 1
    assert calls.get("core_completion_override_activity_completion_status", 0) == 0  # verify only reads
    assert box.history(1)[0]["id"] == run["id"]  # in the history like a sync


def test_lost_events_are_queued_again_and_the_next_sync_restores_them(box, simulator, moodle):
    control(simulator, "forget", {"userid": STUDENTS["student2"], "courseid": C1})
    control(simulator, "forget", {"userid": STUDENTS["student3"], "cmid": 4, "grades": False})
    assert moodle.completion(C1, STUDENTS["student2"], 1) == 0
    assert moodle.grade(C1, STUDENTS["student2"], 3)[0] is None

    code, run, err = verify(box)
    assert code == 0, err
    assert run["actions"] == {"checked": 15, "matching": 11, "requeued": 4, "not_checked": 0}
    assert queued_keys(box) == {"student2-c1", "student2-c2", "student2-g3", "student3-c4"}
    with sqlite3.connect(box.database) as db:
        reasons = dict(db.execute("SELECT key, last_error FROM event WHERE status = 'queued'"))
    assert reasons["student2-g3"] == "verify: the server holds no grade for activity 3"
    assert reasons["student3-c4"] == "verify: the server shows activity 4 as not complete"

    code, run, err = sync(box)
    assert code == 0, err
    assert (run["actions"]["completions"], run["actions"]["grades"]) == (3, 1)
    assert moodle.completion(C1, STUDENTS["student2"], 1) == 1
    assert moodle.completion(C1, STUDENTS["student2"], 2) == 1
    assert moodle.grade(C1, STUDENTS["student2"], 3)[0] == 52
    assert moodle.completion(C2, STUDENTS["student3"], 4) == 1
    assert box.status()["queued"] == 0

    code, run, _ = verify(box)
    assert run["actions"] == {"checked": 15, "matching": 15, "requeued": 0, "not_checked": 0}


def test_a_grade_the_server_answers_as_nan_or_text_is_no_match(box, simulator):
    # NaN compares unequal to everything, so a tolerance test called it a match; a text grade raised.
    simulator.faults.set(hostile_grade=[{"cmid": 3, "userid": STUDENTS["student1"], "value": float("nan")},
                                        {"cmid": 6, "userid": STUDENTS["student2"], "value": "abc"}])
    code, run, err = verify(box)
    assert code == 0 and run["status"] == "completed", (run, err)
    assert run["actions"] == {"checked": 15, "matching": 13, "requeued": 2, "not_checked": 0}
    assert queued_keys(box) == {"student1-g3", "student2-g6"}


def test_only_the_latest_event_per_user_and_activity_counts(box, moodle):
    assert box.enqueue([{"type": "completion", "id": "undo", "course_id": C1, "user": "student1",
                         "cmid": 1, "completed": False}]).returncode == 0
    assert sync(box)[0] == 0
    assert moodle.completion(C1, STUDENTS["student1"], 1) == 0
    code, run, _ = verify(box)
    assert run["actions"]["checked"] == 15 and run["actions"]["requeued"] == 0  # "student1-c1" is superseded

    # Someone on the server marks it complete again: only the latest event goes back in the queue.
    moodle.call("core_completion_override_activity_completion_status",
                userid=STUDENTS["student1"], cmid=1, newstate=1)
    code, run, _ = verify(box)
    assert run["actions"]["requeued"] == 1
    assert queued_keys(box) == {"undo"}


def test_course_filter_and_retention_window(box):
    code, run, _ = verify(box, "--course", str(C2))
    assert run["actions"]["checked"] == 6
    assert [c["id"] for c in run["courses"]] == [C2]

    with sqlite3.connect(box.database) as db:  # sent before the 30-day window
        db.execute("UPDATE event SET sent_at = '2000-01-01T00:00:00Z' WHERE key LIKE 'student1-%'")
    code, run, _ = verify(box)
    assert run["actions"]["checked"] == 10


def test_unknown_user_is_reported_not_queued(box, simulator):
    control(simulator, "forget", {"users": [STUDENTS["student3"]], "completions": False, "grades": False})
    code, run, _ = verify(box)
    assert code == 1 and run["status"] == "completed_with_errors"
    assert run["actions"] == {"checked": 10, "matching": 10, "requeued": 0, "not_checked": 5}
    why = "not checked: user 'student3' is not on the server"
    assert run["errors"] == [f"course {C1}, user student3: 3 event(s) {why}",
                             f"course {C2}, user student3: 2 event(s) {why}"]
    assert queued_keys(box) == set()


def test_takes_the_sync_lock_and_answers_offline(box):
    config = load_config(box.config)
    with run_lock(config):
        result = box.cli("verify")
    assert result.returncode == 4 and "already running" in result.stderr

    box.write_config("http://127.0.0.1:9")
    code, run, _ = verify(box)
    assert code == 3 and run["status"] == "skipped_offline"
    assert queued_keys(box) == set()


def test_the_page_asks_the_daemon_for_a_verify(box, simulator):
    from agent.store import handoff
    from agent.service import worker
    from agent.store.db import Run, iso, utcnow
    from agent.store.schema import open_db

    control(simulator, "forget", {"userid": STUDENTS["student1"], "cmid": 1})
    config = load_config(box.config)
    db = open_db(config.agent.database)
    try:
        sync_request = handoff.request_sync(trigger="page")
        verify_request = handoff.request_sync(kind="verify")
        assert verify_request.id != sync_request.id  # a waiting sync does not swallow the verify
        assert handoff.request_sync(kind="verify").id == verify_request.id
        # A sync going on serves a waiting sync request, never a verify: that one waits its turn.
        running = Run.create(trigger="schedule", status=Run.RUNNING, started_at=iso(utcnow()))
        assert handoff.attach(sync_request, running.id) is True
        assert handoff.attach(verify_request, running.id) is False
        assert handoff.next_request().id == verify_request.id
        running.delete_instance()
        row = worker.serve_request(config, verify_request)
    finally:
        db.close()
    assert (row.kind, row.trigger, row.status, row.force) == ("verify", "page", "completed", False)
    assert row.actions == {"checked": 15, "matching": 14, "requeued": 1, "not_checked": 0}
    assert queued_keys(box) == {"student1-c1"}


def test_verify_button_under_the_advanced_settings(box, simulator):
    from agent.store import handoff, settings
    from agent.service import worker
    from agent.auth import hash_password
    from agent.store.schema import close_db
    from tests.helpers import PASSWORD, login, post
    from webui import create_app

    config = load_config(box.config)
    app = create_app(config)
    settings.put(password_hash=hash_password(PASSWORD))
    client = app.test_client()
    try:
        login(client)
        page = client.get("/").get_data(as_text=True)
        advanced = page[page.index('id="advanced"'):page.index("</details>")]
        assert 'action="/verify/start"' in advanced and "Verify Now" in advanced
        assert page.count('action="/verify/start"') == 1 and 'action="/sync/start"' in page

        control(simulator, "forget", {"userid": STUDENTS["student1"], "cmid": 1})
        answer = post(client, "/verify/start")
        assert answer.status_code == 202
        assert answer.get_json()["message"] == "Verify requested: waiting for the agent…"
        request = handoff.next_request()
        assert (request.kind, request.trigger) == ("verify", "page")
        row = worker.serve_request(config, request)  # what the daemon does with it

        page = client.get("/").get_data(as_text=True)
        dialog = page[page.index(f'id="run-{row.id}"'):]
        dialog = dialog[:dialog.index("</dialog>")]
        assert re.search(r'data-field="kind">\s*Verify\s*<', dialog)
        assert re.search(r'data-field="trigger">\s*This page\s*<', dialog)
        counts = dict(re.findall(r'data-kind="(\w+)".*?<strong>(\d+)</strong>', dialog, re.S))
        assert counts == {"checked": "15", "matching": "14", "requeued": "1", "not_checked": "0"}
        assert queued_keys(box) == {"student1-c1"}
    finally:
        close_db()
