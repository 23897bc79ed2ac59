"""Writes the nginx configuration of the teacher's page from agent.ini.

nginx listens on [web] host and port and hands complete requests to gunicorn
on a Unix socket (see nginx.conf.in, next to this file). Run before nginx
starts, by moodle-sync-agent-proxy.service and by scripts/demo:

    python3 /usr/share/moodle-sync-agent/nginx_conf.py --socket PATH \
        --run-dir DIR --temp-dir DIR [--config PATH] [--user NAME]

writes DIR/nginx.conf (nginx's pid file goes in the same directory). The
configuration is read with the agent's own loader, so a bad value stops the
page with the same one-line error as every command (exit status 2).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
import tempfile
from pathlib import Path

from agent.config import Config, ConfigError, load_config
from agent.store.queue import MAX_INPUT_BYTES

TEMPLATE = Path(__file__).with_name("nginx.conf.in")
HOST_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})")
# sockaddr_un.sun_path holds 108 bytes, the final NUL included.
MAX_SOCKET_PATH = 107


def listen_address(config: Config) -> str:
    """nginx's listen parameter for [web] host and port."""
    host, port = config.web.host, config.web.port
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if not HOST_NAME_RE.fullmatch(host):
            raise ConfigError(config.path, "[web] host", f"must be an IP address or a host name, got {host!r}") from None
        return f"{host}:{port}"
    if address.version == 6:
        # As with a Python socket bound to "::", IPv4 clients come in too.
        return f"[{address}]:{port}" + (" ipv6only=off" if address.is_unspecified else "")
    return f"{address}:{port}"


def check_path(path: str) -> str:
    """argparse type: an absolute path that cannot break out of an nginx directive."""
    if not os.path.isabs(path) or re.search(r"[\s;{}'\"\\#$]", path):
        raise argparse.ArgumentTypeError(f"must be an absolute path without spaces, quotes, ;, {{, }}, # or $: {path!r}")
    return path


def check_socket(path: str) -> str:
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise argparse.ArgumentTypeError(f"longer than {MAX_SOCKET_PATH} bytes, too long for a Unix socket: {path}")
    return check_path(path)


def check_user(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_-]*", name):
        raise argparse.ArgumentTypeError(f"not a user name: {name!r}")
    return name


def render(config: Config, socket_path: str, run_dir: str, temp_dir: str, user: str | None) -> str:
    values = {
        "USER": f"user {user};" if user else "# No user directive: nginx runs as the user that starts it.",
        "LISTEN": listen_address(config),
        "SOCKET": socket_path,
        "RUN_DIR": run_dir,
        "TEMP_DIR": temp_dir,
        "MAX_BODY": str(MAX_INPUT_BYTES),
        "MAX_BODY_MB": str(MAX_INPUT_BYTES // (1024 * 1024)),
    }
    return re.sub(r"@([A-Z_]+)@", lambda m: values[m.group(1)], TEMPLATE.read_text(encoding="utf-8"))


def write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".nginx.conf.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="agent.ini (default: $MOODLE_SYNC_AGENT_CONFIG, else the system one)")
    parser.add_argument("--socket", required=True, type=check_socket, help="gunicorn's Unix socket")
    parser.add_argument("--run-dir", required=True, type=check_path, help="where nginx.conf and nginx's pid file go")
    parser.add_argument("--temp-dir", required=True, type=check_path,
                        help="nginx's temporary files (request bodies); created if missing")
    parser.add_argument("--user", type=check_user, help="the workers' user, when nginx starts as root")
    args = parser.parse_args(argv)
    try:
        text = render(load_config(args.config), args.socket, args.run_dir, args.temp_dir, args.user)
    except ConfigError as exc:
        print(f"nginx_conf: {exc}", file=sys.stderr)
        return 2
    os.makedirs(args.run_dir, mode=0o700, exist_ok=True)
    os.makedirs(args.temp_dir, mode=0o700, exist_ok=True)
    write_atomically(Path(args.run_dir) / "nginx.conf", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
