"""One connection per Moodle (agent/moodle/): the only module that builds a
batch or reads the site info; the site info read once per run and per
Moodle; Retry-After honoured the same way up and down; the encodings the
agent can read, asked for explicitly. Real HTTP on loopback: the simulators,
a fault proxy, and a tiny server that records what it is sent."""

from __future__ import annotations

import ast
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import agent
from tests.helpers import TOKEN, Box, MoodleReader
from tests.proxy import CUT, Proxy
from tests.test_collect import boxsim  # noqa: F401 (the fixture)
from tests.test_collect import BOX_C1, BOX_TOKEN, OFFSET_CM, box_section, run_json

SOURCES = Path(agent.__file__).resolve().parents[1]
SITE_INFO = "core_webservice_get_site_info"
READS = "core_completion_get_activities_completion_status"
RECORDINGS = Path(__file__).resolve().parent / "recordings"


def sources() -> dict[str, str]:
    return {str(p.relative_to(SOURCES)): p.read_text() for package in ("agent", "webui")
            for p in (SOURCES / package).rglob("*.py")}


def constants(text: str) -> set[str]:
    """The string constants of a module's code (its docstrings and help texts may name anything)."""
    tree = ast.parse(text)
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
            and isinstance(node.body[0], ast.Expr)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs}


@pytest.mark.parametrize("marker", [
    "tool_mobile_call_external_functions",  # the batch
    "sitename", "userissiteadmin", "functions", "siteurl",  # the site info's fields
])
def test_batches_and_the_site_info_are_read_in_one_module_only(marker):
    where = sorted(name for name, text in sources().items() if marker in constants(text))
    assert where == ["agent/moodle/connection.py"], f"{marker} is read in {where}"


def test_no_other_module_sends_a_batch_or_asks_for_the_site_info_itself():
    found = {name for name, text in sources().items()
             if re.search(r"\.batch\(|Transport\.call\(|\bcall\(\s*SITE_INFO", text)}
    assert found == {"agent/moodle/connection.py"}


# -- the site info, once per run and per Moodle --------------------------------------------------------------


def two_way_box(tmp_path, server_url: str, boxsim, direction: str = "both") -> Box:  # noqa: F811
    box = Box(tmp_path, server_url, extra=box_section(tmp_path, boxsim) + f"\n[sync]\ndirection = {direction}\n")
    assert box.cli("courses", "add", "C1", "C2").returncode == 0
    return box


def site_infos(sim) -> int:
    return sim.stats.snapshot()["calls"].get(SITE_INFO, 0)


def test_a_sync_both_ways_asks_each_moodle_for_its_site_info_once(tmp_path, simulator, boxsim):  # noqa: F811
    box = two_way_box(tmp_path, simulator.url, boxsim)
    MoodleReader(simulator.url, TOKEN).call("core_completion_override_activity_completion_status",
                                            userid=4, cmid=1, newstate=1)
    simulator.stats.reset()
    boxsim.stats.reset()
    code, run, err = run_json(box, "sync")
    assert code == 0 and run["status"] == "completed", (run, err)
    # The collection, the course check, the push and the way down all used them.
    assert run["collected"]["status"] == "completed" and run["actions"]["completions_down"] == 1, run
    assert (site_infos(simulator), site_infos(boxsim)) == (1, 1)
    # The way down's bytes are its own: the collection's row counts the box's site info.
    [collection] = [r for r in box.history(3) if r["id"] == run["collected"]["run"]]
    assert collection["trigger"] == "collect" and collection["bytes_sent"] > 0
    assert run["box_bytes"]["sent"] > 0
    assert collection["bytes_sent"] + run["box_bytes"]["sent"] == boxsim.stats.snapshot()["bytes_in"]


def test_the_daemons_scheduled_run_checks_the_server_once(tmp_path, simulator, boxsim, capsys):  # noqa: F811
    from agent.config import load_config
    from agent.service import worker
    from agent.store.db import close_db, open_db

    box = two_way_box(tmp_path, simulator.url, boxsim, "up")
    box.enqueue([{"type": "completion", "course_id": 2, "user": "student1", "cmid": 1, "completed": True}])
    simulator.stats.reset()
    boxsim.stats.reset()
    config = load_config(box.config)
    open_db(config.agent.database)
    try:
        outcome = worker.scheduled(config, threading.Event())
    finally:
        close_db()
    assert outcome == {"status": "completed"}, outcome
    assert (site_infos(simulator), site_infos(boxsim)) == (1, 1)
    [run] = [r for r in box.history(3) if r["trigger"] == "schedule"]
    assert run["actions"]["completions"] == 1
    # The check is the run's: its bytes are in the run's row.
    assert run["bytes_sent"] == simulator.stats.snapshot()["bytes_in"]


# -- Retry-After, the same on the way down as on the way up ---------------------------------------------------


def test_a_503_with_retry_after_on_the_way_down_is_waited_for(tmp_path, simulator, boxsim):  # noqa: F811
    proxy = Proxy(simulator.url)
    try:
        box = two_way_box(tmp_path, proxy.url, boxsim, "down")
        code, run, err = run_json(box, "sync")
        assert code == 0, (run, err)
        MoodleReader(simulator.url, TOKEN).call("core_completion_override_activity_completion_status",
                                                userid=4, cmid=1, newstate=1)
        # The way down's first read of the server's completion states is answered 503, Retry-After: 1.
        proxy.on(READS, 1, lambda: simulator.faults.set(status=503, retry_after=1, status_count=1))
        code, run, err = run_json(box, "sync")
        assert (code, run["status"], run["errors"]) == (0, "completed", []), (run, err)
        assert simulator.stats.snapshot()["faults_fired"] == {"status_503": 1}
        assert run["actions"]["completions_down"] == 1
        assert MoodleReader(boxsim.url, BOX_TOKEN).completion(BOX_C1, 24, 1 + OFFSET_CM) == 1
    finally:
        proxy.stop()


def test_a_503_with_retry_after_while_collecting_is_waited_for(tmp_path, simulator, boxsim):  # noqa: F811
    box = two_way_box(tmp_path, simulator.url, boxsim, "up")
    proxy = Proxy(boxsim.url)
    try:
        box.write_config(simulator.url, extra=box_section(tmp_path, boxsim).replace(boxsim.url, proxy.url))
        proxy.on("core_enrol_get_enrolled_users", 1,
                 lambda: boxsim.faults.set(status=503, retry_after=1, status_count=1))
        code, run, err = run_json(box, "collect")
        assert (code, run["status"], run["errors"]) == (0, "completed", []), (run, err)
        assert boxsim.stats.snapshot()["faults_fired"] == {"status_503": 1}
        assert run["actions"]["enrolments"] > 0
    finally:
        proxy.stop()


def test_the_boxs_moodle_lost_on_the_way_down_ends_the_way_down_not_the_push(tmp_path, simulator,
                                                                            boxsim):  # noqa: F811
    """Its site info was read once, at the collection: when it goes away
    after that, the way down says so and the push still goes."""
    proxy = Proxy(boxsim.url)
    try:
        section = box_section(tmp_path, boxsim).replace(boxsim.url, proxy.url)
        box = Box(tmp_path, simulator.url, extra=section + "\n[sync]\ndirection = both\n")
        assert box.cli("courses", "add", "C1", "C2").returncode == 0
        code, run, err = run_json(box, "sync")
        assert code == 0, (run, err)
        MoodleReader(simulator.url, TOKEN).call("core_completion_override_activity_completion_status",
                                                userid=4, cmid=1, newstate=1)
        box.enqueue([{"type": "completion", "course_id": 2, "user": "student1", "cmid": 2, "completed": True}])
        proxy.on("core_completion_override_activity_completion_status", 1, CUT)
        code, run, err = run_json(box, "sync")
        assert (code, run["status"]) == (1, "completed_with_errors"), (run, err)
        [error] = run["errors"]
        assert error.startswith("direction down: the box's Moodle stopped answering: "), error
        assert run["events_sent"] == 1 and run["actions"]["completions"] == 1
        assert MoodleReader(simulator.url, TOKEN).completion(2, 3, 2) == 1
    finally:
        proxy.stop()


# -- what the agent sends ------------------------------------------------------------------------------------


class Recorder(BaseHTTPRequestHandler):
    """Answers every POST with the recorded site info; keeps each request's headers."""

    seen: list[dict[str, str]] = []
    answer = b""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(self.answer)))
        self.end_headers()
        self.wfile.write(self.answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder():
    recorded = json.loads((RECORDINGS / "01_core_webservice_get_site_info.json").read_text())
    Recorder.seen, Recorder.answer = [], json.dumps(recorded["response"]).encode()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_the_agent_asks_only_for_the_encodings_it_decodes(tmp_path, recorder):
    url = f"http://127.0.0.1:{recorder.server_address[1]}"
    box = Box(tmp_path, url)
    result = box.cli("check", "--json")  # the real command, in its own process
    assert json.loads(result.stdout)["online"] is True, result.stderr
    [headers] = Recorder.seen
    assert headers["accept-encoding"] == "gzip, deflate"
    assert headers["user-agent"].startswith("moodle-sync-agent/")

    from agent.config import load_config
    from agent.moodle import MoodleClient

    client = MoodleClient(load_config(box.config).moodle)
    info = client.site_info()
    assert client.site_info() is info and len(Recorder.seen) == 2  # asked once per connection
    assert (info.site_name, info.is_site_admin, info.can_batch) == ("Moodle Reference Server", True, True)
    assert Recorder.seen[1]["accept-encoding"] == "gzip, deflate"
