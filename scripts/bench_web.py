#!/usr/bin/env python3
"""Benchmark of the teacher's page and the events API on a full box.

With 100,000 history rows and 1,000,000 queued events in the database, it
measures the server-side time (the WSGI app, in process) of the
Synchronization screen and of GET /api/v1/status, and how many events per
second POST /api/v1/events stores in batches of 1,000.

Targets: median under 50 ms for both pages; at least 5,000 events/s.

    python scripts/bench_web.py [--events 1000000] [--runs 100000] [--repeat 30]

Exit status 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.store import settings  # noqa: E402
from agent.auth import hash_password  # noqa: E402
from agent.config import load_config  # noqa: E402
from agent.store.schema import close_db, open_db  # noqa: E402
from tests.helpers import keep_courses  # noqa: E402
from webui import create_app  # noqa: E402

PAGE_TARGET_MS = 50.0
API_TARGET_EVENTS_S = 5000.0
BATCH = 1000
PASSWORD = "bench-password"


def fill(path: Path, n_events: int, n_runs: int) -> None:
    """Rows as the agent writes them, inserted in bulk (the triggers keep the counters)."""
    open_db(path)
    keep_courses(2, 3, 4)  # the events below and the API's batches are for these
    close_db()
    con = sqlite3.connect(path)
    con.execute("PRAGMA synchronous = OFF")
    con.execute("PRAGMA journal_mode = WAL")
    now = "2026-11-20T08:00:00Z"
    data = json.dumps({"completed": True})
    con.executemany(
        "INSERT INTO event (key, type, course_id, username, cmid, data, event_time, clock_suspect, queued_at,"
        " status, attempts) VALUES (?, 'completion', ?, ?, ?, ?, ?, 0, ?, 'queued', 0)",
        ((f"bench{i:09d}", 2 + i % 3, f"student{i % 500}", 1 + i % 8, data, now, now) for i in range(n_events)))
    rng = random.Random(1)
    courses = json.dumps([{"id": 2, "shortname": "C1", "outcome": "unchanged"},
                          {"id": 3, "shortname": "C2", "outcome": "changed on the server: refreshed"}])
    actions = json.dumps({"users_created": 1, "users_updated": 0, "enrolments": 2, "completions": 40, "grades": 7,
                          "courses_refreshed": 1})

    def runs():
        for i in range(n_runs):
            day, second = divmod(i, 86400 // 900)
            started = f"2024-{1 + (day // 28) % 12:02d}-{1 + day % 28:02d}T{(second * 900) // 3600:02d}:" \
                      f"{(second * 900) % 3600 // 60:02d}:00Z"
            status = rng.choice(["completed"] * 6 + ["completed_with_errors", "failed", "skipped_offline"])
            errors = json.dumps([] if status == "completed" else ["offline: cannot reach moodle.example: timed out"])
            yield (str(uuid.uuid4()), "schedule", status, started, started, 12.5, 20480, 51200, courses, actions,
                   errors, "done")

    con.executemany(
        "INSERT INTO syncrun (id, kind, trigger, force, status, started_at, completed_at, duration_s, bytes_sent,"
        " bytes_received, courses, actions, errors, phase, courses_done, courses_total, events_sent, conflicts,"
        " events_total, notified) VALUES (?, 'sync', ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0, 0, 0)", runs())
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def timed(fn, repeat: int) -> list[float]:
    fn()  # warm: templates compiled, pages cached
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30, help="requests per page measured")
    parser.add_argument("--batches", type=int, default=20, help="batches of 1,000 events posted")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        tmp = Path(tmp)
        (tmp / "token").write_text("be0c4e0c3a1f4b2d9e8c7b6a5f4e3d2c\n")
        (tmp / "agent.ini").write_text(
            f"[moodle]\nurl = http://127.0.0.1:9\ntoken_file = {tmp / 'token'}\n\n"
            f"[agent]\ndatabase = {tmp / 'agent.db'}\n\n[web]\napi_key = 6d0b9c1e7a2f48d3b5e0c4a19f7e2d86\n")
        config = load_config(tmp / "agent.ini")
        start = time.perf_counter()
        fill(config.agent.database, args.events, args.runs)
        print(f"filled {args.events:,} queued events and {args.runs:,} history rows "
              f"in {time.perf_counter() - start:.1f} s", file=sys.stderr)

        app = create_app(config)
        settings.put(password_hash=hash_password(PASSWORD))
        client = app.test_client()
        login_page = client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', login_page).group(1)
        assert client.post("/login", data={"password": PASSWORD, "csrf_token": token}).status_code == 303

        def page():
            answer = client.get("/")
            assert answer.status_code == 200 and f"{args.events:,}".replace(",", "") in answer.get_data(as_text=True)

        def status():
            answer = client.get("/api/v1/status")
            assert answer.status_code == 200 and answer.get_json()["queued"] >= args.events

        page_ms = timed(page, args.repeat)
        status_ms = timed(status, args.repeat)

        batches = [json.dumps([{"type": "completion", "id": f"bench-{b}-{i}", "course_id": 2,
                                "user": f"student{i % 50}", "cmid": 1 + i % 3, "completed": True,
                                "time": "2026-11-20T08:00:00Z"} for i in range(BATCH)])
                   for b in range(args.batches)]
        headers = {"Authorization": "Bearer 6d0b9c1e7a2f48d3b5e0c4a19f7e2d86", "Content-Type": "application/json"}
        start = time.perf_counter()
        for body in batches:
            answer = client.post("/api/v1/events", data=body, headers=headers)
            assert answer.status_code == 201 and answer.get_json()["stored"] == BATCH, answer.get_data(as_text=True)
        elapsed = time.perf_counter() - start
        rate = args.batches * BATCH / elapsed
        close_db()

    rows = [
        ("Synchronization screen (GET /)", f"{statistics.median(page_ms):.1f} ms", f"{max(page_ms):.1f} ms",
         f"< {PAGE_TARGET_MS:.0f} ms", statistics.median(page_ms) < PAGE_TARGET_MS),
        ("GET /api/v1/status", f"{statistics.median(status_ms):.1f} ms", f"{max(status_ms):.1f} ms",
         f"< {PAGE_TARGET_MS:.0f} ms", statistics.median(status_ms) < PAGE_TARGET_MS),
        (f"POST /api/v1/events ({BATCH:,} per batch)", f"{rate:,.0f} events/s",
         f"{elapsed / args.batches * 1000:.0f} ms/batch", f">= {API_TARGET_EVENTS_S:,.0f}/s",
         rate >= API_TARGET_EVENTS_S),
    ]
    print(f"web benchmark: {args.events:,} queued events, {args.runs:,} history rows, "
          f"{args.repeat} requests each (server side, in process)")
    print(f"{'measure':<40} {'median/rate':>16} {'max/batch':>12} {'target':>12}  result")
    for name, value, extra, target, ok in rows:
        print(f"{name:<40} {value:>16} {extra:>12} {target:>12}  {'ok' if ok else 'MISSED'}")
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
