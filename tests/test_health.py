"""Device health (psutil), and the fast "no network" answer of the online check."""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import timedelta

import psutil
import pytest

from agent import cli, health
from agent.config import load_config
from agent.store.db import Event, Run, iso, parse_iso, utcnow
from agent.store.schema import close_db, open_db
from agent.moodle import MoodleClient, Unreachable
from agent.store.queue import enqueue, validate_events
from agent.sync import run_sync
from tests.helpers import Box, keep_courses

NOWHERE = "http://moodle.example.invalid"  # never contacted: the check answers first
CLOSED_LOOPBACK = "http://127.0.0.1:9"  # nothing listens on the discard port here

EVENT = {"type": "completion", "course_id": 2, "user": "student1", "cmid": 1, "completed": True}


@pytest.fixture
def make_config(tmp_path):
    databases = []

    def make(url: str = CLOSED_LOOPBACK, extra: str = ""):
        box = Box(tmp_path, url, extra=extra)
        config = load_config(box.config)
        databases.append(open_db(config.agent.database))
        keep_courses(2, 3, 4)
        return config

    yield make
    for db in databases:
        db.close()


@pytest.fixture
def network_down(monkeypatch):
    """Every interface but loopback down, as psutil reports it."""
    real = psutil.net_if_stats()
    down = {name: stats if name == "lo" else stats._replace(isup=False) for name, stats in real.items()}
    down.setdefault("eth0", real["lo"]._replace(isup=False, flags="broadcast,multicast"))
    monkeypatch.setattr(psutil, "net_if_stats", lambda: down)


def test_status_json_has_typed_plausible_health(tmp_path):
    box = Box(tmp_path, CLOSED_LOOPBACK)
    box.keep_courses(2, 3, 4)
    assert box.enqueue([EVENT]).returncode == 0
    assert box.status()["health"]["agent"] == {"pid": None, "rss_bytes": None}  # no daemon yet
    daemon = subprocess.Popen(box.argv("run"), env=box.env(), cwd=box.dir, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while (h := box.status()["health"])["agent"]["pid"] is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert h["agent"]["pid"] == daemon.pid  # the daemon's memory, not the status command's
    finally:
        daemon.terminate()
        daemon.wait(30)

    disk = h["disk"]
    assert disk["path"] == str(box.database.parent)
    assert 0 < disk["free_bytes"] <= disk["total_bytes"]
    assert 0 <= disk["free_percent"] <= 100
    assert disk["min_free_bytes"] == max(int(disk["total_bytes"] * 0.05), 200 * 1024 * 1024)
    assert isinstance(disk["full"], bool)

    db = h["database"]
    assert db["file_bytes"] > 0 and db["bytes"] == db["file_bytes"] + db["wal_bytes"]
    assert 4096 <= db["bytes"] < 100 * 1024 * 1024

    mem = h["memory"]
    assert 0 < mem["available_bytes"] <= mem["total_bytes"]
    assert 0 <= mem["available_percent"] <= 100

    cpu = h["cpu"]
    assert isinstance(cpu["count"], int) and cpu["count"] >= 1
    assert len(cpu["load"]) == 3 and all(isinstance(x, (int, float)) and x >= 0 for x in cpu["load"])
    assert cpu["temperature_c"] is None or -40 < cpu["temperature_c"] < 150

    assert isinstance(h["uptime_s"], int) and 0 < h["uptime_s"] < 10 * 365 * 86400
    assert isinstance(h["network"]["interfaces_up"], list)
    assert "lo" not in h["network"]["interfaces_up"]

    clock = h["clock"]
    assert clock["sane"] is True
    assert abs((utcnow() - parse_iso(clock["now"])).total_seconds()) < 60
    assert clock["offset_s"] is None  # no sync yet

    assert h["queue"]["oldest_queued_at"] is not None
    assert 0 <= h["queue"]["oldest_age_s"] < 600

    assert 1024 * 1024 < h["agent"]["rss_bytes"] < 1024 ** 3
    assert isinstance(h["agent"]["pid"], int)
    assert isinstance(h["warnings"], dict)
    assert h["unknown"] == {}  # every reading works on this machine
    json.dumps(h)  # JSON-able as a whole


def test_warnings_name_what_needs_attention(make_config):
    config = make_config()
    h = health.gather(config)
    assert "queue" not in h["warnings"] and "clock" not in h["warnings"]
    path = config.agent.database
    assert h["database"]["file_bytes"] == path.stat().st_size
    assert h["database"]["wal_bytes"] == path.with_name(path.name + "-wal").stat().st_size > 0

    old = utcnow() - timedelta(days=10)
    enqueue(validate_events([EVENT]), now=old)
    Run.create(trigger="cli", status=Run.COMPLETED, started_at=iso(utcnow()), clock_offset_s=-3600.0)
    h = health.gather(config)
    assert h["clock"]["offset_s"] == -3600.0
    assert "60 minutes off the server" in h["warnings"]["clock"]
    assert "waited 10 days" in h["warnings"]["queue"]
    assert h["queue"]["oldest_queued_at"] == iso(old)

    # A clock before the build date: the box booted without an RTC.
    h = health.gather(config, now=utcnow().replace(year=2001))
    assert h["clock"]["sane"] is False
    assert "before this release was built" in h["warnings"]["clock"]


def test_disk_under_budget_is_marked(make_config):
    # Any real disk here has less than 90 % free.
    h = health.gather(make_config(extra="min_free_percent = 90"))
    assert h["disk"]["full"] is True
    assert "new events are refused" in h["warnings"]["disk"]


def test_no_interface_up_answers_no_network_at_once(make_config, network_down):
    config = make_config(NOWHERE)
    client = MoodleClient(config.moodle)
    started = time.monotonic()
    with pytest.raises(Unreachable) as err:
        client.site_info()
    assert time.monotonic() - started < 0.1
    assert (err.value.kind, err.value.reason) == ("no_network", "no network interface is up")
    assert client.traffic.requests == 0  # nothing was sent anywhere

    started = time.monotonic()
    row = run_sync(config, trigger="cli")
    assert row.status == Run.SKIPPED_OFFLINE
    assert row.errors == ["offline: no network interface is up"]
    assert time.monotonic() - started < 1.0  # the whole run, history writes included

    h = health.gather(config)
    assert h["network"]["interfaces_up"] == []
    assert "no network interface is up" in h["warnings"]["network"]


def test_check_command_says_no_network(make_config, network_down, capsys):
    config = make_config(NOWHERE)
    code = cli.main(["--config", str(config.path), "check", "--json"])
    assert code == cli.EXIT_OFFLINE
    assert json.loads(capsys.readouterr().out)["error"] == "offline: no network interface is up"


def test_loopback_server_is_still_tried_without_network(make_config, network_down):
    # The simulator runs on 127.0.0.1: no interface up must not stop it.
    config = make_config(CLOSED_LOOPBACK)
    with pytest.raises(Unreachable) as err:
        MoodleClient(config.moodle).site_info()
    assert err.value.kind == "network"
    assert "connection refused" in err.value.reason


@pytest.mark.parametrize("url, loopback", [
    ("http://127.0.0.1:8080", True), ("http://localhost/moodle", True), ("http://[::1]:81", True),
    ("http://127.5.0.1", True), ("https://moodle.school.example", False), ("http://10.0.0.5", False),
])
def test_loopback_url(url, loopback):
    from agent.network import is_loopback_url
    assert is_loopback_url(url) is loopback


# -- on the page and in the API ------------------------------------------------------

def test_status_api_and_page_show_health_with_red_marks_and_the_storage_banner(tmp_path):
    from tests.helpers import API_KEY, api, write_config
    from webui import create_app

    # Any disk here has less than 90 % free: the box is under its storage budget.
    config = write_config(tmp_path, web="public_status = yes", agent="min_free_percent = 90")
    app = create_app(config)
    client = app.test_client()
    try:
        status = client.get("/api/v1/status").get_json()
        h = status["health"]
        assert set(h) >= {"disk", "database", "memory", "cpu", "uptime_s", "network", "clock", "queue", "agent",
                          "warnings"}
        assert h["disk"]["full"] is True and "new events are refused" in h["warnings"]["disk"]

        page = client.get("/").get_data(as_text=True)
        assert 'data-region="health"' in page
        disk_row = page[page.index('data-health="disk"'):]
        disk_row = disk_row[:disk_row.index("</dd>")]
        assert 'class="health-bad"' in disk_row and "new events are refused" in disk_row
        # The card's count of rows to check: a counted text (a plural entry), never its key.
        assert re.search(r'id="health-count">\d+ to check<', page), page[page.index('id="health-heading"'):][:400]
        fr = client.get("/", headers={"Accept-Language": "fr"}).get_data(as_text=True)
        assert "les nouveaux événements sont refusés" in fr  # the reason in the page's language
        database_row = page[page.index('data-health="database"'):]
        assert "health-bad" not in database_row[:database_row.index("</dd>")]
        assert "storage is nearly full" in page  # the banner

        before = queued_count()
        answer = api(client, [EVENT])
        assert answer.status_code == 507
        assert answer.get_json()["error"].startswith("storage is full: ")
        assert queued_count() == before  # nothing stored, nothing dropped
        assert API_KEY not in answer.get_data(as_text=True)
    finally:
        close_db()


def queued_count() -> int:
    return Event.select().where(Event.status == Event.QUEUED).count()


def test_clock_offset_on_the_page_has_no_minus_zero(tmp_path):
    """Rounded half away from zero, the same both ways; 0 has no sign."""
    from tests.helpers import write_config
    from webui import create_app

    client = create_app(write_config(tmp_path, web="public_status = yes")).test_client()
    run = Run.create(trigger="cli", status=Run.COMPLETED, started_at=iso(utcnow()))
    try:
        for offset, shown in [(-0.4, "0"), (-0.0, "0"), (0.0, "0"), (0.4, "0"), (0.49999999999999994, "0"),
                              (-0.49999999999999994, "0"), (0.5, "+1"), (-0.5, "-1"), (1.4, "+1"), (-1.4, "-1"),
                              (1.6, "+2"), (-1.6, "-2"), (2.5, "+3"), (-2.5, "-3"), (-3600.0, "-3600")]:
            Run.update(clock_offset_s=offset).where(Run.id == run.id).execute()
            html = client.get("/").get_data(as_text=True)
            row = html[html.index('data-health="clock"'):]
            row = row[:row.index("</dd>")]
            assert f" · {shown} s from the server at the last sync" in row, (offset, row)
    finally:
        close_db()
