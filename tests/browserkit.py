"""The page's browser tests' stack and helpers (tests/test_browser.py,
tests/test_health_page.py): gunicorn with two workers on loopback, the agent
serving the page's requests, the Moodle simulator; a page in headless
Chromium (the ``browser`` fixture is in conftest.py)."""

from __future__ import annotations

import re
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.helpers import ROOT, Box

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = ROOT / "test-output" / "screenshots"
TOKEN = "b7005e1f0c9d2b7a4c3e2d1f0a9b8c7d"
PASSWORD = "teacher-pass-1"
EVENTS = 60

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            requests.get(url, timeout=5)
            return
        except requests.RequestException:  # not listening yet, or a worker still booting
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve_page(box: Box, cwd: Path, log: Path, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """The page as the package serves it (gunicorn with its config) on a free
    loopback port, answering /login: its process and its address."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "w") as out:
        web = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "packaging" / "gunicorn.conf.py"),
             "--bind", f"127.0.0.1:{port}", "webui:create_app()"],
            env=env or box.env(), cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(url + "/login", web)
    except BaseException:
        stop(web)  # no gunicorn left behind when the page never came up
        raise
    return web, url


class Stack:
    """Everything the page needs, as on the box: one config file for all."""

    def __init__(self, tmp: Path):
        from moodle_simulator import start_simulator

        self.sim = start_simulator(token=TOKEN)
        # The daily schedule stays off, so that only the page starts syncs here.
        self.box = Box(tmp, self.sim.url, token=TOKEN, batch_size=5,
                       extra=f"[schedule]\nenabled = no\n\n[web]\napi_key = k-{TOKEN[::-1]}\n")
        assert self.box.cli("courses", "add", "C1", "C2", "C3").returncode == 0
        assert self.box.cli("set-password", "--stdin", input=PASSWORD + "\n").returncode == 0
        self.logs = tmp / "logs"
        self.logs.mkdir()
        env = self.box.env()
        env.pop("MOODLE_SYNC_AGENT_WORKERS", None)
        self.agent = subprocess.Popen(self.agent_argv(), env=env, cwd=tmp,
                                      stdout=open(self.logs / "agent.out", "w"), stderr=subprocess.STDOUT)
        try:
            self.web, self.url = serve_page(self.box, tmp, self.logs / "web.out", env)
        except BaseException:
            stop(self.agent)
            self.sim.stop()
            raise

    def agent_argv(self) -> list[str]:
        # The daemon that serves the page's requests, as installed: `moodle-sync-agent run`.
        return [sys.executable, "-m", "agent", "--config", str(self.box.config), "run"]

    def history(self) -> list[dict]:
        return self.box.history(5)

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.box.database)

    def close(self) -> None:
        stop(self.agent)
        stop(self.web)
        self.sim.stop()


def new_page(browser, width: int, height: int):
    context = browser.new_context(viewport={"width": width, "height": height}, locale="en-GB",
                                  reduced_motion="reduce")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # (A refused request logs "Failed to load resource": that is the page working.)
    page.on("console", lambda msg: errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    # Loopback only: any other address is a failure.
    page.route(re.compile(r"^(?!http://127\.0\.0\.1:\d+/).*"), lambda route: (errors.append(route.request.url),
                                                                              route.abort()))
    page.js_errors = errors
    return page


def shot(page, name: str, full: bool = True) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full)


def log_in(page, stack) -> None:
    page.goto(stack.url + "/")
    assert page.url.startswith(stack.url + "/login")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("#start")


def wait_for_run_end(page, before_id: str | None, timeout_s: float = 60, on_sending=None) -> list[tuple]:
    """Watch the progress panel until a new row tops Last Syncs; returns what
    the panel showed meanwhile. on_sending(page) is called once, mid-send."""
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = page.evaluate("""() => {
            const p = document.getElementById('progress');
            const b = document.getElementById('start');
            const top = document.querySelector('#history tbody tr');
            return [p && !p.hidden, document.getElementById('phase')?.textContent,
                    document.getElementById('courses-count')?.textContent,
                    document.getElementById('events-count')?.textContent,
                    b && b.disabled, top && top.dataset.runId];
        }""")
        if state[0]:
            seen.append(tuple(state[1:5]))
            if on_sending and state[1] == "Sending events" and not state[3].startswith("0 of"):
                on_sending(page)
                on_sending = None
        if state[5] and state[5] != before_id and not state[0]:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"no new sync row after {timeout_s} s; saw {seen[-5:]}")


def top_run_id(page) -> str | None:
    return page.evaluate("document.querySelector('#history tbody tr')?.dataset.runId || null")


def expected_when(iso: str) -> str:
    return iso.replace("T", " ").replace("Z", " UTC")


def check_dialog(page, run: dict) -> None:
    from webui.formats import duration, size

    dialog = page.locator(f"#run-{run['id']}")
    assert dialog.is_visible()
    assert dialog.get_by_role("heading", name="Information").is_visible()
    field = lambda name: dialog.locator(f'[data-field="{name}"]').first.inner_text().strip()  # noqa: E731
    status_words = {"completed": "Success", "skipped_offline": "Skipped: server not reachable",
                    "failed": "Failed", "completed_with_errors": "Completed with problems"}
    assert field("status").startswith(status_words[run["status"]])
    assert dialog.locator('[data-field="id"] code').inner_text() == run["id"]
    assert field("started_at") == expected_when(run["started_at"])
    assert field("completed_at") == expected_when(run["completed_at"])
    assert field("duration") == duration(run["duration_s"], "en")
    assert field("bytes_sent") == f"{size(run['bytes_sent'], 'en')} sent"
    assert field("bytes_received") == f"{size(run['bytes_received'], 'en')} received"
    # Bytes are no error: both ways in the same neutral colour (issue 23).
    sent = dialog.locator('[data-field="bytes_sent"]').evaluate("e => getComputedStyle(e).color")
    received = dialog.locator('[data-field="bytes_received"]').evaluate("e => getComputedStyle(e).color")
    r, g, b = map(int, re.findall(r"\d+", sent)[:3])
    assert sent == received and max(r, g, b) - min(r, g, b) < 40, (sent, received)
    courses = dialog.locator('[data-field="courses"] li').all_inner_texts()
    outcome_words = {"unchanged": "unchanged", "fetched": "fetched from the server"}
    assert courses == [f"{c['shortname']} — {outcome_words.get(c['outcome'], c['outcome'])}" for c in run["courses"]]
    for kind, count in run["actions"].items():
        assert dialog.locator(f'[data-field="actions"] li[data-kind="{kind}"] strong').inner_text() == str(count)
    # The raw errors behind a "Details" toggle, under the sentence and what to do.
    if run["errors"]:
        dialog.locator('[data-field="errors"] summary').click()
    errors = dialog.locator('[data-field="errors"] li').all_inner_texts()
    assert [e.strip() for e in errors] == run["errors"]
