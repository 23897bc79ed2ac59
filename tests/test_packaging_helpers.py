"""The package's two helpers, run as the package runs them (a process on
real files): add_api_key.py (the postinst's events API key) and
nginx_conf.py (the proxy unit's nginx configuration)."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT

PACKAGING = ROOT / "packaging"
SHIPPED_INI = (PACKAGING / "etc" / "agent.ini").read_text()


def add_api_key(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PACKAGING / "add_api_key.py"), str(path)],
                          capture_output=True, text=True, timeout=30)


def api_keys(path) -> list[str]:
    return re.findall(r"(?m)^api_key = (.*)$", path.read_text())


def test_a_fresh_config_gets_one_128_bit_key_with_its_mode_kept(tmp_path):
    ini = tmp_path / "agent.ini"
    ini.write_text(SHIPPED_INI)
    ini.chmod(0o640)
    result = add_api_key(ini)
    assert result.returncode == 0, result.stderr
    keys = api_keys(ini)
    assert len(keys) == 1 and re.fullmatch(r"[0-9a-f]{32}", keys[0]), keys
    assert oct(ini.stat().st_mode & 0o777) == "0o640"
    # Only the placeholder line changed: every other line is as shipped.
    assert [line for line in ini.read_text().splitlines() if not line.startswith("api_key")] == \
        [line for line in SHIPPED_INI.splitlines() if not re.match(r"#\s*api_key\s*=\s*$", line)]


def test_a_key_already_set_is_never_replaced(tmp_path):
    ini = tmp_path / "agent.ini"
    ini.write_text("[web]\nport = 8080\napi_key = chosen-by-the-admin\n")
    assert add_api_key(ini).returncode == 0
    assert api_keys(ini) == ["chosen-by-the-admin"]


@pytest.mark.parametrize("text", ["[moodle]\nurl = x", "[web]\nport = 1\napi_key =\n", "[web]\n"],
                         ids=["no [web]", "empty key", "bare [web]"])
def test_an_unset_key_is_written_in_web(tmp_path, text):
    ini = tmp_path / "agent.ini"
    ini.write_text(text)
    assert add_api_key(ini).returncode == 0
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ini)
    assert re.fullmatch(r"[0-9a-f]{32}", parser.get("web", "api_key")), ini.read_text()


def nginx_conf(tmp_path, host: str, *extra: str) -> subprocess.CompletedProcess:
    (tmp_path / "token").write_text("0123456789abcdef0123456789abcdef\n")
    ini = tmp_path / "agent.ini"
    ini.write_text(f"[moodle]\nurl = http://127.0.0.1:9\ntoken_file = {tmp_path / 'token'}\n\n"
                   f"[agent]\ndatabase = {tmp_path / 'agent.db'}\n\n[web]\nhost = {host}\nport = 8123\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    return subprocess.run([sys.executable, str(PACKAGING / "nginx_conf.py"), "--config", str(ini),
                           "--socket", str(tmp_path / "g.sock"), "--run-dir", str(tmp_path / "run"),
                           "--temp-dir", str(tmp_path / "tmp"), *extra],
                          capture_output=True, text=True, timeout=30, env=env)


@pytest.mark.parametrize("host, listen", [("0.0.0.0", "0.0.0.0:8123"), ("::", "[::]:8123 ipv6only=off"),
                                          ("::1", "[::1]:8123"), ("box.local", "box.local:8123")])
def test_nginx_listens_where_the_config_says(tmp_path, host, listen):
    result = nginx_conf(tmp_path, host)
    assert result.returncode == 0, result.stderr
    assert f"listen {listen};" in (tmp_path / "run" / "nginx.conf").read_text()


def test_a_host_that_would_break_the_nginx_file_is_refused_naming_the_key(tmp_path):
    result = nginx_conf(tmp_path, "0.0.0.0:80; include /etc/shadow")
    assert (result.returncode, result.stderr.strip()) == (
        2, f"nginx_conf: {tmp_path / 'agent.ini'}: [web] host: must be an IP address or a host name, "
           "got '0.0.0.0:80; include /etc/shadow'")
    assert not (tmp_path / "run").exists()


def test_a_socket_path_too_long_for_unix_sockets_is_refused(tmp_path):
    result = nginx_conf(tmp_path, "127.0.0.1", "--socket", "/" + "s" * 120)
    assert result.returncode == 2 and "too long for a Unix socket" in result.stderr, result.stderr
