"""A health reading the board cannot give is unknown, with its reason, and
the rest of `status`, the status API and the page go on.

The real failure (psutil.net_if_stats() under qemu-user: ENOSYS from
ioctl(SIOCETHTOOL)) cannot be produced on this machine, so each psutil call
is made to raise in turn inside this process; everything else is real: the
CLI's main, the Flask app, the SQLite file."""

from __future__ import annotations

import errno
import json
import re

import psutil
import pytest

from agent import cli, health
from agent.store.schema import close_db
from tests.helpers import write_config
from webui import create_app

QEMU = OSError(errno.ENOSYS, "Function not implemented (originated from ioctl(SIOCETHTOOL))")
QEMU_TEXT = "OSError: [Errno 38] Function not implemented (originated from ioctl(SIOCETHTOOL))"

# psutil's function -> the health row it feeds.
CALLS = {
    "disk_usage": "disk",
    "virtual_memory": "memory",
    "cpu_count": "cpu",
    "getloadavg": "cpu",
    "sensors_temperatures": "temperature",
    "boot_time": "uptime",
    "net_if_stats": "network",
    "Process": "agent",
}
ROWS = ["disk", "database", "memory", "cpu", "temperature", "uptime", "network", "clock", "queue", "agent"]


@pytest.fixture
def config(tmp_path):
    config = write_config(tmp_path, web="public_status = yes")
    create_app(config)  # creates the database
    health.register_agent()  # this process stands for the daemon: its memory is read through psutil.Process
    yield config
    close_db()


def fail_with(monkeypatch, name: str, exc: BaseException) -> None:
    def fails(*args, **kwargs):
        raise exc

    monkeypatch.setattr(psutil, name, fails)


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_failing_reading_is_unknown_and_the_rest_goes_on(config, monkeypatch, capsys, call):
    row = CALLS[call]
    fail_with(monkeypatch, call, QEMU)
    reason = f"cannot be read on this box ({QEMU_TEXT})"

    h = health.gather(config)
    assert h["unknown"] == {row: reason}
    assert h["warnings"][row] == reason
    known = {"disk": h["disk"], "memory": h["memory"], "cpu": h["cpu"]["load"], "uptime": h["uptime_s"],
             "network": h["network"], "agent": h["agent"], "database": h["database"], "queue": h["queue"]}
    for other, value in known.items():
        assert (value is None) == (other == row), other
    json.dumps(h)

    # The command line, as text and as JSON.
    assert cli.main(["--config", str(config.path), "status"]) == 0
    out = capsys.readouterr().out
    assert f"attention: {row}: {reason}" in out
    assert "queued events: 0" in out
    assert cli.main(["--config", str(config.path), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["health"]["unknown"] == {row: reason} and status["queued"] == 0

    # The API and the page.
    client = create_app(config).test_client()
    answer = client.get("/api/v1/status")
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    assert answer.get_json()["health"]["unknown"] == {row: reason}
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    cells = dict(re.findall(r'<dd data-health="(\w+)"[^>]*>(.*?)</dd>', html, re.S))
    assert list(cells) == ROWS
    assert "unknown" in cells[row] and QEMU_TEXT in cells[row]
    for other in ROWS:
        if other != row:
            assert "unknown" not in cells[other] and "cannot be read" not in cells[other], other
    client.get("/lang/fr")
    html = client.get("/").get_data(as_text=True)
    assert re.search(rf'data-health="{row}"[^>]*data-unknown>\s*<span class="health-value">inconnu</span>', html)


def test_an_error_without_a_message_still_says_what_failed(config, monkeypatch, capsys):
    """What `status` died of under qemu: an error whose text is empty."""
    fail_with(monkeypatch, "net_if_stats", RuntimeError())
    assert cli.main(["--config", str(config.path), "status"]) == 0
    assert "attention: network: cannot be read on this box (RuntimeError)" in capsys.readouterr().out


def test_every_reading_failing_at_once(config, monkeypatch, capsys):
    for call in CALLS:
        fail_with(monkeypatch, call, QEMU)
    h = health.gather(config)
    assert set(h["unknown"]) == set(CALLS.values())
    assert cli.main(["--config", str(config.path), "status"]) == 0
    assert capsys.readouterr().out.count("cannot be read on this box") == len(set(CALLS.values()))
    client = create_app(config).test_client()
    assert client.get("/api/v1/status").status_code == 200
    assert client.get("/").status_code == 200


def test_a_kernel_that_cannot_list_interfaces_is_not_taken_for_offline(monkeypatch, simulator, tmp_path):
    """The online check's "no network interface is up" shortcut asks psutil;
    where that raises, the sync goes on and the connection decides."""
    from agent import network
    from agent.moodle import MoodleClient, Unreachable
    from tests.helpers import Box
    from agent.config import load_config

    config = load_config(Box(tmp_path, simulator.url.replace("127.0.0.1", "localhost.example")).config)
    monkeypatch.setattr(network, "is_loopback_url", lambda url: False)  # as if the server were elsewhere
    fail_with(monkeypatch, "net_if_stats", QEMU)
    assert network.surely_offline() is False
    with pytest.raises(Unreachable) as refused:  # the name does not resolve: the connection decided
        MoodleClient(config.moodle).site_info()
    assert refused.value.kind != "no_network"
    monkeypatch.setattr(psutil, "net_if_stats", lambda: {})  # and a kernel that says "none up" still short-cuts
    with pytest.raises(Unreachable, match="no network interface is up"):
        MoodleClient(config.moodle).site_info()
