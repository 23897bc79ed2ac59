import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))


@pytest.fixture
def simulator():
    """A fresh Moodle simulator (token tests.helpers.TOKEN) on a free port, stopped afterwards."""
    from moodle_simulator import start_simulator

    from tests.helpers import TOKEN

    sim = start_simulator(token=TOKEN)
    try:
        yield sim
    finally:
        sim.stop()
