"""Configuration errors exit 2 with one line naming the file, the key and the problem."""

import http.server
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent import config as config_module
from agent import config_docs
from agent.config import ConfigError, load_config
from tests.helpers import ROOT, Box

# Moodle tokens as Moodle makes them: 32 hexadecimal characters.
SECRET = "5ec7e70c3a1f4b2d9e8c7b6a5f4e3d2c"
BOX_SECRET = "b0c5ec7e70c3a1f4b2d9e8c7b6a5f4e3"


def write(tmp_path, text):
    path = tmp_path / "agent.ini"
    path.write_text(text)
    return path


@pytest.mark.pure  # no database, no server
def test_full_config_reads_every_section(tmp_path):
    (tmp_path / "tok").write_text(f"  {SECRET}\n\n")
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
    assert cfg.moodle.token == SECRET
    assert cfg.moodle.timeout == 12.5
    assert cfg.agent.batch_size == 25
    assert cfg.schedule.enabled is False and cfg.schedule.time_utc == "03:30"
    assert SECRET not in repr(cfg)


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
@pytest.mark.pure  # no database, no server
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
                ["history"], ["status"], ["check"], ["conflicts"], ["conflicts", "retry"], ["set-password"],
                ["connect"]):
        result = box.cli(*cmd, "--help")
        assert result.returncode == 0 and "usage: moodle-sync-agent" in result.stdout, cmd


# -- unknown sections and keys ------------------------------------------------

BASE = "[moodle]\nurl = http://127.0.0.1:9\ntoken = x\n"


@pytest.mark.parametrize("extra, named, hint", [
    ("[agent]\nbatch_sise = 7\n", "[agent] batch_sise", "unknown key (did you mean batch_size?)"),
    ("[shedule]\nenabled = no\n", "[shedule]", "unknown section (did you mean [schedule]?)"),
])
def test_cli_refuses_unknown_section_or_key_with_closest_name(tmp_path, extra, named, hint):
    box = Box(tmp_path, "http://127.0.0.1:9")
    box.config.write_text(BASE + extra)
    result = box.cli("status")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"moodle-sync-agent: {box.config}: {named}: {hint}"]


@pytest.mark.pure  # no database, no server
def test_unknown_key_without_close_match_lists_the_known_ones(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE + "[web]\ncolour = blue\n"))
    assert "[web] colour: unknown key; known: host, port, api_key, public_status, stale_days" in str(err.value)


@pytest.mark.pure  # no database, no server
def test_default_section_is_refused(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "[DEFAULT]\ntimeout = 5\n" + BASE))
    assert "[DEFAULT]: unknown section" in str(err.value)


@pytest.mark.pure  # no database, no server
def test_unknown_key_is_named_before_a_missing_one(tmp_path):
    # "urll" is the reason url is missing: say so, not "url missing".
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "[moodle]\nurll = http://x\ntoken = x\n"))
    assert "[moodle] urll: unknown key (did you mean url?)" in str(err.value)


@pytest.mark.pure  # no database, no server
def test_ranges_are_written_without_exponent(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE + "[agent]\nmin_free_mb = -1\n"))
    assert "must be between 0 and 1000000, got -1" in str(err.value)


# -- [box]: the box's own Moodle, optional -------------------------------------

@pytest.mark.pure  # no database, no server
def test_without_a_box_url_there_is_no_box(tmp_path):
    assert load_config(write(tmp_path, BASE)).box is None
    # The packaged file's empty [box] section, or keys without a url: no box either.
    assert load_config(write(tmp_path, BASE + "[box]\nurl =\ntimeout = 5\n")).box is None


@pytest.mark.pure  # no database, no server
def test_a_box_url_reads_its_token_and_settings(tmp_path):
    (tmp_path / "box-token").write_text(BOX_SECRET + "\n")
    cfg = load_config(write(tmp_path, BASE + f"[box]\nurl = http://127.0.0.1/\ntoken_file = {tmp_path / 'box-token'}\n"
                                             "collect_minutes = 5\n"))
    assert cfg.box is not None
    assert (cfg.box.url, cfg.box.token, cfg.box.timeout, cfg.box.collect_minutes) == ("http://127.0.0.1", BOX_SECRET,
                                                                                      30.0, 5.0)
    assert cfg.box.rest_url == "http://127.0.0.1/webservice/rest/server.php"
    assert cfg.moodle.token == "x" and BOX_SECRET not in repr(cfg)


@pytest.mark.parametrize("body, key, problem", [
    ("[box]\nurl = http://127.0.0.1\n", "[box] token_file", "missing"),
    ("[box]\nurl = ftp://box\ntoken = t\n", "[box] url", "http"),
    ("[box]\nurl = http://127.0.0.1\ntoken_file = /nonexistent\n", "[box] token_file", "cannot read"),
    ("[box]\nurl = http://127.0.0.1\ntoken = t\ncollect_minutes = 0\n", "[box] collect_minutes", "between 1 and 1440"),
    ("[box]\nurl = http://127.0.0.1\ntoken = t\ncolect_minutes = 5\n", "[box] colect_minutes",
     "did you mean collect_minutes"),
])
@pytest.mark.pure  # no database, no server
def test_bad_box_values_name_the_key(tmp_path, body, key, problem):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE + body))
    assert key in str(err.value) and problem in str(err.value)


# -- [web] api_key: at least 128 bits ----------------------------------------

@pytest.mark.parametrize("key", [
    "1",
    "0123456789abcdef0123456789abcde",  # 31 hex digits: 124 bits
    "aB3-_xY9zQ0pL7mN4vR2t",  # 21 base64url characters: 126 bits
    "key with spaces in it that is long enough",
    "ünïcödé-ünïcödé-ünïcödé-ünïcödé",
    "==========================",  # padding only
])
@pytest.mark.pure  # no database, no server
def test_short_or_odd_api_key_is_refused_without_echoing_it(tmp_path, key):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE + f"[web]\napi_key = {key}\n"))
    message = str(err.value)
    assert "[web] api_key" in message and "secrets.token_hex(16)" in message
    assert (key if len(key) > 3 else repr(key)) not in message  # the key is never echoed


@pytest.mark.parametrize("key", [
    "0123456789abcdef0123456789abcdef",  # 32 hex digits (secrets.token_hex(16))
    "aB3-_xY9zQ0pL7mN4vR2tW",  # 22 base64url characters (secrets.token_urlsafe(16))
    "aB3+/xY9zQ0pL7mN4vR2tW==",  # base64 with padding
])
@pytest.mark.pure  # no database, no server
def test_api_key_of_128_bits_is_accepted(tmp_path, key):
    assert load_config(write(tmp_path, BASE + f"[web]\napi_key = {key}\n")).web.api_key == key


@pytest.mark.parametrize("key", [
    "0" * 32,  # 128 bits by its length, none by its content
    "ab" * 16,
    "abcdefa" * 5,  # 7 distinct hex digits
    "Z" * 22,  # base64url, one character
    "aB3-aB3-aB3-aB3-aB3-aB3-",
])
def test_an_api_key_that_repeats_its_characters_is_refused(tmp_path, key):
    box = Box(tmp_path, "http://127.0.0.1:9")
    box.config.write_text(BASE + f"[web]\napi_key = {key}\n")
    result = box.cli("status")
    assert result.returncode == 2
    line = result.stderr.strip()
    assert line.startswith(f"moodle-sync-agent: {box.config}: [web] api_key: repeats its characters (only "), line
    assert "secrets.token_hex(16)" in line and key not in line


def test_the_key_the_package_makes_is_accepted(tmp_path):
    """What the Debian postinst runs (packaging/add_api_key.py) makes keys
    that pass: 20 of them, each loaded."""
    ini = write(tmp_path, BASE)
    for _ in range(20):
        ini.write_text(BASE)
        result = subprocess.run([sys.executable, str(ROOT / "packaging" / "add_api_key.py"), str(ini)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert len(load_config(ini).web.api_key or "") == 32


# -- token files: a Moodle token, or nothing read and nothing sent -------------

@pytest.mark.parametrize("content", [
    "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n",
    SECRET[:31] + "\n",  # one character short
    SECRET + "0\n",
    SECRET + " " + SECRET + "\n",  # two tokens
    "TOKEN\n",
    SECRET.replace("5", "g") + "\n",  # not hexadecimal
    SECRET + "\n" + " " * 600,  # a token, then more than is read
])
@pytest.mark.parametrize("section", ["moodle", "box"])
def test_a_token_file_without_a_moodle_token_is_refused_without_quoting_it(tmp_path, content, section):
    token_file = tmp_path / "tok"
    token_file.write_text(content)
    body = (f"[moodle]\nurl = http://127.0.0.1:9\ntoken_file = {token_file}\n" if section == "moodle" else
            BASE + f"[box]\nurl = http://127.0.0.1:9\ntoken_file = {token_file}\n")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, body))
    assert err.value.key == f"[{section}] token_file"
    assert err.value.problem == (f"{token_file} does not hold a Moodle token (32 hexadecimal characters, "
                                 "alone in the file): is it the right file?")


def test_a_token_file_is_read_no_further_than_a_token(tmp_path):
    """A pipe that never ends stands for a huge file (or /dev/zero): the
    configuration is refused once a few hundred bytes came, not at the end."""
    fifo = tmp_path / "tok"
    os.mkfifo(fifo)
    done = threading.Event()

    def writer():
        with open(fifo, "w") as fh:
            fh.write("a" * 4096)
            fh.flush()
            done.wait(10)  # the end of the "file" comes only after 10 s, or after the test

    thread = threading.Thread(target=writer)
    thread.start()
    started = time.monotonic()
    try:
        with pytest.raises(ConfigError) as err:
            load_config(write(tmp_path, f"[moodle]\nurl = http://127.0.0.1:9\ntoken_file = {fifo}\n"))
        assert time.monotonic() - started < 5
    finally:
        done.set()
        thread.join()
    assert "does not hold a Moodle token" in str(err.value) and "aaaa" not in str(err.value)


class Recorder(http.server.BaseHTTPRequestHandler):
    received: list[str] = []

    def handle_one_request(self):
        Recorder.received.append(self.requestline or "(a connection)")
        super().handle_one_request()

    def do_POST(self):
        self.send_response(500)
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("command", ["sync", "check", "collect"])
def test_token_file_etc_passwd_stops_at_load_and_sends_nothing(tmp_path, command):
    Recorder.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        box = Box(tmp_path, url)
        box.config.write_text(f"[moodle]\nurl = {url}\ntoken_file = /etc/passwd\n\n"
                              f"[agent]\ndatabase = {box.database}\n\n[box]\nurl = {url}\ntoken_file = /etc/passwd\n")
        result = box.cli(command)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 2
    assert result.stderr.strip() == (f"moodle-sync-agent: {box.config}: [moodle] token_file: /etc/passwd does not "
                                     "hold a Moodle token (32 hexadecimal characters, alone in the file): "
                                     "is it the right file?")
    assert Path("/etc/passwd").read_text().splitlines()[0] not in result.stdout + result.stderr
    assert Recorder.received == []
    assert not box.database.exists()  # stopped before anything was opened


# -- [agent] database: where it really is ------------------------------------

def test_the_database_path_is_resolved_at_load(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    cfg = load_config(write(tmp_path, BASE + f"[agent]\ndatabase = {tmp_path}/a/b/../../link/./agent.db\n"))
    assert cfg.agent.database == tmp_path.resolve() / "real" / "agent.db"
    assert cfg.agent.data_dir == tmp_path.resolve() / "real"


# -- one declaration: the sample file and the man page come from the table ---

@pytest.mark.pure  # no database, no server
def test_packaged_files_match_the_table():
    ini = ROOT / "packaging" / "etc" / "agent.ini"
    man = ROOT / "packaging" / "moodle-sync-agent.1"
    assert ini.read_text() == config_docs.sample_ini(), "run scripts/gen-config"
    page = man.read_text()
    assert page == config_docs.with_man_settings(page), "run scripts/gen-config"
    for s in config_module.SETTINGS:  # the man page lists every key, each with its help line
        assert s.help.strip(), s.key
        assert f"\n.B {s.key}\n" in page or f"\n.BR {s.key} " in page, s.key


@pytest.mark.pure  # no database, no server
def test_gen_config_rewrites_a_drifted_file(tmp_path):
    (tmp_path / "packaging" / "etc").mkdir(parents=True)
    (tmp_path / "packaging" / "etc" / "agent.ini").write_text("[agent]\n#batch_size = 7\n")
    page = (ROOT / "packaging" / "moodle-sync-agent.1").read_text()
    (tmp_path / "packaging" / "moodle-sync-agent.1").write_text(page.replace(".BR batch_size", ".BR batch_sise"))
    changed = config_docs.write(tmp_path)
    assert [p.name for p in changed] == ["agent.ini", "moodle-sync-agent.1"]
    assert (tmp_path / "packaging" / "etc" / "agent.ini").read_text() == config_docs.sample_ini()
    assert (tmp_path / "packaging" / "moodle-sync-agent.1").read_text() == page
    assert config_docs.write(tmp_path) == []


def packaged_sample(tmp_path, uncomment: bool):
    """packaging/etc/agent.ini with a token file that exists; uncomment: every
    commented-out default set, as written."""
    (tmp_path / "token").write_text(SECRET + "\n")
    text = (ROOT / "packaging" / "etc" / "agent.ini").read_text()
    text = text.replace("token_file = /etc/moodle-sync-agent/token", f"token_file = {tmp_path / 'token'}")
    if uncomment:
        text = re.sub(r"^#(\w+ = \S.*)$", r"\1", text, flags=re.M)
        # Examples, not defaults: a file that exists elsewhere, a box's own name, a mail server.
        text = text.replace("ca_bundle = ", "#ca_bundle = ").replace("box_name = ", "#box_name = ")
        text = text.replace("\nhost = localhost", "\n#host = localhost")
    return write(tmp_path, text)


@pytest.mark.parametrize("uncomment", [False, True])
@pytest.mark.pure  # no database, no server
def test_packaged_sample_loads_and_its_comments_tell_the_defaults(tmp_path, uncomment):
    cfg = load_config(packaged_sample(tmp_path, uncomment))
    assert cfg.moodle.url == "https://moodle.example.org" and cfg.moodle.token == SECRET
    assert cfg.web.host == "0.0.0.0"  # the package's own choice: the page on the classroom Wi-Fi
    assert cfg.agent == config_module.AgentConfig()
    assert cfg.schedule == config_module.ScheduleConfig()
    assert cfg.smtp == config_module.SmtpConfig()
    assert (cfg.moodle.timeout, cfg.moodle.ca_bundle) == (30.0, None)
    assert (cfg.web.port, cfg.web.api_key, cfg.web.public_status, cfg.web.stale_days) == (8080, None, False, 7)


@pytest.mark.pure  # no database, no server
def test_sample_lines_fit_a_terminal():
    long = [line for line in config_docs.sample_ini().splitlines() if len(line) > 79]
    assert long == []


# -- gunicorn.conf.py: [web] host and port, else the table's defaults ---------

@pytest.mark.parametrize("web, bind", [
    ("", "127.0.0.1:8080"),
    ("[web]\nhost = ::1\n", "[::1]:8080"),
    ("[web]\nhost = 0.0.0.0\nport = 9090\n", "0.0.0.0:9090"),
])
def test_gunicorn_conf_binds_from_the_config_file(tmp_path, web, bind):
    path = write(tmp_path, BASE + web)
    # The modules may be installed elsewhere (scripts/test-package): keep that path too.
    env = {**os.environ, "MOODLE_SYNC_AGENT_CONFIG": str(path),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    env.pop("MOODLE_SYNC_AGENT_BIND", None)
    result = subprocess.run(
        [sys.executable, "-c", "import runpy, sys; print(runpy.run_path(sys.argv[1])['bind'])",
         str(ROOT / "packaging" / "gunicorn.conf.py")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == repr([bind])
