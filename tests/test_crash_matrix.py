"""Crash matrix: the sync process killed (SIGKILL) at 50 random moments of a
5,000-event sync, each time followed by a clean sync.

Reproducible: the moments come from ``random.Random(SEED)``; half are a delay
after the start, half "once N events are marked sent" (polled from SQLite).
Each trial starts from the same database snapshot (a file copy) and a reset
simulator. After each: zero events lost, zero applied twice (each account and
enrolment made once, completions and grades as last queued; every event sent
exactly once in the database), ``PRAGMA integrity_check`` ok.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import sqlite3
import time

import pytest

from tests.helpers import TOKEN, Box, expected_view, server_view

SEED = 20261123
TRIALS = 50
N_EVENTS = 5000
KIDS = [f"kid{i:03d}" for i in range(100)]
COURSES = {2: ((1, 2), 3), 3: ((4, 5), 6)}  # course id: (cmids with manual completion, graded assignment)

pytestmark = pytest.mark.slow


def workload(rng: random.Random) -> list[dict]:
    """100 new accounts (some with a password), their enrolments in two
    courses, then completions and grades, with changes of mind, to 5,000."""
    events = [{"type": "user", "id": f"u-{k}", "user": k, "firstname": "Kid", "lastname": k,
               "email": f"{k}@example.org", **({"password": f"Pw-{k}-secret1"} if i % 5 == 0 else {})}
              for i, k in enumerate(KIDS)]
    events += [{"type": "enrolment", "id": f"e-{c}-{k}", "course_id": c, "user": k} for c in COURSES for k in KIDS]
    while len(events) < N_EVENTS:
        kid, course = rng.choice(KIDS), rng.choice(list(COURSES))
        cmids, graded = COURSES[course]
        if rng.random() < 0.7:
            events.append({"type": "completion", "id": f"x{len(events)}", "course_id": course, "user": kid,
                           "cmid": rng.choice(cmids), "completed": rng.random() < 0.8})
        else:
            events.append({"type": "grade", "id": f"x{len(events)}", "course_id": course, "user": kid,
                           "cmid": graded, "grade": rng.randint(0, 100)})
    return events


@pytest.fixture(scope="module")
def sim():
    from moodle_simulator import start_simulator

    server = start_simulator(token=TOKEN)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory, sim):
    """One database with the 5,000 events queued and the courses added, made
    through the CLI once; each trial starts from a copy of the file."""
    rng = random.Random(SEED)
    box = Box(tmp_path_factory.mktemp("snapshot"), sim.url, batch_size=100)
    events = workload(rng)
    assert box.cli("courses", "add", *map(str, COURSES)).returncode == 0
    assert box.enqueue(events).returncode == 0
    assert not box.database.with_name("agent.db-wal").exists()  # all in the one file
    return box.database, events, rng


def sent_count(path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
        return conn.execute("SELECT COUNT(*) FROM event WHERE status = 'sent'").fetchone()[0]


def box_from(source, directory, sim) -> Box:
    """A box whose database is a copy of the snapshot."""
    directory.mkdir()
    box = Box(directory, sim.url, batch_size=100)
    box.database.parent.mkdir()
    shutil.copy(source, box.database)
    return box


def kill_at(box: Box, moment: tuple[str, float]) -> float:
    """Start a sync and SIGKILL it at the moment; returns when it was killed (s)."""
    kind, value = moment
    proc = box.popen("sync", "--json")
    started = time.monotonic()
    if kind == "delay":
        time.sleep(value)
    else:
        while proc.poll() is None and sent_count(box.database) < value:
            time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    return time.monotonic() - started


def audit(box: Box, events: list[dict], sim, seed: dict, label: str) -> None:
    with sqlite3.connect(box.database) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", label
        rows = dict(((key, (status, attempts)) for key, status, attempts in
                     conn.execute("SELECT key, status, attempts FROM event")))
        secrets = conn.execute("SELECT COUNT(*) FROM secret").fetchone()[0]
    assert len(rows) == len(events), f"{label}: events lost from the queue"
    not_once = {k: v for k, v in rows.items() if v != ("sent", 1)}
    assert not not_once, f"{label}: not sent exactly once: {list(not_once.items())[:5]}"
    assert secrets == 0, f"{label}: passwords left after their accounts were confirmed"
    got, want = server_view(sim), expected_view(seed, events)
    assert got["usernames"] == want["usernames"], f"{label}: an account missing or made twice"
    assert got == want, f"{label}: the server's state is not every event applied once"
    calls = sim.stats.snapshot()["calls"]
    # Accounts are looked up before they are made, enrolments checked before
    # they are made: however the run was cut, each is asked for only once.
    assert calls.get("core_user_create_users") == len(KIDS), f"{label}: {calls}"
    assert calls.get("enrol_manual_enrol_users") == len(KIDS) * len(COURSES), f"{label}: {calls}"


def test_sigkill_at_50_moments_of_a_5000_event_sync(tmp_path, sim, snapshot):
    source, events, rng = snapshot
    sim.reset()
    seed = server_view(sim)

    # How long an uncut sync takes here, for the range of the delays.
    reference = box_from(source, tmp_path / "reference", sim)
    code_start = time.monotonic()
    assert reference.cli("sync").returncode == 0
    full_s = time.monotonic() - code_start
    audit(reference, events, sim, seed, "uncut sync")

    moments = [("delay", rng.uniform(0, full_s)) if i % 2 == 0 else ("sent", rng.randrange(N_EVENTS))
               for i in range(TRIALS)]
    outcomes = []
    for trial, moment in enumerate(moments):
        label = f"trial {trial} (seed {SEED}, kill at {moment[0]} {moment[1]:.3f})"
        sim.reset()
        box = box_from(source, tmp_path / f"t{trial}", sim)
        kill_at(box, moment)
        with sqlite3.connect(box.database) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", f"{label}: after the kill"
        cut = sent_count(box.database)
        result = box.cli("sync", "--json")
        assert result.returncode == 0, f"{label}: {result.stdout[-2000:]} {result.stderr[-2000:]}"
        run = json.loads(result.stdout)
        assert (run["status"], run["errors"]) == ("completed", []), label
        audit(box, events, sim, seed, label)
        statuses = [r["status"] for r in box.history(5)]
        assert statuses[0] == "completed" and "running" not in statuses, f"{label}: {statuses}"
        outcomes.append((cut, statuses[1] if len(statuses) > 1 else None))
        shutil.rmtree(box.dir)
    # The moments really spread over the sync: early, in the middle, late.
    cuts = sorted(cut for cut, _ in outcomes)
    assert cuts[0] < N_EVENTS * 0.1 and cuts[-1] > N_EVENTS * 0.8, cuts
    assert any(N_EVENTS * 0.2 < c < N_EVENTS * 0.6 for c in cuts), cuts
    assert sum(killed == "interrupted" for _, killed in outcomes) >= TRIALS * 0.6, outcomes
