"""Fault injection: each fault a classroom box meets, against the simulator.

For every fault: the run's result in the history says what happened, the
queue is intact (each event sent only once the server confirmed it, the rest
still queued, the database file sound), and the next sync, faults off, leaves
the server exactly as if every event had been applied once.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import TOKEN, Box, MoodleReader, expected_view, server_view
from tests.proxy import CUT, Proxy

C1, C2 = 2, 3
KIDS = [f"kid{i}" for i in range(8)]
BATCH = "wsfunction=tool_mobile_call_external_functions"


def workload() -> list[dict]:
    """New accounts, their enrolments, completions and grades in two courses:
    with batches of 10, the sync takes several batches of each kind."""
    events = []
    for i, kid in enumerate(KIDS):
        events.append({"type": "user", "id": f"u-{kid}", "user": kid, "firstname": "Kid", "lastname": str(i),
                       "email": f"{kid}@example.org"})
    for course in (C1, C2):
        events += [{"type": "enrolment", "id": f"e-{course}-{kid}", "course_id": course, "user": kid} for kid in KIDS]
    learners = KIDS + ["student1", "student2", "student3"]
    for course, cmids, graded in ((C1, (1, 2), 3), (C2, (4, 5), 6)):
        for n, user in enumerate(learners):
            for cmid in cmids:
                events.append({"type": "completion", "id": f"c-{cmid}-{user}", "course_id": course, "user": user,
                               "cmid": cmid, "completed": True})
            events.append({"type": "grade", "id": f"g-{graded}-{user}", "course_id": course, "user": user,
                           "cmid": graded, "grade": 50 + n})
        # A change of mind: the later event is the state.
        events.append({"type": "completion", "id": f"c-{cmids[0]}-student1-undo", "course_id": course,
                       "user": "student1", "cmid": cmids[0], "completed": False})
    return events


EVENTS = workload()


def assert_applied_once(sim, seed: dict, events: list[dict] = EVENTS) -> None:
    """The server's state is exactly the seed's with every event applied once."""
    got, want = server_view(sim), expected_view(seed, events)
    assert got["usernames"] == want["usernames"], "a user is missing, or there twice"
    assert got == want
    # The same through Moodle's own read functions, for a sample.
    moodle = MoodleReader(sim.url)
    assert len(moodle.users("kid3")) == 1
    assert moodle.completion(C1, moodle.user_id("student1"), 1) == 0
    assert moodle.grade(C2, moodle.user_id("kid7"), 6)[0] == 57


def queue_rows(box: Box) -> dict[str, tuple[str, int]]:
    with sqlite3.connect(box.database) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return {key: (status, attempts) for key, status, attempts in
                conn.execute("SELECT key, status, attempts FROM event")}


def assert_queue_intact(box: Box, events: list[dict] = EVENTS) -> int:
    """Every event still there, each either confirmed (sent, once) or queued.
    Returns how many are still queued."""
    rows = queue_rows(box)
    assert sorted(rows) == sorted(e["id"] for e in events)
    assert {status for status, _ in rows.values()} <= {"queued", "sent"}
    assert all(attempts == (1 if status == "sent" else 0) for status, attempts in rows.values())
    return sum(status == "queued" for status, _ in rows.values())


def sync(box: Box, *args: str, argv_prefix: tuple[str, ...] = ()) -> tuple[int, dict]:
    result = subprocess.run([*argv_prefix, *box.argv("sync", "--json", *args)], capture_output=True, text=True,
                            env=box.env(), cwd=box.dir, timeout=120)
    assert result.stdout.strip(), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    run = json.loads(result.stdout)
    stored = box.history(1)[0]  # the result is in the history, not only printed
    assert (stored["id"], stored["status"], stored["errors"]) == (run["id"], run["status"], run["errors"])
    return result.returncode, run


def finish_and_check(box: Box, sim) -> dict:
    """The next sync, faults off: everything applied once, nothing left."""
    sim.faults.clear()
    code, run = sync(box)
    assert (code, run["status"], run["errors"]) == (0, "completed", []), run
    assert assert_queue_intact(box) == 0
    assert_applied_once(sim, box.seed)
    # Across the fault and this sync, each account and enrolment was asked
    # for once: the ones the server took unconfirmed were looked up, not re-sent.
    calls = sim.stats.snapshot()["calls"]
    assert calls.get("core_user_create_users") == len(KIDS), calls
    assert calls.get("enrol_manual_enrol_users") == len(KIDS) * 2, calls
    return run


def make_box(tmp_path: Path, sim) -> Box:
    box = Box(tmp_path, sim.url, batch_size=10)
    assert box.cli("courses", "add", str(C1), str(C2)).returncode == 0
    sim.stats.reset()
    box.seed = server_view(sim)  # the server before any event
    assert box.enqueue(EVENTS).returncode == 0
    return box


@pytest.fixture
def box(tmp_path, simulator):
    return make_box(tmp_path, simulator)


@pytest.fixture
def proxy(simulator, box):
    proxy = Proxy(simulator.url)
    box.write_config(proxy.url, batch_size=10, timeout=1)
    yield proxy
    proxy.stop()


def test_workload_alone_is_applied_once(box, simulator):
    """The reference: no fault, one sync."""
    finish_and_check(box, simulator)
    assert simulator.stats.snapshot()["calls"]["core_user_create_users"] == len(KIDS)


# (what happens at the 2nd batch request, run status, words in its error, did the server apply that batch)
MID_SYNC_FAULTS = {
    "reset mid-request": (CUT, "the connection was reset", False),
    "reset mid-answer": (dict(reset_mid_response=1), "broke off: the answer was cut off", True),
    "reset after the write, no answer": (dict(reset_after_requests=0, reset_after_processing=True),
                                         "closed the connection without answering", True),
    "time-out": (dict(latency_ms=1500), "no answer from 127.0.0.1:{port} within 1 s", True),
    "HTTP 500": (dict(status=500, status_count=1), "answered HTTP 500", False),
    "HTTP 502 after the write": (dict(status=502, status_count=1, status_after_processing=True),
                                 "answered HTTP 502", True),
    "HTTP 503 with a long Retry-After": (dict(status=503, retry_after=3600, status_count=1),
                                         "answered HTTP 503", False),
    "HTML page with status 200": (dict(captive_portal=True), "an HTML page (captive portal?)", False),
    "truncated JSON": (dict(truncated_json=1), "not valid JSON (cut short?)", True),
}


@pytest.mark.parametrize("name", list(MID_SYNC_FAULTS))
def test_fault_in_the_middle_of_a_sync(name, box, simulator, proxy):
    fault, words, applied = MID_SYNC_FAULTS[name]
    action = fault if fault == CUT else (lambda: simulator.faults.set(**fault))
    proxy.on(BATCH, 2, action)
    code, run = sync(box)
    assert (code, run["status"]) == (1, "failed"), run
    [error] = run["errors"]
    port = proxy.url.rsplit(":", 1)[1]
    assert error.startswith("lost the connection to the server: ") and words.format(port=port) in error, error
    queued = assert_queue_intact(box)
    assert f"{queued} event(s) kept in the queue" in error
    # The first batch (the accounts) was confirmed and is marked sent; the
    # second (the enrolments in C1) was not, whether the server applied it or not.
    assert len(EVENTS) - queued == len(KIDS)
    assert kids_enrolled_in_c1(simulator, wait_s=5 if applied else 0) == (len(KIDS) if applied else 0)
    finish_and_check(box, simulator)


def kids_enrolled_in_c1(sim, wait_s: float) -> int:
    """Enrolments of the new accounts in C1 on the server; waits up to
    ``wait_s`` for all of them (a write after a time-out lands late)."""
    deadline = time.monotonic() + wait_s
    while True:
        n = sum(1 for course, user in server_view(sim)["enrolled"] if course == C1 and user in KIDS)
        if n == len(KIDS) or time.monotonic() >= deadline:
            return n
        time.sleep(0.05)


def test_503_with_a_short_retry_after_is_waited_for(box, simulator, proxy):
    proxy.on(BATCH, 2, lambda: simulator.faults.set(status=503, retry_after=1, status_count=2))
    code, run = sync(box)
    assert (code, run["status"], run["errors"]) == (0, "completed", []), run
    assert simulator.stats.snapshot()["faults_fired"] == {"status_503": 2}
    assert assert_queue_intact(box) == 0
    assert_applied_once(simulator, box.seed)


@pytest.mark.parametrize("status,retry_after", [(500, None), (502, None), (503, None), (503, 2)])
def test_server_error_at_the_start_skips_the_sync(status, retry_after, box, simulator):
    simulator.faults.set(status=status, retry_after=retry_after)
    code, run = sync(box)
    assert (code, run["status"]) == (3, "skipped_offline"), run
    assert run["errors"] == [f"offline: 127.0.0.1:{simulator.port} answered HTTP {status}"]
    assert assert_queue_intact(box) == len(EVENTS)
    finish_and_check(box, simulator)


def server_view_trusting(sim, cert, monkeypatch) -> dict:
    with monkeypatch.context() as m:
        m.setenv("REQUESTS_CA_BUNDLE", str(cert))
        return server_view(sim)


def test_tls_failure_is_clear_and_ca_bundle_fixes_it(tmp_path, monkeypatch):
    from moodle_simulator import start_simulator

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                           "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                           "-keyout", str(key), "-out", str(cert)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    sim = start_simulator(token=TOKEN, tls_cert=str(cert), tls_key=str(key))
    try:
        assert sim.url.startswith("https://")
        box = Box(tmp_path, sim.url, batch_size=10)
        untrusted = box.config.read_text()
        trusted = untrusted.replace("[moodle]\n", f"[moodle]\nca_bundle = {cert}\n")
        box.config.write_text(trusted)  # the courses were added with the school's CA
        assert box.cli("courses", "add", str(C1), str(C2)).returncode == 0
        sim.stats.reset()
        box.seed = server_view_trusting(sim, cert, monkeypatch)
        assert box.enqueue(EVENTS).returncode == 0
        box.config.write_text(untrusted)
        code, run = sync(box)
        assert (code, run["status"]) == (3, "skipped_offline"), run
        assert run["errors"] == [f"offline: TLS verification failed for 127.0.0.1:{sim.port}: "
                                 "certificate verify failed"]
        assert assert_queue_intact(box) == len(EVENTS)
        assert sim.stats.snapshot()["requests"] == 0  # nothing was sent over the untrusted connection
        box.config.write_text(trusted)
        code, run = sync(box)
        assert (code, run["status"], run["errors"]) == (0, "completed", []), run
        assert assert_queue_intact(box) == 0
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # for MoodleReader, after the agent ran
        assert_applied_once(sim, box.seed)
    finally:
        sim.stop()


# A network namespace of its own for the agent: a loopback and a veth pair,
# up (so the agent does not answer "no network" at once) but leading nowhere. The DNS lookup fails inside; no query leaves the box.
ISOLATED = ("unshare", "-n", "sh", "-c",
            'ip link add v0 type veth peer name v1 && ip link set v0 up && ip link set v1 up && exec "$@"',
            "isolated")


def test_dns_failure(box, simulator):
    probe = subprocess.run([*ISOLATED, "true"], capture_output=True, text=True) \
        if shutil.which("unshare") and shutil.which("ip") else None
    if probe is None or probe.returncode != 0:
        pytest.skip("cannot make an isolated network namespace here (unshare/ip missing or not permitted): "
                    "a DNS lookup would go out to the real resolver")
    box.write_config(f"http://moodle.invalid:{simulator.port}", batch_size=10)
    code, run = sync(box, argv_prefix=ISOLATED)
    assert (code, run["status"]) == (3, "skipped_offline"), run
    assert run["errors"] == [f"offline: cannot reach moodle.invalid:{simulator.port}: DNS lookup failed"]
    assert assert_queue_intact(box) == len(EVENTS)
    box.write_config(simulator.url, batch_size=10)
    finish_and_check(box, simulator)


@pytest.mark.parametrize("offset_s", [-400 * 86400, 3 * 3600, 30 * 86400])
def test_server_clock_far_off_is_recorded(offset_s, box, simulator):
    simulator.faults.set(clock_offset_s=offset_s)
    code, run = sync(box)
    # It syncs (exit 0), amber: the clock far off is a warning with what to do.
    assert (code, run["status"]) == (0, "completed_with_warnings"), run
    assert [r["code"] for r in run["reasons"]] == ["clock_off"]
    assert abs(run["clock_offset_s"] - offset_s) < 5, run["clock_offset_s"]
    assert box.history(1)[0]["clock_offset_s"] == run["clock_offset_s"]
    assert assert_queue_intact(box) == 0
    assert_applied_once(simulator, box.seed)
    # The box's clock was right, so the events keep the times it gave them.
    with sqlite3.connect(box.database) as conn:
        assert conn.execute("SELECT COUNT(*) FROM event WHERE data LIKE '%time_as_stamped%'").fetchone()[0] == 0


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"mount of a small tmpfs is not permitted here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(directory: Path) -> Path:
    """Take every free byte of the file system."""
    ballast = directory / "ballast"
    with open(ballast, "wb", buffering=0) as fh:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError:
                pass
    return ballast


def test_database_on_a_full_disk(small_disk, tmp_path, simulator):
    """The disk fills up in the middle of a sync, just as a batch goes out:
    the batch the server took cannot be marked sent, so it stays queued, and
    the run still records why it failed (in the space the agent reserved)."""
    box = Box(tmp_path, simulator.url, batch_size=10)
    box.seed = server_view(simulator)
    box.database = small_disk / "agent.db"
    proxy = Proxy(simulator.url)
    # No storage budget: the point is SQLite meeting a really full disk.
    box.write_config(simulator.url, batch_size=10, extra="min_free_mb = 0\nmin_free_percent = 0")
    assert box.cli("courses", "add", str(C1), str(C2)).returncode == 0
    simulator.stats.reset()
    box.write_config(proxy.url, batch_size=10, extra="min_free_mb = 0\nmin_free_percent = 0")
    assert box.enqueue(EVENTS).returncode == 0
    ballast = []
    proxy.on(BATCH, 2, lambda: ballast.append(fill(small_disk)))
    code, run = sync(box)
    proxy.stop()
    assert ballast and not (small_disk / "agent.db.reserve").exists()  # the reserve took the run's end
    assert (code, run["status"]) == (1, "failed"), run
    assert run["errors"] == [f"database {box.database}: database or disk is full; "
                             "the events not yet confirmed stay queued"]
    assert box.history(1)[0]["status"] == "failed"
    assert run["events_sent"] == len(KIDS) and run["actions"]["enrolments"] == 0
    assert assert_queue_intact(box) == len(EVENTS) - len(KIDS)
    assert kids_enrolled_in_c1(simulator, wait_s=0) == len(KIDS)  # taken by the server, not confirmed
    ballast[0].unlink()
    box.write_config(simulator.url, batch_size=10, extra="min_free_mb = 0\nmin_free_percent = 0")
    finish_and_check(box, simulator)
    assert (small_disk / "agent.db.reserve").stat().st_size > 0  # set aside again for next time
