"""``moodle-sync-agent connect server|box URL --user NAME``: a token by login, written to its file.

The sync account's password is read from the terminal (or one line of
standard input when that is not a terminal), sent once to Moodle's
``login/token.php`` (agent/moodle/login.py) and forgotten: never stored, never in
an argument, a log line, the history or an error. The token goes to the
configured token file, atomically, mode 0600, owned by the agent's user when
root runs this; nothing else changes. The page's advanced settings use the
same functions (webui/connect.py).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import io
import json
import os
import secrets
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from .config import Config, ConfigError, load_config
from .exits import EXIT_OFFLINE, EXIT_USAGE
from .rights import RIGHTS_KEY
from .moodle.login import Login, LoginRefused, request_token
from .moodle import Unreachable
from .store import settings

# The package's service account (packaging/debian/moodle-sync-agent.sysusers): it reads the tokens.
AGENT_USER = "moodle-sync-agent"
SIDES = ("server", "box")


class ConnectError(Exception):
    """A problem with the command or the configuration; the message says what to do."""


@dataclass(frozen=True)
class Target:
    side: str          # server or box
    section: str       # moodle or box: its section in agent.ini
    url: str
    token_file: Path
    service: str
    timeout: float
    ca_bundle: str | None


def target(config: Config, side: str, url: str | None = None) -> Target:
    """Where a token for one side goes, from the configuration; ConnectError when it cannot."""
    if side not in SIDES:
        raise ConnectError(f"connect: must be server or box, got {side!r}")
    site = config.moodle if side == "server" else config.box
    section = "moodle" if side == "server" else "box"
    if site is None:
        raise ConnectError(f"{config.path}: [box] url is not set: set url and token_file in [box] first")
    if url is not None and url.rstrip("/") != site.url.rstrip("/"):
        raise ConnectError(f"{url} is not the address in {config.path} ([{section}] url = {site.url}): connect "
                           f"writes only the token; set url there first, or connect to {site.url}")
    if not site.token_file:
        raise ConnectError(f"{config.path}: [{section}] token_file is not set: connect writes the token there; "
                           f"set token_file (for example /etc/moodle-sync-agent/{'token' if side == 'server' else 'box-token'})"
                           " and remove token")
    service = getattr(site, "service", "moodle_sync_agent")
    return Target(side, section, site.url, Path(site.token_file), service, site.timeout, site.ca_bundle)


def read_password(prompt: str) -> str:
    """From the terminal without echo, or one line of standard input (a script, a test)."""
    if sys.stdin.isatty():
        password = getpass.getpass(prompt)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise ConnectError("no password given (type it at the prompt, or give it as one line on standard input)")
    return password


def fetch_token(t: Target, username: str, password: str) -> str:
    """Moodle's token for the account; LoginRefused or Unreachable say why not."""
    if not username.strip():
        raise ConnectError("--user: the Moodle account's username is empty")
    login = Login(url=t.url, username=username.strip(), service=t.service, timeout=t.timeout, ca_bundle=t.ca_bundle)
    return request_token(login, password)


def _agent_ids() -> tuple[int, int] | None:
    """The agent's user and group ids, when root writes for it; None otherwise (the file stays the writer's)."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(AGENT_USER)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def write_token(path: Path, token: str) -> None:
    """Replace the token file at once: a reader sees the old token or the new one, never a part.

    A new file beside it (mode 0600 from its creation), synced, renamed over
    the old one. Where the directory is not writable by us (the page runs as
    the agent's user; /etc/moodle-sync-agent is root's), the file itself is
    rewritten in one write, which it must then be ours to do."""
    data = (token + "\n").encode()
    ids = _agent_ids()
    directory = path.parent
    writable = os.access(directory, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids)
    if not writable and path.exists():
        _rewrite_in_place(path, data)
        return
    temp = directory / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            if ids is not None:
                os.fchown(fd, *ids)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _rewrite_in_place(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        os.fchmod(fd, 0o600)
        # Written over the old token (of the same length) before the rest is cut: never an empty file.
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)




def command(config: Config, args: argparse.Namespace, check: Callable[[Config, argparse.Namespace], int]) -> int:
    """``connect``: the token, its file, then ``check`` (cli.cmd_check, given: cli imports this module).

    With --json one object on standard output, for the page: ``ok``, and
    ``errorcode`` and ``error`` when not; check's judgement goes to the
    database (settings server_rights / box_rights), as every check's does."""
    where = target(config, args.side, args.url)
    password = read_password(f"Password of {args.user} on {where.url}: ")
    try:
        token = fetch_token(where, args.user, password)
    except LoginRefused as exc:
        return _outcome(args, EXIT_USAGE, ok=False, errorcode=exc.errorcode, message=exc.message, error=str(exc))
    except Unreachable as exc:
        return _outcome(args, EXIT_OFFLINE, ok=False, errorcode="unreachable", error=f"offline: {exc.reason}")
    finally:
        del password
    try:
        write_token(where.token_file, token)
    except OSError as exc:
        raise ConnectError(f"cannot write the token to {where.token_file}: {exc.strerror or exc}; the file must "
                           f"be the agent's (as root: install -m 0600 -o {AGENT_USER} -g {AGENT_USER} /dev/null "
                           f"{where.token_file}), or its directory writable") from None
    done = f"the token of {args.user.strip()} for the service {where.service} is in {where.token_file}"
    if not args.json:
        print(done)
    settings.put(**{RIGHTS_KEY[where.side]: None})  # what check finds of the new token replaces it
    quiet = contextlib.redirect_stdout(io.StringIO()) if args.json else contextlib.nullcontext()
    with quiet:
        try:
            code = check(load_config(args.config), argparse.Namespace(json=False))
        except ConfigError as exc:
            # The other side has no token yet (connect it next): check this one.
            print(f"not checked: {exc}")
            site: Any = config.moodle if where.side == "server" else config.box
            mine = replace(config, **{"moodle" if where.side == "server" else "box": replace(site, token=token)})
            code = check(mine, argparse.Namespace(json=False, only=where.side))
    return _outcome(args, code, ok=True, side=where.side, token_file=str(where.token_file),
                    checked=settings.get(config, RIGHTS_KEY[where.side]) is not None)


def _outcome(args: argparse.Namespace, code: int, **fields: Any) -> int:
    if args.json:
        print(json.dumps(fields))
    elif not fields["ok"]:
        print(f"moodle-sync-agent: {fields['error']}", file=sys.stderr)
    return code
