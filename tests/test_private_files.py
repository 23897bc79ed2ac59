"""The box's secrets on disk: the database (and its -wal and -shm) only for
the agent's account whatever the umask, at the path it really names, said by
`check`; token files that others can read are warned about."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess

import pytest

from agent.store.db import Setting, database
from agent.store.schema import close_db, open_db
from tests.helpers import Box


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def no_umask():
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_the_database_and_its_directories_are_private_whatever_the_umask(tmp_path, no_umask):
    previous = database.obj
    path = tmp_path / "var" / "lib" / "agent.db"
    try:
        db = open_db(path)
        Setting.insert(key="probe", value="1").on_conflict_replace().execute()  # the WAL has a page now
        files = {p.name: mode(p) for p in path.parent.iterdir()}
        assert files == {"agent.db": 0o600, "agent.db-wal": 0o600, "agent.db-shm": 0o600}
        assert (mode(tmp_path / "var"), mode(tmp_path / "var" / "lib")) == (0o700, 0o700)
        db.close()
    finally:
        close_db()
        database.initialize(previous)
    os.chmod(tmp_path / "var", 0o755)  # an existing directory is the administrator's: left as it is
    db = open_db(path)
    try:
        assert mode(tmp_path / "var") == 0o755 and mode(path) == 0o600
    finally:
        db.close()
        database.initialize(previous)


def test_a_database_path_through_dotdot_goes_where_it_leads_and_check_says_where(tmp_path):
    box = Box(tmp_path, "http://127.0.0.1:9")
    (tmp_path / "etc").mkdir()
    text = box.config.read_text().replace(f"database = {box.database}", f"database = {tmp_path}/x/y/../../etc/agent.db")
    box.config.write_text(text)
    result = subprocess.run(box.argv("check"), capture_output=True, text=True, env=box.env(), timeout=60,
                            cwd=tmp_path, umask=0)
    assert result.returncode == 3, result.stderr  # the server is offline: the rest is still said
    real = tmp_path.resolve() / "etc" / "agent.db"
    assert result.stdout.splitlines()[-1] == f"database: {real}"
    assert mode(real) == 0o600 and not (tmp_path / "x").exists()
    json_result = subprocess.run(box.argv("check", "--json"), capture_output=True, text=True, env=box.env(),
                                 timeout=60, cwd=tmp_path)
    assert f'"database": "{real}"' in json_result.stdout


def one_account_group() -> int:
    for g in grp.getgrall():
        if len(set(g.gr_mem) | {p.pw_name for p in pwd.getpwall() if p.pw_gid == g.gr_gid}) == 1:
            return g.gr_gid
    pytest.skip("no group with a single account on this machine")


def shared_group() -> int:
    for g in grp.getgrall():
        if len(set(g.gr_mem) | {p.pw_name for p in pwd.getpwall() if p.pw_gid == g.gr_gid}) > 1:
            return g.gr_gid
    pytest.skip("no group with several accounts on this machine")


def test_check_warns_about_a_token_file_others_can_read(tmp_path, simulator):
    box = Box(tmp_path, simulator.url)
    token = box.dir / "token"

    def check() -> list[str]:
        result = box.cli("check")
        assert result.returncode == 0, result.stderr
        return [line for line in result.stdout.splitlines() if line.startswith("warning:")]

    os.chmod(token, 0o644)
    assert check() == [f"warning: [moodle] token_file {token} can be read by every account of the box: "
                       f"chmod 600 {token} and chown it to the account the agent runs as "
                       "(or chmod 640 with a group only that account is in)"]
    os.chmod(token, 0o600)
    assert check() == []
    if os.geteuid() == 0:  # only root gives a file away to another group
        os.chown(token, -1, one_account_group())  # the package's root:moodle-sync-agent 0640
        os.chmod(token, 0o640)
        assert check() == []
        shared = shared_group()
        os.chown(token, -1, shared)
        assert check() == [f"warning: [moodle] token_file {token} can be read by the group "
                           f"{grp.getgrgid(shared).gr_name}: chmod 600 {token} and chown it to the account the "
                           "agent runs as (or chmod 640 with a group only that account is in)"]
    assert box.token not in box.cli("check").stdout
