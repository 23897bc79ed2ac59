"""Configuration errors exit 2 with one line naming the file, the key and the problem."""

import pytest

from agent.config import ConfigError, load_config
from tests.helpers import Box


def write(tmp_path, text):
    path = tmp_path / "agent.ini"
    path.write_text(text)
    return path


def test_full_config_reads_every_section(tmp_path):
    (tmp_path / "tok").write_text("secret-token\n")
    cfg = load_config(write(tmp_path, f"""
[moodle]
url = https://moodle.example.org/
token_file = {tmp_path / 'tok'}
timeout = 12.5
[agent]
database = {tmp_path / 'db' / 'agent.db'}
batch_size = 25
[schedule]
enabled = no
time_utc = 03:30
jitter_minutes = 2
catch_up_hours = 0
"""))
    assert cfg.moodle.url == "https://moodle.example.org"
    assert cfg.moodle.token == "secret-token"
    assert cfg.moodle.timeout == 12.5
    assert cfg.agent.batch_size == 25
    assert cfg.schedule.enabled is False and cfg.schedule.time_utc == "03:30"
    assert "secret-token" not in repr(cfg)


@pytest.mark.parametrize("body, key, problem", [
    ("[moodle]\ntoken = x\n", "[moodle] url", "missing"),
    ("[moodle]\nurl = ftp://x\ntoken = x\n", "[moodle] url", "http"),
    ("[moodle]\nurl = http://x\n", "[moodle] token_file", "missing"),
    ("[moodle]\nurl = http://x\ntoken_file = /nonexistent/token\n", "[moodle] token_file", "cannot read"),
    ("[moodle]\nurl = http://x\ntoken = x\ntimeout = soon\n", "[moodle] timeout", "must be a number"),
    ("[moodle]\nurl = http://x\ntoken = x\nca_bundle = /nope.pem\n", "[moodle] ca_bundle", "no such file"),
    ("[moodle]\nurl = http://x\ntoken = x\n[agent]\nbatch_size = 0\n", "[agent] batch_size", "between 1 and 1000"),
    ("[moodle]\nurl = http://x\ntoken = x\n[schedule]\ntime_utc = 25:00\n", "[schedule] time_utc", "HH:MM"),
    ("[moodle]\nurl = http://x\ntoken = x\n[schedule]\nenabled = maybe\n", "[schedule] enabled", "yes or no"),
    ("not an ini file\n", "file", "not a valid INI file"),
])
def test_bad_values_name_file_key_and_problem(tmp_path, body, key, problem):
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert key in str(err.value)
    assert problem in str(err.value)


def test_cli_exits_2_with_one_line(tmp_path):
    box = Box(tmp_path, "http://127.0.0.1:9")
    box.config.write_text("[moodle]\nurl = http://127.0.0.1:9\ntoken = x\n[agent]\nbatch_size = lots\n")
    result = box.cli("status")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(box.config) in lines[0] and "[agent] batch_size" in lines[0] and "whole number" in lines[0]


def test_config_path_from_environment_and_missing_file(tmp_path):
    box = Box(tmp_path, "http://127.0.0.1:9")
    box.config.unlink()
    result = box.cli("status")
    assert result.returncode == 2
    assert str(box.config) in result.stderr and "not found" in result.stderr


def test_every_subcommand_has_help(tmp_path):
    box = Box(tmp_path, "http://127.0.0.1:9")
    assert box.cli("--version").stdout.startswith("moodle-sync-agent ")
    for cmd in (["enqueue"], ["courses", "add"], ["courses", "list"], ["courses", "remove"], ["sync"],
                ["history"], ["status"], ["check"], ["conflicts"], ["conflicts", "retry"], ["set-password"]):
        result = box.cli(*cmd, "--help")
        assert result.returncode == 0 and "usage: moodle-sync-agent" in result.stdout, cmd
