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

ENGINE = {"agent.sync", "agent.verify", "agent.runs", "agent.push.plan", "agent.push.session", "agent.service.worker",
          "agent.service.daemon", "agent.cli", "agent.courses", "agent.moodle", "agent.box.collect", "agent.box.diff",
          "agent.down.pull", "agent.down.diff", "agent.moodle.connection", "agent.moodle.transport",
          "agent.push.pusher", "agent.course_check", "agent.check"}
WIRE = {"agent.moodle", "agent.moodle.connection", "agent.moodle.transport", "requests", "urllib3"}
STORED_STATE = {"agent.store.db", "agent.store.queue", "agent.store.history", "agent.store.settings",
                "agent.store.handoff", "agent.store.retention", "agent.store.diskspace", "agent.store.known",
                "agent.clock", "agent.text", "agent.roles", "agent.config"}
# Pure planning: testable without a database or a server.
PURE = {"agent.push.plan": {"agent.roles", "agent.kinds"}, "agent.box.diff": set(), "agent.kinds": set(),
        "agent.down.diff": {"agent.kinds"}}


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
