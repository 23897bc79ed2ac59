"""E-mail notices, received by a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import email
import email.policy
import socket
import subprocess
import time

import pytest
import requests
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from agent.store import handoff, settings
from agent.config import load_config
from agent.courses import add as add_courses
from agent.service.daemon import Daemon
from agent.store.db import Run
from agent.store.schema import close_db, open_db
from agent.moodle import MoodleClient
from agent.store.queue import enqueue, validate_events
from tests.helpers import TOKEN, Box

TEACHER = "teacher@school.example"


class Inbox:
    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_config(tmp_path, simulator, smtp: str):
    box = Box(tmp_path, simulator.url, token=TOKEN, extra=f"[schedule]\nenabled = no\n\n[smtp]\n{smtp}\n")
    config = load_config(box.config)
    open_db(config.agent.database)
    return config


@pytest.fixture
def smtp_port():
    return free_port()


@pytest.fixture
def config(tmp_path, simulator, smtp_port):
    cfg = make_config(tmp_path, simulator, f"host = 127.0.0.1\nport = {smtp_port}\nsender = box@school.example\ntimeout = 2")
    settings.put(notify_enabled=True, notify_email=TEACHER)
    yield cfg
    close_db()


def run_once(daemon: Daemon) -> Run:
    request = handoff.request_sync()
    daemon.step()
    daemon.wait_idle()  # the run, then the notices
    return Run.get_by_id(type(request).get_by_id(request.id).sync_id)


def test_notice_has_the_box_the_status_and_every_field(config, smtp_port, simulator):
    inbox = Inbox()
    server = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    server.start()
    try:
        add_courses(MoodleClient(config.moodle), ["C1", "C3"])
        requests.post(f"{simulator.url}/__sim/edit", json={"op": "delete_course", "courseid": 4}, timeout=10)
        enqueue(validate_events([
            {"type": "user", "user": "kid1", "firstname": "K", "lastname": "One", "email": "k1@example.org"},
            {"type": "enrolment", "course_id": 2, "user": "kid1"},
            {"type": "completion", "course_id": 2, "user": "kid1", "cmid": 1, "completed": True},
            {"type": "completion", "course_id": 4, "user": "kid1", "cmid": 7, "completed": True},
            {"type": "completion", "course_id": 2, "user": "kid1", "cmid": 99, "completed": True},
        ]))
        row = run_once(Daemon(config))
    finally:
        server.stop()
    assert row.status == "completed_with_warnings" and row.notified is True
    [msg] = inbox.messages
    assert inbox.envelopes == [("box@school.example", [TEACHER])]
    assert msg["Subject"] == "[test-box] sync completed with warnings"
    assert msg["To"] == TEACHER and msg["From"] == "box@school.example"
    text = msg.get_content()
    for expected in (f"Id:             {row.id}", f"Started:        {row.started_at}",
                     f"Completed:      {row.completed_at}", f"Duration:       {row.duration_s:.1f} s",
                     "Data sent:      ", " KB", "Data received:  ", "Kind:           sync\r\nTrigger:        page",
                     "C1 (id 2): unchanged", "C3 (id 4): missing on the server: 1 event(s) kept as conflicts",
                     "users created: 1", "enrolments: 1", "completions: 1", "Events sent:    3",
                     "Conflicts:      2"):
        assert expected in text, (expected, text)
    # Each warning with what to do, from the table of reasons (agent/reasons.py).
    lines = text.splitlines()
    at = lines.index("  - The course C3 is missing on the school's Moodle.")
    assert lines[at + 1].startswith("    What to do: Restore the course on the school's Moodle"), lines
    assert "- 2 events could not be applied and wait as conflicts." in text
    assert text.split("Details:")[1].split() == ["none"]
    assert TOKEN not in text


def test_smtp_down_the_sync_completes_and_the_notice_goes_out_after_the_next_run(config, smtp_port, caplog):
    daemon = Daemon(config)
    first = run_once(daemon)  # nothing listens on the SMTP port
    assert first.status == "completed" and first.notified is False
    assert "not sent" in caplog.text and "retried after the next sync" in caplog.text
    inbox = Inbox()
    server = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    server.start()
    try:
        second = run_once(daemon)
    finally:
        server.stop()
    bodies = [m.get_content() for m in inbox.messages]
    assert len(bodies) == 2
    assert first.id in bodies[0] and second.id in bodies[1]
    assert Run.select().where(Run.notified == False).count() == 0  # noqa: E712


def test_a_mail_server_that_hangs_never_delays_a_sync(config, smtp_port):
    silent = socket.socket()  # accepts connections, never says a word
    silent.bind(("127.0.0.1", smtp_port))
    silent.listen(5)
    try:
        daemon = Daemon(config)
        handoff.request_sync()
        daemon.step()
        daemon.job.thread.join(30)
        daemon.step()  # collects the run, starts the notice
        assert daemon.notifier.thread.is_alive()
        start = time.monotonic()
        request = handoff.request_sync()
        daemon.step()  # the next request starts at once
        assert request.id == daemon.job.request.id and time.monotonic() - start < 1
        daemon.wait_idle()
    finally:
        silent.close()
    assert [r.status for r in Run.select()] == ["completed", "completed"]


def test_notices_off_nothing_is_owed_later(config, smtp_port):
    settings.put(notify_enabled=False)
    daemon = Daemon(config)
    run_once(daemon)
    inbox = Inbox()
    server = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    server.start()
    try:
        settings.put(notify_enabled=True)
        latest = run_once(daemon)
    finally:
        server.stop()
    [msg] = inbox.messages
    assert latest.id in msg.get_content()


def test_starttls_and_login(tmp_path, simulator, monkeypatch):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust this server, verification stays on
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"mail-secret")

    port = free_port()
    inbox = Inbox()
    server = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
                        auth_required=True, authenticator=authenticator)
    config = make_config(tmp_path, simulator, f"host = 127.0.0.1\nport = {port}\nstarttls = yes\n"
                                        "username = box1\npassword = mail-secret")
    settings.put(notify_enabled=True, notify_email=TEACHER)
    server.start()
    try:
        row = run_once(Daemon(config))
    finally:
        server.stop()
        close_db()
    assert logins == [(b"box1", b"mail-secret")]
    assert len(inbox.messages) == 1 and row.id in inbox.messages[0].get_content()
