import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


@pytest.fixture
def simulator():
    """A Moodle simulator on loopback, seeded like the recordings' server."""
    from moodle_simulator import start_simulator

    sim = start_simulator(token="TOKEN")
    try:
        yield sim
    finally:
        sim.stop()
