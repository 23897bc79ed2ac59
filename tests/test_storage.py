"""The storage budget, on a real 2 MB tmpfs that fills up."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess

import pytest

from agent.config import load_config
from agent.store.db import Event
from agent.store.schema import open_db
from agent.store.queue import StorageFull, enqueue, validate_events
from tests.helpers import Box, MoodleReader, keep_courses, sync

C1, C2 = 2, 3
# 1.5 MB of the 3 MB must stay free: the same room for the sync's writes (the
# WAL) that the default budget, the larger of 5 % and 200 MB, leaves on a card.
BUDGET = "min_free_mb = 0\nmin_free_percent = 50"
UNDER_BUDGET = 1024 * 1024


def event(user: str, cmid: int, course: int = C1, key: str | None = None) -> dict:
    return {"type": "completion", "id": key or f"{user}-{cmid}", "course_id": course, "user": user,
            "cmid": cmid, "completed": True}


QUEUED = [event(f"student{i}", cmid, course) for i in range(1, 6) for cmid, course in ((1, C1), (2, C1), (4, C2))]


@pytest.fixture
def small_disk(tmp_path):
    """tmp_path/data on its own 3 MB tmpfs."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "data"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def free_bytes(path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path, leave: int = 0) -> None:
    """Write a filler file until only ``leave`` bytes are free (0: until the disk refuses)."""
    block = b"\0" * 4096
    fd = os.open(path / f"filler-{leave}", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while leave == 0 or free_bytes(path) > leave + len(block):
            os.write(fd, block)
            os.fsync(fd)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def refused(result: subprocess.CompletedProcess) -> bool:
    return (result.returncode == 2 and "storage is full" in result.stderr
            and "Traceback" not in result.stderr)


def queued_on_disk(box) -> tuple[str, list[str]]:
    # immutable: read the file as it is, without the WAL index a full disk cannot hold
    with sqlite3.connect(f"file:{box.database}?immutable=1", uri=True) as db:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        keys = [k for (k,) in db.execute("SELECT key FROM event WHERE status = 'queued' ORDER BY id")]
    return check, keys


def test_full_disk_refuses_new_events_keeps_the_queue_and_syncs_once_freed(tmp_path, small_disk, simulator):
    box = Box(tmp_path, simulator.url, extra=BUDGET)
    assert box.cli("courses", "add", "C1", "C2").returncode == 0
    assert box.enqueue(QUEUED).returncode == 0

    # Under the budget: refused with the reason, nothing written; status still answers.
    fill(small_disk, leave=UNDER_BUDGET)
    result = box.enqueue([event("student1", 5, C2)])
    assert refused(result), result.stderr
    assert "new events are refused until space is freed" in result.stderr
    health = box.status()["health"]
    assert health["disk"]["full"] is True
    assert "new events are refused" in health["warnings"]["disk"]
    assert box.status()["queued"] == len(QUEUED)

    # Completely full (something else filled the card): still a clear refusal, nothing lost.
    fill(small_disk)
    assert free_bytes(small_disk) < 4096
    result = box.enqueue([event("student1", 5, C2)])
    assert refused(result), result.stderr
    check, keys = queued_on_disk(box)
    assert check == "ok"
    assert keys == [e["id"] for e in QUEUED]

    # Some space back, still under the budget: new events stay refused, but the sync runs.
    (small_disk / "filler-0").unlink()
    assert refused(box.enqueue([event("student1", 5, C2)]))
    code, run, err = sync(box)
    assert code == 0, (run, err)
    assert run["actions"]["completions"] == len(QUEUED)

    # All space back: new events are taken again and sync.
    (small_disk / f"filler-{UNDER_BUDGET}").unlink()
    assert box.enqueue([event("student1", 5, C2)]).returncode == 0
    code, run, err = sync(box)
    assert code == 0 and run["actions"]["completions"] == 1, (run, err)
    assert box.status()["queued"] == 0
    moodle = MoodleReader(simulator.url)
    assert moodle.completion(C2, 3, 5) == 1
    assert moodle.completion(C1, 7, 2) == 1
    assert queued_on_disk(box)[0] == "ok"


def test_budget_defaults_apply_without_a_config(tmp_path, small_disk):
    # 200 MB must stay free by default: more than this whole disk.
    db = open_db(small_disk / "agent.db")
    keep_courses(2)
    try:
        with pytest.raises(StorageFull) as err:
            enqueue(validate_events([event("student1", 1)]))
        assert err.value.space.min_free_bytes == 200 * 1024 * 1024
        assert err.value.problem.startswith("storage is full: ") and err.value.field is None
        config = load_config(Box(tmp_path, "http://127.0.0.1:9", extra=BUDGET).config)
        assert enqueue(validate_events([event("student1", 1)]), config=config).stored == 1
    finally:
        db.close()


@pytest.mark.parametrize("failure, reason", [
    (OSError(), "OSError (no reason given)"),  # what printed "moodle-sync-agent: : None"
    (OSError(errno.ENOSYS, "Function not implemented"), "Function not implemented"),  # qemu-user
    (RuntimeError(""), "RuntimeError (no reason given)"),
])
def test_a_failing_disk_probe_is_named_and_nothing_is_queued(tmp_path, monkeypatch, capsys, failure, reason):
    """The probe really fails (psutil raises, as on a board whose kernel lacks
    statfs); the CLI runs in this process, so that it meets that failure."""
    import psutil

    from agent import cli
    from agent.store.db import database

    box = Box(tmp_path, "http://127.0.0.1:9")
    box.keep_courses(C1)
    events = tmp_path / "events.json"
    events.write_text(json.dumps([event("student1", 1)]))

    def probe(path):
        raise failure

    monkeypatch.setattr(psutil, "disk_usage", probe)
    previous = database.obj
    try:
        code = cli.main(["--config", str(box.config), "enqueue", str(events)])
    finally:
        database.obj.close()
        database.initialize(previous)
    err = capsys.readouterr().err
    assert (code, err) == (2, f"moodle-sync-agent: enqueue: cannot read the free space of {box.database.parent}: "
                              f"{reason}\n")
    monkeypatch.undo()
    assert box.status()["queued"] == 0
    # A file that is not there is named with the command too.
    assert box.cli("enqueue", str(tmp_path / "nowhere.json")).stderr == (
        f"moodle-sync-agent: enqueue: {tmp_path / 'nowhere.json'}: No such file or directory\n")


def test_the_events_api_names_a_failing_disk_probe(tmp_path, monkeypatch):
    import psutil

    from tests.helpers import COMPLETION, api, write_config
    from webui import create_app

    app = create_app(write_config(tmp_path))
    keep_courses(C1)

    def probe(path):
        raise OSError()

    monkeypatch.setattr(psutil, "disk_usage", probe)
    answer = api(app.test_client(), [COMPLETION])
    assert answer.status_code == 503
    assert answer.get_json() == {"error": f"events not queued: cannot read the free space of {tmp_path / 'data'}: "
                                          "OSError (no reason given)"}
    assert Event.select().count() == 0
    monkeypatch.undo()
    assert api(app.test_client(), [COMPLETION]).status_code == 201
    assert Event.select().count() == 1
