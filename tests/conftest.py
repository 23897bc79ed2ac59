import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

# The page reads compiled translations (.mo, build output): a checkout run
# straight with pytest compiles the ones missing or older than their .po
# (against the installed package, scripts/test-package, there is none here).
import msgfmt  # noqa: E402  (scripts/msgfmt.py)

if msgfmt.catalogs():
    msgfmt.main(["--if-stale"])


@pytest.fixture
def simulator():
    """A fresh Moodle simulator (token "TOKEN") on a free port, stopped afterwards."""
    from moodle_simulator import start_simulator

    sim = start_simulator()
    try:
        yield sim
    finally:
        sim.stop()
