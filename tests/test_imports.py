"""The house rules of the import graph, read from the source (ast), not
from a comment: no cycle in agent/ and webui/; the page reads state and asks
the daemon, and never loads the sync engine; the stored state (queue,
history, settings ...) loads neither the engine nor the wire; the pure
modules load neither the database nor the wire; a test module never imports
another test module (shared fixtures are in conftest.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import agent

pytestmark = pytest.mark.pure  # no simulator, no database: pytest -m pure

ROOT = Path(__file__).resolve().parents[1]
# Where agent/ and webui/ are: the checkout, or the installed package's
# private directory (scripts/test-package runs these tests there).
SOURCES = Path(agent.__file__).resolve().parents[1]
PACKAGES = ("agent", "webui")

ENGINE = {"agent.sync", "agent.verify", "agent.runs", "agent.push.plan", "agent.push.session", "agent.service.worker",
          "agent.service.daemon", "agent.cli", "agent.courses", "agent.moodle", "agent.box.collect", "agent.box.diff",
          "agent.down.pull", "agent.down.diff", "agent.moodle.connection", "agent.moodle.transport",
          "agent.push.pusher", "agent.course_check", "agent.check"}
WIRE = {"agent.moodle", "agent.moodle.connection", "agent.moodle.transport", "requests", "urllib3"}
STORED_STATE = {"agent.store.db", "agent.store.queue", "agent.store.history", "agent.store.settings",
                "agent.store.handoff", "agent.store.retention", "agent.store.schema", "agent.store.diskspace",
                "agent.store.known",
                "agent.store.status", "agent.store.runkinds", "agent.clock", "agent.text", "agent.roles", "agent.config"}
# Pure: testable without a database or a server (pytest -m pure). Every
# module of agent/ that loads none of IMPURE is listed here, and the reverse.
PURE = {"agent", "agent.box", "agent.box.diff", "agent.clock", "agent.check_local", "agent.config", "agent.config_docs", "agent.config_values", "agent.down",
        "agent.down.diff", "agent.logs", "agent.push", "agent.push.plan", "agent.roles", "agent.service",
        "agent.service.schedule", "agent.store", "agent.store.runkinds", "agent.text", "agent.interrupt", "agent.rights", "agent.box.check",
        "agent.kinds", "agent.exits"}
IMPURE = {"agent.store.db", "peewee", "psutil"} | WIRE
TESTS = ROOT / "tests"


def module_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in (SOURCES / package).rglob("*.py"):
            name = ".".join(path.relative_to(SOURCES).with_suffix("").parts)
            files[name.removesuffix(".__init__")] = path
    return files


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module this file imports, at any depth of its code (lazy imports count)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m if m in known else m.split(".")[0] for m in found} - {name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph.get(name, ()))
    return seen


def test_the_graph_is_read(graph):
    assert {"agent.sync", "agent.cli", "webui", "webui.views"} <= set(graph)
    assert "agent.runs" in graph["agent.sync"] and "peewee" in graph["agent.store.db"]


def test_no_import_cycle(graph):
    cycles = sorted(name for name in graph if name in reachable(graph, name))
    assert not cycles, f"modules that import themselves through others: {cycles}"


# The Learners screen writes into the box's Moodle at once (issue 19): it
# loads the client (requests only when a form is sent), never the engine.
BOX_WRITER = {"webui", "webui.learners", "agent.learners"}


def test_the_page_never_loads_the_sync_engine(graph):
    for name in (n for n in graph if n.startswith("webui")):
        bad = reachable(graph, name) & (ENGINE | WIRE)
        if name in BOX_WRITER:
            bad -= WIRE
        assert not bad, f"{name} loads {sorted(bad)}"


def test_stored_state_loads_neither_the_engine_nor_the_wire(graph):
    for name in STORED_STATE:
        bad = reachable(graph, name) & (ENGINE | WIRE)
        assert not bad, f"{name} loads {sorted(bad)}"


def test_the_pure_modules_load_neither_the_database_nor_the_wire(graph):
    for name in PURE:
        bad = reachable(graph, name) & IMPURE
        assert not bad, f"{name} loads {sorted(bad)}"
    assert {"agent.push.plan", "agent.box.diff", "agent.down.diff"} <= PURE


def test_every_pure_module_is_listed(graph):
    pure = {name for name in graph if name.split(".")[0] == "agent" and not reachable(graph, name) & IMPURE}
    assert pure == PURE, f"pure but not listed: {sorted(pure - PURE)}; listed but not pure: {sorted(PURE - pure)}"


def test_no_test_module_imports_another():
    """Shared fixtures live in conftest.py, shared functions in tests/helpers.py:
    a test module imported by another couples them (and a fixture imported by
    name hides where it comes from)."""
    modules = {path.stem for path in TESTS.glob("test_*.py")}
    assert len(modules) > 20, "the test modules were not found"
    found = {path.name: sorted(bad) for path in TESTS.glob("*.py")
             if (bad := imported_test_modules(path, modules))}
    assert not found, f"test modules imported by others: {found}"


def imported_test_modules(path: Path, modules: set[str]) -> set[str]:
    """The test modules ``path`` imports: ``tests.test_x``, ``from .test_x import``,
    ``from tests import test_x`` ..."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names |= {node.module or ""} | {f"{node.module or ''}.{alias.name}" for alias in node.names}
    return {name for name in names if any(part in modules for part in name.split("."))}


def test_a_test_module_importing_another_would_be_seen(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text("import os\nfrom tests.helpers import login\nfrom tests.test_web import login\n"
                      "from . import test_sync\nimport tests.test_down\n")
    assert imported_test_modules(sample, {"test_web", "test_sync", "test_down", "test_sample"}) == {
        "tests.test_web", "tests.test_web.login", ".test_sync", "tests.test_down"}


def test_a_cycle_would_be_seen():
    fake = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert {n for n in fake if n in reachable(fake, n)} == {"a", "b", "c"}


def test_no_module_is_too_long_to_read():
    """A module over 700 lines holds more than one concern: split it."""
    roots = [SOURCES / "agent", SOURCES / "webui", ROOT / "scripts" / "moodle_simulator"]
    lengths = {f"{path.parent.name}/{path.name}": len(path.read_text().splitlines())
               for root in roots for path in root.rglob("*.py")}
    assert len(lengths) > 40, "the modules were not found"
    assert not {name: n for name, n in lengths.items() if n > 700}


def test_no_module_of_the_agent_is_over_450_lines():
    """The agent's modules stay small enough to read in one sitting: one concern each."""
    lengths = {str(path.relative_to(SOURCES)): len(path.read_text().splitlines())
               for path in (SOURCES / "agent").rglob("*.py")}
    assert len(lengths) > 40, "the modules were not found"
    assert not {name: n for name, n in lengths.items() if n > 450}


LOADED = """
import sys
from agent import cli
code = cli.main(sys.argv[1:])
heavy = ("agent.sync", "agent.service.daemon", "agent.box.collect", "agent.down.pull", "agent.verify", "agent.service.worker",
         "requests", "urllib3", "schedule")
print("exit", code, "loaded", ",".join(m for m in heavy if m in sys.modules))
"""


@pytest.mark.parametrize("argv", [["status"], ["status", "--json"], ["history"], ["conflicts"], ["enqueue", "-"]])
def test_quick_commands_start_without_the_engine(tmp_path, argv):
    """The command line loads the daemon, the engines and requests only for the
    commands that run them: each cost `status` memory and start-up time."""
    import subprocess
    import sys

    from tests.helpers import Box

    box = Box(tmp_path, "http://127.0.0.1:9")
    box.keep_courses(2)
    event = '{"type": "completion", "course_id": 2, "user": "student1", "cmid": 1, "completed": true}'
    result = subprocess.run([sys.executable, "-c", LOADED, *argv], input=event, capture_output=True, text=True,
                            env=box.env(), timeout=60, cwd=tmp_path)
    assert result.stdout.splitlines()[-1] == "exit 0 loaded ", result.stdout + result.stderr
