"""The teacher's page as a box serves it: nginx on the page's port, gunicorn
behind it on a Unix socket. The stack is started by scripts/demo, which
builds it as the package's units do (packaging/nginx_conf.py writes nginx's
configuration for both).

scripts/test-package runs the attack test again against the installed
package's units, through $MSA_STACK_URL, $MSA_STACK_API_KEY and
$MSA_STACK_PIDS (the main pids of the proxy and web units).

Skipped where /usr/sbin/nginx is missing (apt-get install nginx).
"""

from __future__ import annotations

import configparser
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests

from tests.helpers import ROOT

NGINX = "/usr/sbin/nginx"
pytestmark = pytest.mark.skipif(not os.path.exists(NGINX), reason=f"{NGINX} is missing (apt-get install nginx)")

IDLE = 200          # connections that send nothing
SLOW = 50           # connections that send a header byte every DRIP_S
DRIP_S = 2.0
ANSWER_S = 2.0      # the bar for a fresh request meanwhile
RSS_GROWTH_MAX = 8 * 1024 * 1024   # measured: under 1 MiB for the 250 connections


@dataclass
class Stack:
    url: str
    api_key: str
    pids: list[int]   # nginx's master and gunicorn's master: their workers are their children


class Demo:
    """scripts/demo in its own directory, on free ports, with this Python."""

    def __init__(self, tmp: Path):
        self.dir = tmp / "demo"
        self.port = free_port()
        self.out_path = tmp / "demo.out"
        env = dict(os.environ, DEMO_DIR=str(self.dir), DEMO_PORT=str(self.port), SIM_PORT=str(free_port()),
                   BOX_PORT=str(free_port()),
                   DEMO_PYTHON=sys.executable,
                   PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
        env.pop("MOODLE_SYNC_AGENT_CONFIG", None)
        self.proc = subprocess.Popen([str(ROOT / "scripts" / "demo")], env=env, cwd=tmp, stdin=subprocess.DEVNULL,
                                     stdout=open(self.out_path, "w"), stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_ready(self, seconds: float = 90) -> None:
        # The demo prints its banner once the page answered through nginx.
        deadline = time.monotonic() + seconds
        while "Ctrl-C stops the demo" not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"scripts/demo did not come up (status {self.proc.poll()}):\n{self.output()}")
            time.sleep(0.2)

    def api_key(self) -> str:
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(self.dir / "agent.ini")
        return parser.get("web", "api_key")

    def page_pids(self) -> list[int]:
        """The nginx and gunicorn masters: the demo's children that run them."""
        pids = []
        for child in psutil.Process(self.proc.pid).children():
            cmdline = " ".join(child.cmdline())
            if child.name() == "nginx" or "gunicorn" in cmdline:
                pids.append(child.pid)
        return pids

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                for child in psutil.Process(self.proc.pid).children(recursive=True):
                    child.kill()
                self.proc.kill()
                self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[Demo]:
    running = Demo(tmp_path_factory.mktemp("stack"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stack(request) -> Stack:
    if os.environ.get("MSA_STACK_URL"):  # the installed package's units (scripts/test-package)
        return Stack(os.environ["MSA_STACK_URL"], os.environ["MSA_STACK_API_KEY"],
                     [int(p) for p in os.environ["MSA_STACK_PIDS"].split()])
    running = request.getfixturevalue("demo")
    return Stack(running.url, running.api_key(), running.page_pids())


def rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        top = psutil.Process(pid)
        for proc in [top, *top.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
    return total


@contextmanager
def held_connections(url: str) -> Iterator[None]:
    """IDLE connections that never send a byte and SLOW ones that send their
    header a byte every DRIP_S, all held open until the block ends."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(IDLE)]
    slow = [socket.create_connection((host, int(port)), timeout=10) for _ in range(SLOW)]
    for s in slow:
        s.sendall(b"GET / HTTP/1.1\r\nHost: box\r\nX-Slow: ")
    done = threading.Event()

    def drip() -> None:
        while not done.wait(DRIP_S):
            for s in slow:
                try:
                    s.sendall(b"x")
                except OSError:  # nginx gave up on it: that is its right
                    pass

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        time.sleep(DRIP_S + 0.5)  # every connection accepted, each slow one has dripped
        yield
    finally:
        done.set()
        dripper.join()
        for s in idle + slow:
            s.close()


def timed(method: str, url: str, **kw) -> tuple[int | str, float]:
    start = time.monotonic()
    try:
        status: int | str = requests.request(method, url, timeout=10, allow_redirects=False, **kw).status_code
    except requests.RequestException as exc:
        status = type(exc).__name__
    return status, time.monotonic() - start


def post_event(stack: Stack) -> tuple[int | str, float]:
    event = {"type": "user", "id": f"stack-{uuid.uuid4().hex[:12]}", "user": "stacktest",
             "firstname": "Stack", "lastname": "Test", "email": "stacktest@example.org"}
    return timed("POST", stack.url + "/api/v1/events", json=event,
                 headers={"Authorization": f"Bearer {stack.api_key}"})


def test_idle_and_slow_connections_leave_the_page_and_the_api_answering(stack):
    for _ in range(4):  # both gunicorn workers have loaded the app, templates rendered
        timed("GET", stack.url + "/login")
        post_event(stack)
    before = rss(stack.pids)
    with held_connections(stack.url):
        page = timed("GET", stack.url + "/")
        api = post_event(stack)
        during = rss(stack.pids)
    # The page redirects to its login when nobody is logged in.
    assert page[0] in (200, 302) and page[1] < ANSWER_S, f"GET /: {page[0]} after {page[1]:.2f} s"
    assert api[0] == 201 and api[1] < ANSWER_S, f"POST /api/v1/events: {api[0]} after {api[1]:.2f} s"
    assert during - before < RSS_GROWTH_MAX, f"nginx + gunicorn grew by {(during - before) >> 10} KiB"


def test_the_app_gets_the_client_address_from_nginx(demo):
    # nginx replaces any X-Forwarded-For the client sent with the address
    # it sees; gunicorn's access log shows it (what the login throttle needs).
    path = f"/no-such-page-{uuid.uuid4().hex[:8]}"
    conn = socket.create_connection(("127.0.0.1", demo.port), timeout=10, source_address=("127.0.0.2", 0))
    with conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: box\r\nX-Forwarded-For: 10.9.9.9\r\n"
                     "Connection: close\r\n\r\n".encode())
        assert conn.recv(100).startswith(b"HTTP/1.1 404")
    deadline = time.monotonic() + 5
    while path not in demo.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = [line for line in demo.output().splitlines() if path in line]
    assert [line.split()[0] for line in lines] == ["127.0.0.2"], lines


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_demo_keeps_its_files_private_and_stops_every_child(tmp_path, signum):
    demo = Demo(tmp_path)
    try:
        modes = {str(p.relative_to(demo.dir)): stat.S_IMODE(p.stat().st_mode)
                 for p in [demo.dir, *demo.dir.rglob("*")]}
        children = psutil.Process(demo.proc.pid).children(recursive=True)
        names = sorted({" ".join(c.cmdline()[:3]).rsplit("/", 1)[-1] for c in children})
        simulators = sum("moodle-simulator" in " ".join(c.cmdline()) for c in children)
        os.kill(demo.proc.pid, signum)
        gone, alive = psutil.wait_procs(children, timeout=15)
    finally:
        demo.stop()
    private = {name: mode for name, mode in modes.items() if mode & 0o077 == 0}
    assert modes == private, f"readable by others: {sorted(set(modes) - set(private))}"
    assert {"agent.db", "agent.ini", "token"} <= set(modes) and modes["."] == 0o700, modes
    # The two simulators (server, box), the daemon, gunicorn, nginx (master, workers).
    kinds = ["moodle-simulator", "-m agent", "gunicorn", "nginx: master", "nginx: worker"]
    assert all(any(kind in name for name in names) for kind in kinds), names
    assert simulators == 2, names
    assert alive == [], f"still running after {signum.name}: {[' '.join(p.cmdline()) for p in alive]}"


def test_the_demo_lands_the_learners_work_from_the_box_on_the_server(demo):
    """What a newcomer sees: work done in the box's Moodle (its own ids)
    reaches the school's Moodle under the server's ids, through the daemon."""
    from tests.helpers import MoodleReader

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(demo.dir / "agent.ini")
    server = MoodleReader(parser.get("moodle", "url"), Path(parser.get("moodle", "token_file")).read_text().strip())
    # The agent's tokens are the sync account's on both sides (connect, issue 20), not an administrator's.
    box_moodle = MoodleReader(parser.get("box", "url"), Path(parser.get("box", "token_file")).read_text().strip())
    for site in (server, box_moodle):
        info = site.call("core_webservice_get_site_info")
        assert (info["username"], info["userissiteadmin"]) == ("syncagent", False)
    env = dict(os.environ, MOODLE_SYNC_AGENT_CONFIG=str(demo.dir / "agent.ini"),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    result = subprocess.run([sys.executable, "-m", "agent", "sync", "--via-agent", "--json"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    run = json.loads(result.stdout)
    assert run["status"] == "completed" and run["events_sent"] >= 3, run  # collected at start or just before
    assert server.completion(2, 3, 1) == 1  # student1's page: box cmid 101, server cmid 1
    assert server.grade(2, 4, 3)[0] == 80  # the teacher's grade for student2 (box id 24, server id 4)
    amina = server.user_id("amina2")  # an account the box alone had
    assert amina and server.completion(2, amina, 2) == 1
