"""The teacher's page and the events API through Flask's test client, on a
real SQLite file; syncs run for real against the simulator on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
from datetime import timedelta

import pytest

from agent.store import settings
from agent.auth import hash_password
from agent.config import load_config
from agent.store.db import Event, LoginAttempt, Setting, SyncRequest, Run, database, iso, utcnow
from agent.store.queue import count_by_status
from agent.sync import run_sync
from tests.helpers import (API_KEY, COMPLETION, MOODLE_TOKEN, PASSWORD, ROOT, api, csrf_of, keep_courses, login,
                           page_csrf, post, queued, write_config)
from webui import create_app
from webui.auth import MAX_FAILURES, WINDOW_S

def snapshot(config):
    """Everything a page action could change."""
    return (sorted(Setting.select(Setting.key, Setting.value).tuples()), SyncRequest.select().count(),
            sorted(Event.select(Event.id, Event.status).tuples()))


# -- what changes state ----------------------------------------------------------

STATE_CHANGING = {  # URL -> form that changes something
    "/settings/sync": {"enabled": ""},
    "/sync/start": {},
    "/verify/start": {},
    "/settings/schedule": {"enabled": "", "time_utc": "13:45"},
    "/settings/direction": {"direction": "both"},
    "/settings/notifications": {"enabled": "on", "email": "head@example.org"},
    "/settings/force": {"enabled": "on"},
    "/conflicts": {"action": "discard", "all": "1"},
}


def test_every_post_route_is_listed_here(app):
    """A new state-changing route must be added to the checks below."""
    posts = {r.rule for r in app.url_map.iter_rules() if "POST" in r.methods}
    # /settings/connect needs a Moodle to log in to: tests/test_connect.py checks its login, CSRF token
    # and admin password. The Learners screen's forms write into the box's Moodle: checked in
    # tests/test_learners.py (login, CSRF, once).
    assert posts == set(STATE_CHANGING) | {"/login", "/logout", "/api/v1/events", "/settings/connect",
                                           "/learners/add", "/learners/password"}


def _with_a_conflict():
    api_events = [dict(COMPLETION, id="c1")]
    from agent.store.queue import enqueue, validate_events
    enqueue(validate_events(api_events))
    Event.update(status=Event.CONFLICT, last_error="refused").execute()


@pytest.mark.parametrize("url", sorted(STATE_CHANGING))
def test_login_required_for_every_state_changing_route(app, client, config, url):
    _with_a_conflict()
    before = snapshot(config)
    token = csrf_of(client)  # a valid CSRF token, but no login
    answer = post(client, url, STATE_CHANGING[url], token=token)
    assert answer.status_code == 401
    assert answer.get_json()["error"]
    plain = post(client, url, STATE_CHANGING[url], token=token, json_answer=False)
    assert plain.status_code == 401
    assert snapshot(config) == before


@pytest.mark.parametrize("url", sorted(STATE_CHANGING))
def test_csrf_token_required_for_every_state_changing_route(app, admin, config, url):
    _with_a_conflict()
    before = snapshot(config)
    for token in ("", "forged-token"):
        answer = post(admin, url, STATE_CHANGING[url], token=token)
        assert answer.status_code == 403, answer.get_data(as_text=True)
    assert snapshot(config) == before
    answer = post(admin, url, STATE_CHANGING[url])  # the page's own token
    assert answer.status_code in (200, 202)
    assert snapshot(config) != before


def test_csrf_token_in_header_works_for_fetch(admin, config):
    token = page_csrf(admin)
    answer = admin.post("/settings/sync", data={}, headers={"X-CSRF-Token": token, "X-Requested-With": "fetch"})
    assert answer.status_code == 200
    assert settings.get(config, "sync_enabled") is False


def test_login_and_logout_need_csrf(client):
    answer = client.post("/login", data={"password": PASSWORD})
    assert answer.status_code == 403
    assert login(client).status_code == 303
    assert client.post("/logout").status_code == 403
    assert client.get("/").status_code == 200  # still logged in
    assert post(client, "/logout", json_answer=False).status_code == 303
    assert client.get("/").status_code == 302


def test_session_cookie_is_httponly_and_lax(client):
    answer = login(client)
    cookie = [h for h in answer.headers.getlist("Set-Cookie") if h.startswith("msa_session=")][0]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie


def test_wrong_password_and_next_redirect(client):
    answer = login(client, "wrong")
    assert answer.status_code == 401
    assert "Wrong password" in answer.get_data(as_text=True)
    answer = client.post("/login", data={"password": PASSWORD, "csrf_token": csrf_of(client),
                                         "next": "//evil.example/"})
    assert answer.headers["Location"] in ("/", "http://localhost/")


def test_new_password_logs_sessions_out(admin, config):
    assert admin.get("/").status_code == 200
    settings.put(password_hash=hash_password("another password"))
    assert admin.get("/").status_code == 302


def test_no_password_set_explains_how(config):
    client = create_app(config).test_client()
    page = client.get("/login").get_data(as_text=True)
    assert "moodle-sync-agent set-password" in page
    assert login(client).status_code == 401


# -- rate limit ---------------------------------------------------------------------

def test_login_rate_limit_holds_across_workers(config):
    """Two apps on one database stand for two gunicorn workers."""
    worker_a, worker_b = create_app(config).test_client(), create_app(config).test_client()
    settings.put(password_hash=hash_password(PASSWORD))
    for i in range(MAX_FAILURES):
        assert login(worker_a if i % 2 else worker_b, "wrong").status_code == 401
    refused = login(worker_b)  # the right password, but too many failures
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    assert "Too many failed attempts" in refused.get_data(as_text=True)
    assert login(worker_a).status_code == 429
    # Another address is not locked out.
    other = create_app(config).test_client()
    assert login(other, environ_base={"REMOTE_ADDR": "10.0.0.9"}).status_code == 303
    # Once the failures are older than the window, the right password works again.
    LoginAttempt.update(at=LoginAttempt.at - WINDOW_S - 1).execute()
    assert login(worker_a).status_code == 303


def test_rate_limit_ignores_failures_from_a_clock_that_jumped(config):
    from webui.auth import LOGINS

    create_app(config)
    now = 2_000_000_000.0
    for _ in range(MAX_FAILURES):
        assert LOGINS.fail("10.0.0.1", now) == 0
    assert LOGINS.blocked("10.0.0.1", now) > 0
    assert LOGINS.fail("10.0.0.1", now) > 0  # refused, and not counted
    # The box rebooted without RTC: its clock is a year behind. The failures
    # stamped "in the future" must not lock the teacher out for a year.
    assert LOGINS.blocked("10.0.0.1", now - 365 * 86400) == 0
    assert LOGINS.blocked("10.0.0.1", now + WINDOW_S + 1) == 0


# -- secret key and password hash ------------------------------------------------------

def test_secret_key_is_private_and_shared(config, tmp_path):
    first = create_app(config)
    key_file = config.agent.data_dir / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second = create_app(config)
    assert first.secret_key == second.secret_key
    settings.put(password_hash=hash_password(PASSWORD))
    answer = login(first.test_client())
    cookie = [h for h in answer.headers.getlist("Set-Cookie") if h.startswith("msa_session=")][0].split(";")[0]
    # A session opened on one worker is valid on the other.
    assert second.test_client(use_cookies=False).get("/", headers={"Cookie": cookie}).status_code == 200


def test_password_hash_from_the_cli_is_pbkdf2_that_werkzeug_2_2_verifies(tmp_path):
    config = write_config(tmp_path)
    # ROOT first, then any PYTHONPATH already set (the installed package's
    # private directory, when scripts/test-package runs the suite).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               MOODLE_SYNC_AGENT_CONFIG=str(config.path))
    result = subprocess.run([sys.executable, "-m", "agent", "set-password", "--stdin"], input=PASSWORD + "\n",
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    app = create_app(config)
    stored = settings.get(config, "password_hash")
    method, salt, digest = stored.split("$")
    assert method == "pbkdf2:sha256:260000"
    # What werkzeug 2.2's check_password_hash computes for this method:
    assert hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), salt.encode(), 260000).hex() == digest
    # And the page, on this venv's werkzeug (2.2 in the bookworm venv), accepts it.
    assert login(app.test_client()).status_code == 303


# -- the events API ---------------------------------------------------------------------

def test_events_api_stores_and_counts_duplicates(client):
    events = [dict(COMPLETION, id=f"e{i}") for i in range(3)]
    answer = api(client, events)
    assert answer.status_code == 201
    assert answer.get_json() == {"stored": 3, "duplicates": 0}
    answer = api(client, events + [dict(COMPLETION, id="e3")])
    assert answer.status_code == 201
    assert answer.get_json() == {"stored": 1, "duplicates": 3}
    assert queued() == 4
    # JSON lines, like the CLI's enqueue
    lines = "\n".join(json.dumps(dict(COMPLETION, id=f"l{i}")) for i in range(2))
    assert api(client, lines).get_json() == {"stored": 2, "duplicates": 0}


def test_events_api_bad_event_names_index_and_field_and_stores_nothing(client):
    events = [dict(COMPLETION, id=f"e{i}") for i in range(5)]
    events[3] = dict(COMPLETION, id="e3", cmid="one")
    answer = api(client, events)
    assert answer.status_code == 400
    body = answer.get_json()
    assert body["index"] == 3 and body["field"] == "cmid"
    assert "whole number" in body["error"]
    assert queued() == 0
    for bad in (b"{not json", b"", json.dumps({"type": "nope", "user": "x"}), b"\xff\xfe"):
        answer = api(client, bad)
        assert answer.status_code == 400, bad
        assert "error" in answer.get_json()
    assert queued() == 0


def test_events_api_needs_the_key(client, config):
    for key in (None, "wrong-key", API_KEY + "x", ""):
        answer = api(client, [COMPLETION], key=key)
        assert answer.status_code == 401
        assert "error" in answer.get_json()
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    answer = client.post("/api/v1/events", data=json.dumps([COMPLETION]), headers={"Authorization": f"Basic {API_KEY}"})
    assert answer.status_code == 401
    assert queued() == 0


def test_events_api_too_large(client):
    many = [dict(COMPLETION, id=f"e{i}") for i in range(10_001)]
    answer = api(client, many)
    assert answer.status_code == 413
    assert "10000" in answer.get_json()["error"]
    huge = b"[" + b" " * (21 * 1024 * 1024) + b"]"
    answer = api(client, huge)
    assert answer.status_code == 413
    assert "error" in answer.get_json()
    assert queued() == 0
    assert api(client, many[:10_000]).get_json() == {"stored": 10_000, "duplicates": 0}


def test_events_api_off_without_a_key(tmp_path):
    config = write_config(tmp_path)
    config.path.write_text(config.path.read_text().replace(f"api_key = {API_KEY}", ""))
    client = create_app(load_config(config.path)).test_client()
    answer = api(client, [COMPLETION])
    assert answer.status_code == 503
    assert "api_key" in answer.get_json()["error"]
    assert queued() == 0


def test_events_api_refuses_when_storage_is_under_budget(tmp_path):
    import psutil

    usage = psutil.disk_usage(str(tmp_path))
    if usage.free / usage.total > 0.9:
        pytest.skip("this disk is more than 90 % free: the budget cannot be crossed by config")
    config = write_config(tmp_path, agent="min_free_percent = 90")  # the real disk is "full" for this box
    client = create_app(config).test_client()
    answer = api(client, [COMPLETION])
    assert answer.status_code == 507
    assert answer.get_json()["error"].startswith("storage is full: ")
    assert queued() == 0


def test_api_errors_are_json_never_html(client):
    for answer in (client.get("/api/v1/events"), client.get("/api/v1/nothing-here"),
                   client.delete("/api/v1/status")):
        assert answer.status_code in (404, 405)
        assert answer.mimetype == "application/json"
    # A real failure inside: the queue table is gone.
    database.obj.execute_sql("DROP TABLE event")
    answer = api(client, [COMPLETION])
    assert answer.status_code == 500
    assert answer.mimetype == "application/json"
    assert answer.get_json() == {"error": answer.get_json()["error"]}


def test_syncs_limit_is_validated(admin, config):
    for limit in ("0", "101", "x", "-1", "2.5"):
        answer = admin.get(f"/api/v1/syncs?limit={limit}")
        assert answer.status_code == 400
        assert answer.get_json()["field"] == "limit"
    for i in range(7):
        Run.create(trigger="cli", status=Run.COMPLETED, started_at=f"2026-11-0{i + 1}T10:00:00Z")
    runs = admin.get("/api/v1/syncs").get_json()
    assert [r["started_at"][:10] for r in runs] == [f"2026-11-0{i}" for i in (7, 6, 5, 4, 3)]
    assert len(admin.get("/api/v1/syncs?limit=7").get_json()) == 7


def test_the_page_reads_its_five_runs_in_as_many_queries_as_one(admin):
    """What each run's Information dialog names (sent events, what came down, the
    collections since the sync before, the conflicts log) is read for all five at once."""
    def page_queries() -> int:
        queries: list[str] = []
        database.obj.connection().set_trace_callback(queries.append)
        try:
            assert admin.get("/").status_code == 200
        finally:
            database.obj.connection().set_trace_callback(None)
        return len([q for q in queries if q.startswith("SELECT")])

    def a_sync(day: int) -> None:
        run = Run.create(trigger="cli", status=Run.COMPLETED, started_at=f"2026-11-0{day}T10:00:00Z",
                         completed_at=f"2026-11-0{day}T10:01:00Z", direction="both", warnings=[],
                         moved_down=[{"username": "u", "course_id": 2, "cmid": 5, "kind": "grade", "value": 7}])
        Run.create(kind="collect", trigger="schedule", status=Run.COMPLETED, started_at=f"2026-11-0{day}T09:00:00Z",
                   actions={"completions": 1})
        Event.create(key=f"sent-{day}", type="completion", course_id=2, username="u", cmid=4,
                     data={"completed": True}, queued_at=run.started_at, status=Event.SENT, sync_id=run.id)

    a_sync(1)
    one = page_queries()
    for day in range(2, 7):
        a_sync(day)
    assert page_queries() == one


def test_status_needs_login_unless_public(tmp_path, client):
    assert client.get("/api/v1/status").status_code == 401
    assert client.get("/api/v1/syncs").status_code == 401
    assert client.get("/api/v1/status", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    assert client.get("/").status_code == 302
    login(client)
    assert client.get("/api/v1/status").get_json()["box_name"] == "test-box"

    (tmp_path / "p").mkdir()
    public = create_app(write_config(tmp_path / "p", web="public_status = yes")).test_client()
    tmp = public.get("/api/v1/status")
    assert tmp.status_code == 200 and tmp.get_json()["queued"] == 0
    page = public.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Read-only view" in html
    assert 'id="start"' in html and re.search(r'id="start"[^>]*disabled', html, re.S)


# -- the page's actions -----------------------------------------------------------------

def test_sync_switch_and_start_sync_refused_when_off(admin, config):
    answer = post(admin, "/settings/sync", {})
    assert answer.get_json()["ok"] and settings.get(config, "sync_enabled") is False
    html = admin.get("/").get_data(as_text=True)
    assert "Sync is turned off" in html
    answer = post(admin, "/sync/start")
    assert answer.status_code == 409
    assert "turned off" in answer.get_json()["error"]
    assert SyncRequest.select().count() == 0
    post(admin, "/settings/sync", {"enabled": "on"})
    answer = post(admin, "/sync/start")
    assert answer.status_code == 202
    request_id = answer.get_json()["request_id"]
    assert (SyncRequest.get_by_id(request_id).kind, SyncRequest.get_by_id(request_id).trigger) == ("sync", "page")
    # A second press while the first waits for the agent adds no second request.
    assert post(admin, "/sync/start").get_json()["request_id"] == request_id
    assert SyncRequest.select().count() == 1
    html = admin.get("/").get_data(as_text=True)
    assert re.search(r'id="start"[^>]*disabled', html, re.S)


def test_start_sync_refused_while_a_run_goes(admin):
    Run.create(trigger="schedule", status=Run.RUNNING, started_at=iso(utcnow()), pid=os.getpid(),
                   phase="sending_events", events_total=10, events_sent=4)
    answer = post(admin, "/sync/start")
    assert answer.status_code == 409
    assert SyncRequest.select().count() == 0
    status = admin.get("/api/v1/status").get_json()
    assert status["running"] and status["last_sync"]["progress"]["events_done"] == 4


def test_schedule_is_validated_and_kept(admin, config):
    for bad in ("25:00", "7:30", "12:60", "", "noon"):
        answer = post(admin, "/settings/schedule", {"enabled": "on", "time_utc": bad})
        assert answer.status_code == 400
        assert answer.get_json()["field"] == "time_utc"
    assert settings.get(config, "schedule_time_utc") == "02:00"
    assert post(admin, "/settings/schedule", {"time_utc": "21:15"}).get_json()["ok"]
    assert settings.get(config, "schedule_time_utc") == "21:15"
    assert settings.get(config, "schedule_enabled") is False
    assert 'value="21:15"' in admin.get("/").get_data(as_text=True)


def test_the_direction_is_validated_kept_and_shown_applying_from_the_next_sync(admin, config):
    assert settings.get(config, "sync_direction") == "up"
    answer = post(admin, "/settings/direction", {"direction": "sideways"})
    assert answer.status_code == 400 and answer.get_json()["field"] == "direction"
    assert settings.get(config, "sync_direction") == "up"
    answer = post(admin, "/settings/direction", {"direction": "down"}).get_json()
    assert answer["ok"] and "Server → box" in answer["message"] and "next sync" in answer["message"]
    assert settings.get(config, "sync_direction") == "down"
    assert '<option value="down" selected>' in admin.get("/").get_data(as_text=True)


def test_notifications_validate_the_address(admin, config):
    for data, field in (({"enabled": "on", "email": "not-an-address"}, "email"),
                        ({"enabled": "on", "email": ""}, "email"),
                        ({"email": "a@b"}, "email")):
        answer = post(admin, "/settings/notifications", data)
        assert answer.status_code == 400 and answer.get_json()["field"] == field
    assert settings.get(config, "notify_enabled") is False
    assert post(admin, "/settings/notifications", {"enabled": "on", "email": "head@school.example"}).get_json()["ok"]
    assert (settings.get(config, "notify_enabled"), settings.get(config, "notify_email")) == (True, "head@school.example")
    # Off, with the address cleared: stored as unset (this used to fail on the NOT NULL column).
    assert post(admin, "/settings/notifications", {"email": ""}).get_json()["ok"]
    assert (settings.get(config, "notify_enabled"), settings.get(config, "notify_email")) == (False, None)


def test_force_next_and_conflicts(admin, config):
    assert post(admin, "/settings/force", {"enabled": "on"}).get_json()["ok"]
    assert settings.get(config, "force_next") is True
    assert "skips the check that the courses are identical" in admin.get("/").get_data(as_text=True)
    from agent.store.queue import enqueue, validate_events
    enqueue(validate_events([dict(COMPLETION, id=f"c{i}") for i in range(3)]))
    Event.update(status=Event.CONFLICT, last_error="activity 1 does not exist").execute()
    ids = [e.id for e in Event.select().order_by(Event.id)]
    html = admin.get("/").get_data(as_text=True)
    assert html.count("activity 1 does not exist") == 3
    assert post(admin, "/conflicts", {"action": "retry", "id": str(ids[0])}).get_json()["ok"]
    assert post(admin, "/conflicts", {"action": "discard", "all": "1"}).get_json()["ok"]
    assert [Event.get_by_id(i).status for i in ids] == ["queued", "discarded", "discarded"]
    assert count_by_status() == {"queued": 1, "sent": 0, "conflict": 0, "discarded": 2}
    assert post(admin, "/conflicts", {"action": "explode", "all": "1"}).status_code == 400


def test_banners_for_a_rejected_token_and_an_old_last_success(admin, config):
    assert 'class="banner"' not in admin.get("/").get_data(as_text=True)
    from agent.store.queue import enqueue, validate_events
    enqueue(validate_events([COMPLETION]), now=utcnow() - timedelta(days=9))
    html = admin.get("/").get_data(as_text=True)
    assert "No sync has succeeded yet, and events have been waiting since" in html
    Run.create(trigger="schedule", status=Run.COMPLETED, started_at=iso(utcnow() - timedelta(days=8)),
                   completed_at=iso(utcnow() - timedelta(days=8)))
    html = admin.get("/").get_data(as_text=True)
    assert "The last successful sync was 8 days ago" in html
    assert "No sync has succeeded yet" not in html
    settings.put(token_rejected=True)
    html = admin.get("/").get_data(as_text=True)
    assert html.count('class="banner"') == 2 and "rejected this box" in html
    Run.create(trigger="schedule", status=Run.COMPLETED, started_at=iso(utcnow()), completed_at=iso(utcnow()))
    settings.put(token_rejected=False)
    assert 'class="banner"' not in admin.get("/").get_data(as_text=True)


def test_public_page_hides_learners(tmp_path):
    config = write_config(tmp_path, web="public_status = yes")
    client = create_app(config).test_client()
    keep_courses(2)
    _with_a_conflict()
    html = client.get("/").get_data(as_text=True)
    assert 'id="conflict-count">1<' in html
    assert "student1" not in html and "refused" not in html


def test_languages_from_browser_and_switch(client):
    assert 'lang="fr"' in client.get("/login", headers={"Accept-Language": "fr-FR,fr;q=0.9"}).get_data(as_text=True)
    assert "Mot de passe" in client.get("/login", headers={"Accept-Language": "fr-CH"}).get_data(as_text=True)
    assert "Passwort" in client.get("/login", headers={"Accept-Language": "de"}).get_data(as_text=True)
    assert "Password" in client.get("/login", headers={"Accept-Language": "es"}).get_data(as_text=True)
    answer = client.get("/lang/de?next=/login")
    assert answer.status_code == 303 and answer.headers["Location"].endswith("/login")
    assert "Passwort" in client.get("/login", headers={"Accept-Language": "fr"}).get_data(as_text=True)
    assert client.get("/lang/de?next=//evil.example/x").headers["Location"] in ("/", "http://localhost/")


def test_page_uses_no_outside_address(admin):
    html = admin.get("/").get_data(as_text=True)
    css = admin.get("/static/app.css").get_data(as_text=True)
    js = admin.get("/static/app.js").get_data(as_text=True)
    for text in (html, css, js):
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text)
        assert "@import" not in text and "url(http" not in text
    assert "default-src 'self'" in admin.get("/").headers["Content-Security-Policy"]


# -- the token never shows -------------------------------------------------------------

@pytest.fixture
def leak_sim():
    from moodle_simulator import start_simulator

    sim = start_simulator(token=MOODLE_TOKEN)
    yield sim
    sim.stop()


def test_the_moodle_token_never_appears(tmp_path, leak_sim):
    config = write_config(tmp_path, url=leak_sim.url, web="public_status = yes")
    app = create_app(config)
    settings.put(password_hash=hash_password(PASSWORD))
    from agent.courses import add as add_courses
    from agent.moodle import MoodleClient
    from agent.store.queue import enqueue, validate_events
    add_courses(MoodleClient(config.moodle), ["C1"])
    enqueue(validate_events([dict(COMPLETION, id="ok"), dict(COMPLETION, id="bad", user="nobody")]))
    first = run_sync(config, trigger="cli")
    assert (first.status, first.conflicts) == (Run.COMPLETED_WITH_WARNINGS, 1)
    leak_sim.faults.set(reject_token=True)
    assert run_sync(config, trigger="cli").status == Run.FAILED
    leak_sim.stop()
    assert run_sync(config, trigger="cli").status == Run.SKIPPED_OFFLINE
    assert settings.get(config, "token_rejected") is True

    answers = []
    for client in (app.test_client(), app.test_client()):
        for url in ("/", "/login", "/api/v1/status", "/api/v1/syncs?limit=100", "/nowhere", "/api/v1/nowhere",
                    "/static/app.js", "/static/app.css", "/lang/fr?next=/"):
            answers.append(client.get(url))
        answers.append(api(client, [COMPLETION]))
        answers.append(api(client, [{"type": "x"}]))
        answers.append(api(client, [COMPLETION], key="wrong"))
        answers.append(login(client, "wrong"))
        answers.append(login(client))
        page = client.get("/")
        answers.append(page)
        for url, data in STATE_CHANGING.items():
            answers.append(post(client, url, data))
            answers.append(post(client, url, data, json_answer=False))
            answers.append(post(client, url, data, token="bad"))
        answers.append(client.get("/"))
        answers.append(client.get("/api/v1/status"))
    html = answers[-2].get_data(as_text=True)
    assert "jeton" in html and 'class="banner"' in html  # the (French) banner: the page knew of the token...
    for answer in answers:  # ...and never showed it
        assert MOODLE_TOKEN not in answer.get_data(as_text=True)
        assert MOODLE_TOKEN not in str(answer.headers)
