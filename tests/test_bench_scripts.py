"""scripts/bench and scripts/bench_web.py are run by hand, not by the suite:
what they import or write of the agent's (a renamed module, a new NOT NULL
column) must still fail here, at a size that takes seconds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_benchmark_loads_the_modules_it_measures():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench"), "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "usage: bench" in done.stdout, done.stderr


def test_the_web_benchmark_runs_on_a_small_database():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_web.py"), "--events", "2000", "--runs", "200",
                           "--repeat", "2", "--batches", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "GET /api/v1/status" in done.stdout and "POST /api/v1/events" in done.stdout
