"""The house rules of the import graph, read from the source (ast), not
from a comment: no cycle in agent/ and webui/; the page reads state and asks
the daemon, and never loads the sync engine; the stored state (queue,
history, settings ...) loads neither the engine nor the wire."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import agent

ROOT = Path(__file__).resolve().parents[1]
# Where agent/ and webui/ are: the checkout, or the installed package's
# private directory (scripts/test-package runs these tests there).
SOURCES = Path(agent.__file__).resolve().parents[1]
PACKAGES = ("agent", "webui")

ENGINE = {"agent.sync", "agent.verify", "agent.runs", "agent.plan", "agent.worker", "agent.daemon", "agent.cli",
          "agent.courses", "agent.moodle", "agent.collect", "agent.box_diff"}
WIRE = {"agent.moodle", "requests", "urllib3"}
STORED_STATE = {"agent.db", "agent.queue", "agent.history", "agent.settings", "agent.handoff", "agent.retention",
                "agent.storage", "agent.clock", "agent.text", "agent.roles", "agent.config"}
# Pure planning: testable without a database or a server.
PURE = {"agent.plan": {"agent.roles"}, "agent.box_diff": set()}


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
    assert "agent.runs" in graph["agent.sync"] and "peewee" in graph["agent.db"]


def test_no_import_cycle(graph):
    cycles = sorted(name for name in graph if name in reachable(graph, name))
    assert not cycles, f"modules that import themselves through others: {cycles}"


def test_the_page_never_loads_the_sync_engine(graph):
    for name in (n for n in graph if n.startswith("webui")):
        bad = reachable(graph, name) & (ENGINE | WIRE)
        assert not bad, f"{name} loads {sorted(bad)}"


def test_stored_state_loads_neither_the_engine_nor_the_wire(graph):
    for name in STORED_STATE:
        bad = reachable(graph, name) & (ENGINE | WIRE)
        assert not bad, f"{name} loads {sorted(bad)}"


def test_the_planner_is_pure(graph):
    for name, allowed in PURE.items():
        project = {m for m in reachable(graph, name) if m.split(".")[0] in PACKAGES or m in ("peewee", "psutil")}
        assert project <= allowed, f"{name} loads {sorted(project - allowed)}"


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


LOADED = """
import sys
from agent import cli
code = cli.main(sys.argv[1:])
heavy = ("agent.sync", "agent.daemon", "agent.collect", "agent.down", "agent.verify", "agent.worker",
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
