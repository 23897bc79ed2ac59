"""Sessions that end (logout, new password, idle and absolute limits) and
the throttles on wrong passwords and API keys, on a real SQLite file; the
parallel logins go through real HTTP to a threaded server on loopback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading

import pytest
import requests
from werkzeug.serving import make_server

import webui.auth
from agent.store import settings
from agent.store.db import LoginAttempt
from tests.helpers import API_KEY, COMPLETION, PASSWORD, ROOT, api, csrf_of, login, page_csrf, post, queued
from webui import create_app
from webui.auth import IDLE_S, MAX_FAILURES, MAX_KEY_FAILURES, SESSION_MAX_S, WINDOW_S


class Clock:
    def __init__(self, t: float = 2_000_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(app):
    app.config["CLOCK"] = Clock()
    return app.config["CLOCK"]


def session_cookie(response) -> str:
    """The session cookie as a header, to replay it from elsewhere."""
    found = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("msa_session=")]
    assert found, response.headers
    return found[-1].split(";")[0]


def replay(app, cookie: str, url: str = "/"):
    return app.test_client(use_cookies=False).get(url, headers={"Cookie": cookie})


# -- sessions that end -----------------------------------------------------------------

def test_a_cookie_copied_before_logout_is_refused_after_it(app, admin):
    page = admin.get("/")
    copied = session_cookie(page)
    token = page_csrf(admin)
    assert replay(app, copied).status_code == 200
    assert replay(app, copied, "/api/v1/status").status_code == 200
    other_device = app.test_client()
    assert login(other_device).status_code == 303

    assert post(admin, "/logout", json_answer=False).status_code == 303
    assert replay(app, copied).status_code == 302
    assert replay(app, copied, "/api/v1/status").status_code == 401
    answer = app.test_client(use_cookies=False).post(
        "/settings/sync", data={}, headers={"Cookie": copied, "X-CSRF-Token": token, "X-Requested-With": "fetch"})
    assert answer.status_code == 401
    assert settings.get(app.config["AGENT"], "sync_enabled") is True
    # There is one admin: a logout ends the admin's sessions everywhere.
    assert other_device.get("/").status_code == 302
    # And a new login works.
    assert login(admin).status_code == 303 and admin.get("/").status_code == 200


def test_a_logout_without_a_session_ends_nobody_s_session(app, admin):
    stranger = app.test_client()
    token = csrf_of(stranger)  # anyone gets a CSRF token from the login form
    assert stranger.post("/logout", data={"csrf_token": token}).status_code == 303
    assert admin.get("/").status_code == 200


def test_set_password_from_the_cli_ends_sessions(app, admin, config):
    copied = session_cookie(admin.get("/"))
    assert replay(app, copied).status_code == 200
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               MOODLE_SYNC_AGENT_CONFIG=str(config.path))
    # The same password again: the new hash has a new salt, so the sessions end all the same.
    result = subprocess.run([sys.executable, "-m", "agent", "set-password", "--stdin"], input=PASSWORD + "\n",
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert replay(app, copied).status_code == 302
    assert admin.get("/").status_code == 302
    assert login(admin).status_code == 303 and admin.get("/").status_code == 200


def test_an_idle_session_expires(app, client, clock):
    assert login(client).status_code == 303
    copied = session_cookie(client.get("/"))
    clock.t += IDLE_S - 60
    assert client.get("/").status_code == 200  # used in time: idle again from now
    clock.t += IDLE_S - 60
    assert client.get("/").status_code == 200
    assert replay(app, copied).status_code == 302  # the copy was idle since the first request
    clock.t += IDLE_S + 1
    assert client.get("/").status_code == 302
    assert client.get("/api/v1/status").status_code == 401


def test_a_session_in_use_still_ends_after_the_absolute_limit(app, client, clock):
    assert login(client).status_code == 303
    used = 0
    while used + IDLE_S // 2 <= SESSION_MAX_S:
        clock.t += IDLE_S // 2
        used += IDLE_S // 2
        assert client.get("/").status_code == 200, used
    clock.t += IDLE_S // 2
    assert client.get("/").status_code == 302


def test_a_session_from_the_future_is_not_trusted(app, client, clock):
    """A clock stepped back a day (no RTC, then NTP the other way)."""
    assert login(client).status_code == 303
    clock.t -= 30
    assert client.get("/").status_code == 200  # workers a few seconds apart
    clock.t -= 86400
    assert client.get("/").status_code == 302


# -- wrong API keys ------------------------------------------------------------------

def test_wrong_api_keys_are_throttled_per_address(config, clock):
    # Two apps on one database stand for two gunicorn workers.
    workers = [create_app(config), create_app(config)]
    for w in workers:
        w.config["CLOCK"] = clock
    clients = [w.test_client() for w in workers]
    attacker = {"REMOTE_ADDR": "10.0.0.66"}

    answers = [api(clients[i % 2], [COMPLETION], key=f"guess-{i}", environ_base=attacker) for i in range(200)]
    codes = [a.status_code for a in answers]
    assert codes[:MAX_KEY_FAILURES] == [401] * MAX_KEY_FAILURES
    assert codes[MAX_KEY_FAILURES:] == [429] * (200 - MAX_KEY_FAILURES)
    assert all(0 < int(a.headers["Retry-After"]) <= WINDOW_S for a in answers[MAX_KEY_FAILURES:])
    assert "too many wrong API keys" in answers[-1].get_json()["error"]
    assert LoginAttempt.select().count() == MAX_KEY_FAILURES  # refused guesses are not even counted
    # The right key from the blocked address is refused too: a guess never learns it was right.
    assert api(clients[0], [COMPLETION], environ_base=attacker).status_code == 429
    # The other keyed endpoints are behind the same limit.
    assert clients[1].get("/api/v1/status", headers={"Authorization": f"Bearer {API_KEY}"},
                          environ_base=attacker).status_code == 429
    # Another address with the right key works, and the teacher's login from the attacker's address too.
    assert api(clients[1], [COMPLETION], environ_base={"REMOTE_ADDR": "10.0.0.7"}).status_code == 201
    assert login(clients[0], environ_base=attacker).status_code == 303
    assert queued() == 1
    clock.t += WINDOW_S + 1
    assert api(clients[0], [dict(COMPLETION, id="later")], environ_base=attacker).status_code == 201


def test_wrong_keys_on_the_status_api_count_and_no_key_does_not(client):
    guesser = {"REMOTE_ADDR": "10.0.0.67"}
    codes = [client.get("/api/v1/status", headers={"Authorization": f"Bearer guess-{i}"},
                        environ_base=guesser).status_code for i in range(MAX_KEY_FAILURES + 1)]
    assert codes == [401] * MAX_KEY_FAILURES + [429]
    # Without a key nothing is guessed: never counted, never 429.
    plain = {"REMOTE_ADDR": "10.0.0.68"}
    assert {client.get("/api/v1/status", environ_base=plain).status_code for _ in range(30)} == {401}
    assert {api(client, [COMPLETION], key=None, environ_base=plain).status_code for _ in range(30)} == {401}
    assert api(client, [COMPLETION], environ_base=plain).status_code == 201


def keyed(client, key: str, peer: str, forwarded: str | None = None, event_id: str = "a"):
    headers = {"Authorization": f"Bearer {key}"}
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    return client.post("/api/v1/events", data=json.dumps([dict(COMPLETION, id=event_id)]), headers=headers,
                       content_type="application/json", environ_base={"REMOTE_ADDR": peer})


@pytest.mark.parametrize("peer, forwarded", [("127.0.0.1", None), ("127.8.9.10", None), ("::1", None),
                                             ("::ffff:127.0.0.1", None),
                                             ("", "127.0.0.1")],  # behind nginx, over its Unix socket
                         ids=["127.0.0.1", "127/8", "::1", "mapped", "nginx"])
def test_wrong_keys_from_the_box_itself_are_slowed_never_locked_out(app, client, clock, peer, forwarded):
    """Every app of the box posts from loopback: one process with wrong keys
    must not lock them all out. Each wrong key waits instead; the right one
    works at once, and nothing is counted."""
    slept: list[float] = []
    app.config["SLEEP"] = slept.append
    codes = [keyed(client, f"guess-{i}", peer, forwarded).status_code for i in range(2 * MAX_KEY_FAILURES)]
    assert codes == [401] * (2 * MAX_KEY_FAILURES)
    assert slept == [webui.auth.LOOPBACK_KEY_DELAY_S] * (2 * MAX_KEY_FAILURES) and slept[0] >= 1
    assert keyed(client, API_KEY, peer, forwarded).status_code == 201
    headers = {"Authorization": f"Bearer {API_KEY}", **({"X-Forwarded-For": forwarded} if forwarded else {})}
    assert client.get("/api/v1/status", headers=headers, environ_base={"REMOTE_ADDR": peer}).status_code == 200
    assert len(slept) == 2 * MAX_KEY_FAILURES  # the right key never waits
    assert LoginAttempt.select().count() == 0 and queued() == 1


@pytest.mark.parametrize("peer, forwarded", [("10.0.0.66", None), ("", "192.0.2.66"),
                                             ("10.0.0.67", "127.0.0.1")],  # over TCP the header is not believed
                         ids=["remote", "remote behind nginx", "forged header"])
def test_wrong_keys_from_elsewhere_still_lock_the_address_out(app, client, clock, peer, forwarded):
    slept: list[float] = []
    app.config["SLEEP"] = slept.append
    codes = [keyed(client, f"guess-{i}", peer, forwarded).status_code for i in range(MAX_KEY_FAILURES + 1)]
    assert codes == [401] * MAX_KEY_FAILURES + [429]
    assert keyed(client, API_KEY, peer, forwarded).status_code == 429  # even the right key, for the window
    assert slept == []
    assert keyed(client, API_KEY, "127.0.0.1", event_id="b").status_code == 201  # the box's apps go on
    clock.t += WINDOW_S + 1
    assert keyed(client, API_KEY, peer, forwarded, event_id="c").status_code == 201


# -- parallel logins -----------------------------------------------------------------

def test_parallel_wrong_logins_reach_the_password_check_only_max_failures_times(app, monkeypatch):
    checks = []
    real_check = webui.auth.check_password

    def counted(stored, password):
        checks.append(password)  # list.append is atomic
        return real_check(stored, password)

    monkeypatch.setattr(webui.auth, "check_password", counted)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/login"
    n = 40
    ready = threading.Barrier(n)
    answers: list[requests.Response] = []

    def attempt():
        with requests.Session() as s:
            token = re.search(r'name="csrf_token" value="([^"]+)"', s.get(url, timeout=30).text).group(1)
            ready.wait(timeout=60)
            answers.append(s.post(url, data={"password": "wrong", "csrf_token": token}, timeout=60))

    try:
        workers = [threading.Thread(target=attempt) for _ in range(n)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
    finally:
        server.shutdown()
        thread.join(10)

    codes = sorted(a.status_code for a in answers)
    assert codes == [401] * MAX_FAILURES + [429] * (n - MAX_FAILURES)
    assert len(checks) == MAX_FAILURES
    assert LoginAttempt.select().count() == MAX_FAILURES
    assert all(int(a.headers["Retry-After"]) > 0 for a in answers if a.status_code == 429)


def test_behind_nginx_the_throttle_counts_each_client_not_the_proxy(client, clock):
    """Over gunicorn's Unix socket there is no REMOTE_ADDR: the client is the
    address nginx put in X-Forwarded-For. Over TCP a forged header is ignored."""
    def wrong(forwarded: str, peer: str = ""):
        return login(client, password="wrong-password", headers={"X-Forwarded-For": forwarded},
                     environ_base={"REMOTE_ADDR": peer})

    assert [wrong("192.0.2.66").status_code for _ in range(MAX_FAILURES + 1)] == [401] * MAX_FAILURES + [429]
    assert wrong("192.0.2.7").status_code == 401  # another classroom device is not locked out
    assert login(client, headers={"X-Forwarded-For": "192.0.2.8"}, environ_base={"REMOTE_ADDR": ""}).status_code == 303
    addresses = {a.address for a in LoginAttempt.select()}
    assert addresses == {"login 192.0.2.66", "login 192.0.2.7"}
    # A direct TCP peer cannot pick its address with the header.
    for i in range(MAX_FAILURES):
        wrong(f"198.51.100.{i}", peer="127.0.0.1")
    assert wrong("198.51.100.99", peer="127.0.0.1").status_code == 429
