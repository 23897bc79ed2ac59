"""The fixtures the test modules share; plain helpers are in tests/helpers.py
(and tests/browserkit.py for the page in Chromium). A test module never
imports another test module (tests/test_imports.py checks it)."""

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


# Fixtures that start a simulator or open a database: a test marked pure uses none.
IMPURE_FIXTURES = {"simulator", "boxsim", "box", "moodle", "config", "app", "client", "admin", "browser"}


def pytest_runtest_setup(item):
    if item.get_closest_marker("pure") is not None:
        used = IMPURE_FIXTURES & set(getattr(item, "fixturenames", ()))
        if used:
            pytest.fail(f"a test marked pure uses {sorted(used)}: a simulator or a database", pytrace=False)


# -- the Moodles on loopback ------------------------------------------------------

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


@pytest.fixture
def boxsim():
    """The box's own Moodle: a second simulator (``box=True``: every id differs
    from the server's, tests/helpers.py BOX_C1, OFFSET_CM), token BOX_TOKEN."""
    from moodle_simulator import start_simulator

    from tests.helpers import BOX_TOKEN

    sim = start_simulator(token=BOX_TOKEN, box=True)
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def box(tmp_path, simulator):
    """A box (config and database on disk, driven through the CLI) syncing with the simulator."""
    from tests.helpers import Box

    return Box(tmp_path, simulator.url)


@pytest.fixture
def moodle(simulator):
    """Reads the simulator's state through its web service, as one would a real Moodle."""
    from tests.helpers import MoodleReader

    return MoodleReader(simulator.url)


# -- the page and the events API through Flask's test client -----------------------

@pytest.fixture
def config(tmp_path):
    from tests.helpers import write_config

    return write_config(tmp_path)


@pytest.fixture
def app(config):
    from agent.auth import hash_password
    from agent.store import settings
    from tests.helpers import PASSWORD, keep_courses
    from webui import create_app

    app = create_app(config)
    settings.put(password_hash=hash_password(PASSWORD))
    keep_courses(2, 3, 4)
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def admin(client):
    """The test client, logged in."""
    from tests.helpers import login

    assert login(client).status_code == 303
    return client


# -- the page in headless Chromium (-m browser) --------------------------------------

@pytest.fixture(scope="module")
def browser():
    from tests.browserkit import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt install chromium)")
    playwright_api = pytest.importorskip("playwright.sync_api",
                                         reason="the playwright python package is not installed")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
