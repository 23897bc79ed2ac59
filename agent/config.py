"""Configuration: one INI file, read in one place, passed down as dataclasses.

Lookup order: ``--config PATH``, then ``$MOODLE_SYNC_AGENT_CONFIG``, then
``/etc/moodle-sync-agent/agent.ini``. Every bad, missing or unknown value
raises :class:`ConfigError` naming the file, the key and the problem.

Each setting is declared once, as a field of its section's dataclass: the
annotation is its type, the field's default its default, and the metadata
added by :func:`setting` its range and help line. :data:`SETTINGS` is the
table derived from them; the reader, ``packaging/etc/agent.ini`` and the man
page's list (both written by ``scripts/gen-config``) all come from it.
:mod:`agent.config_values` holds :func:`setting`, and what a value may be.
Stdlib only: gunicorn.conf.py imports this module in gunicorn's master.
"""

from __future__ import annotations

import configparser
import difflib
import os
import types
import typing
from dataclasses import MISSING, Field, dataclass, fields
from pathlib import Path
from typing import Any, Callable

# DIRECTIONS, format_number, format_value and parse_time_utc are imported from here too.
from .config_values import (DEFAULT_SERVICE, DIRECTIONS, SettingMeta, api_key, direction, existing_file,  # noqa: F401
                            format_number, format_value, parse_time_utc, parse_value, read_token_file, setting,
                            service_name, site_url)

DEFAULT_PATH = Path("/etc/moodle-sync-agent/agent.ini")
ENV_VAR = "MOODLE_SYNC_AGENT_CONFIG"


class ConfigError(Exception):
    """A bad or missing configuration value; str() is the one line to print."""

    def __init__(self, path: Path | str, key: str, problem: str):
        self.path, self.key, self.problem = str(path), key, problem
        super().__init__(f"{path}: {key}: {problem}")


# -- the declaration -------------------------------------------------------


def _host_name() -> str:
    return os.uname().nodename


@dataclass(frozen=True)
class MoodleConfig:
    """The school's Moodle site."""

    url: str = setting(
        required=True, check=site_url, packaged="https://moodle.example.org",
        help="The site's base address, without /webservice/...")
    # Read from token, or from the file token_file names: see _read_token.
    token: str = setting(
        secret=True,
        help="The web-service token itself, if not in token_file below (set only one).")
    token_file: str | None = setting(
        None, packaged="/etc/moodle-sync-agent/token",
        help="The Moodle web-service token (32 hex digits) goes in this file, alone on one\n"
             "line (mode 0600, owned by moodle-sync-agent); this writes it, with the\n"
             "password of the server's sync account (README: \"Connecting a box\"):\n"
             "  moodle-sync-agent connect server https://moodle.example.org \\\n"
             "    --user syncagent\n"
             "The two services stay stopped while this file is empty.")
    timeout: float = setting(
        30.0, lo=0.1, hi=600.0,
        help="Seconds to wait for the server before counting it as offline.")
    service: str = setting(
        DEFAULT_SERVICE, check=service_name,
        help="The short name of the server's external service that holds the agent's\n"
             "functions: moodle-sync-agent connect server asks a token for it.")
    ca_bundle: str | None = setting(
        None, check=existing_file, example="/etc/moodle-sync-agent/ca.pem",
        help="A CA certificate (PEM) for a server with a private certificate authority.")
    # Fixed prefix of the REST endpoint; a real Moodle always uses this path.
    endpoint: str = "/webservice/rest/server.php"

    @property
    def rest_url(self) -> str:
        return self.url.rstrip("/") + self.endpoint


@dataclass(frozen=True)
class BoxConfig:
    """The box's own Moodle, where the learners work (optional)."""

    url: str = setting(
        "", check=site_url,
        help="The box's own Moodle site, e.g. http://127.0.0.1; unset: nothing is\n"
             "collected, and this section's other keys are not used.")
    token: str = setting(
        "", secret=True,
        help="A web-service token of the box's Moodle, if not in token_file (set only one).")
    token_file: str | None = setting(
        None, example="/etc/moodle-sync-agent/box-token",
        help="The box's Moodle token (32 hex digits) goes in this file, alone on one line\n"
             "(mode 0600):\n"
             "  moodle-sync-agent connect box http://127.0.0.1 --user syncagent\n"
             "moodle-sync-agent check lists the functions its service lacks.")
    timeout: float = setting(
        30.0, lo=0.1, hi=600.0,
        help="Seconds to wait for the box's Moodle before counting it as down.")
    service: str = setting(
        DEFAULT_SERVICE, check=service_name,
        help="The same for the box's Moodle (moodle-sync-agent connect box).")
    collect_minutes: float = setting(
        15.0, lo=1.0, hi=1440.0,
        help="The daemon reads what the learners did every this many minutes\n"
             "(and in full before every sync).")
    # The box's Moodle is reached through the same client as the school's.
    ca_bundle: str | None = None
    endpoint: str = "/webservice/rest/server.php"

    @property
    def rest_url(self) -> str:
        return self.url.rstrip("/") + self.endpoint


@dataclass(frozen=True)
class AgentConfig:
    """The box's own data."""

    database: Path = setting(
        Path("/var/lib/moodle-sync-agent/agent.db"),
        help="The queue and the history (SQLite); the page's secret key lives beside it.")
    batch_size: int = setting(
        100, lo=1, hi=1000,
        help="Web-service calls per batched request (tool_mobile_call_external_functions),\n"
             "and grades per core_grades_update_grades call. 1 sends every event in a\n"
             "request of its own, the way the Moodle app syncs.")
    box_name: str = setting(
        factory=_host_name, example="classroom-box-1",
        help="The name this box uses in e-mails and on the page (default: host name).")
    retention_days: int = setting(
        30, lo=1, hi=3650,
        help="Sent events are kept this many days as an audit trail.")
    min_free_mb: int = setting(
        200, lo=0, hi=1_000_000,
        help="New events are refused when free space on the data directory falls under\n"
             "the larger of this (in MB) and min_free_percent.")
    min_free_percent: float = setting(
        5.0, lo=0.0, hi=90.0,
        help="The same budget as a share of the filesystem, in percent.")

    @property
    def data_dir(self) -> Path:
        return self.database.parent


@dataclass(frozen=True)
class ScheduleConfig:
    """The defaults a fresh box starts with; the page changes them afterwards."""

    enabled: bool = setting(
        True,
        help="yes: one sync a day at time_utc.")
    time_utc: str = setting(
        "02:00", check=parse_time_utc,
        help="Daily sync time, in UTC (HH:MM); it runs only when the server is reachable.")
    jitter_minutes: float = setting(
        10.0, lo=0.0, hi=720.0,
        help="Random delay before a scheduled sync, so that a fleet of boxes does not\n"
             "hit the server in the same second.")
    catch_up_hours: float = setting(
        6.0, lo=0.0, hi=23.0,
        help="After a missed scheduled time, keep trying for this many hours.")


@dataclass(frozen=True)
class SyncConfig:
    """What a sync carries, and which way (the page changes it afterwards)."""

    direction: str = setting(
        "up", check=direction,
        help="up: the box's progress goes to the server (box -> server); down: the\n"
             "server's progress comes into the box's Moodle ([box]); both: the two.\n"
             "A fresh box's value; the page changes it from the next sync on.")
    accounts_down: bool = setting(
        True,
        help="Down or both: yes: a learner enrolled on the server in a course kept on the\n"
             "box, with no account on the box's Moodle, gets one (Moodle's createpassword:\n"
             "no password travels) and the enrolment; no: only learners with an account\n"
             "there are enrolled.")


@dataclass(frozen=True)
class WebConfig:
    """The teacher's page and the events API."""

    host: str = setting(
        "127.0.0.1", packaged="0.0.0.0",
        help="The address the page listens on. 0.0.0.0 makes it reachable from the\n"
             "classroom Wi-Fi; 127.0.0.1 keeps it on the box itself.")
    port: int = setting(
        8080, lo=1, hi=65535, packaged="8080",
        help="Its port. $MOODLE_SYNC_AGENT_BIND, when set, overrides host and port.")
    api_key: str | None = setting(
        None, check=api_key, secret=True,
        help="Key that the local learning apps send as \"Authorization: Bearer KEY\" to\n"
             "POST /api/v1/events. Unset: the events API is closed. At least 128 bits:\n"
             "32 hex digits or 22 base64url characters, e.g. from\n"
             "  python3 -c 'import secrets; print(secrets.token_hex(16))'")
    public_status: bool = setting(
        False,
        help="yes: the status can be read without logging in.")
    stale_days: int = setting(
        7, lo=1, hi=365,
        help="Warn on the page when the last successful sync is older than this.")


@dataclass(frozen=True)
class SmtpConfig:
    """E-mail notifications after each sync (address set on the page)."""

    host: str | None = setting(
        None, example="localhost",
        help="The mail server; unset: no e-mail is sent.")
    port: int = setting(
        25, lo=1, hi=65535,
        help="Its port (587 for mail submission, usually with starttls).")
    starttls: bool = setting(
        False,
        help="yes: switch to TLS before logging in; the server's certificate is verified.")
    username: str | None = setting(
        None,
        help="The login at the mail server; unset: no login.")
    password: str | None = setting(
        None, secret=True,
        help="Its password.")
    sender: str = setting(
        "moodle-sync-agent@localhost",
        help="The From: address of the notices.")
    timeout: float = setting(
        10.0, lo=0.5, hi=120.0,
        help="Seconds to wait for the mail server.")


@dataclass(frozen=True)
class Config:
    path: Path
    moodle: MoodleConfig
    agent: AgentConfig = AgentConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    sync: SyncConfig = SyncConfig()
    web: WebConfig = WebConfig()
    smtp: SmtpConfig = SmtpConfig()
    # None without a [box] url: the learners' events come from the events API only.
    box: BoxConfig | None = None


# -- the table, derived from the declaration --------------------------------


@dataclass(frozen=True)
class Setting:
    section: str
    key: str
    kind: type  # str, int, float, bool or Path (the annotation may add "| None": unset)
    default: Any  # the value when the key is unset; MISSING: none (required, or from factory)
    factory: Callable[[], Any] | None
    meta: SettingMeta

    @property
    def help(self) -> str:
        return self.meta.help

    def default_value(self) -> Any:
        if self.factory is not None:
            return self.factory()
        return None if self.default is MISSING else self.default


def _setting(section: str, f: Field, hint: Any) -> Setting:
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    kinds = [a for a in args if a is not type(None)]
    assert len(kinds) == 1 and kinds[0] in (str, int, float, bool, Path), (section, f.name, hint)
    factory = None if f.default_factory is MISSING else f.default_factory
    return Setting(section=section, key=f.name, kind=kinds[0], default=f.default, factory=factory,
                   meta=f.metadata["setting"])


def _section_class(hint: Any) -> type:
    """The dataclass of a section; an optional section is annotated "X | None"."""
    if isinstance(hint, types.UnionType):
        (cls,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return cls
    return hint


def _sections() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: _section_class(hints[f.name]) for f in fields(Config) if f.name != "path"}


def _optional_sections() -> set[str]:
    hints = typing.get_type_hints(Config)
    return {f.name for f in fields(Config) if isinstance(hints[f.name], types.UnionType)}


# Section name -> its dataclass, in the file's order.
SECTIONS: dict[str, type] = _sections()
# Sections whose absence (no url) turns a feature off: their value is then None.
OPTIONAL_SECTIONS: set[str] = _optional_sections()


def _table() -> tuple[Setting, ...]:
    table = []
    for name, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        table += [_setting(name, f, hints[f.name]) for f in fields(cls) if "setting" in f.metadata]
    return tuple(table)


SETTINGS: tuple[Setting, ...] = _table()


def find(section: str, key: str) -> Setting:
    for s in SETTINGS:
        if (s.section, s.key) == (section, key):
            return s
    raise KeyError(f"[{section}] {key}")


def default(section: str, key: str) -> Any:
    """The value a setting has when the file leaves it unset."""
    return find(section, key).default_value()


# -- reading -----------------------------------------------------------------


def config_path(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_PATH


class _Reader:
    """Typed values from one parsed file; each failure names file and key."""

    def __init__(self, path: Path, parser: configparser.ConfigParser):
        self.path, self.parser = path, parser

    def error(self, section: str, key: str, problem: str) -> ConfigError:
        return ConfigError(self.path, f"[{section}] {key}", problem)

    def refuse_unknown(self) -> None:
        """A misspelt section or key would otherwise be ignored in silence."""
        if self.parser.defaults():
            raise ConfigError(self.path, "[DEFAULT]", "unknown section; the sections are " + ", ".join(SECTIONS))
        for section in self.parser.sections():
            if section not in SECTIONS:
                raise ConfigError(self.path, f"[{section}]",
                                  "unknown section" + _did_you_mean(section, SECTIONS, "[{}]"))
            known = [s.key for s in SETTINGS if s.section == section]
            for key in self.parser.options(section):
                if key not in known:
                    raise self.error(section, key, "unknown key" + _did_you_mean(key, known, "{}"))

    def value(self, s: Setting) -> Any:
        raw = None
        if self.parser.has_option(s.section, s.key):
            raw = self.parser.get(s.section, s.key, raw=True).strip() or None
        if raw is None:
            if s.meta.required:
                raise self.error(s.section, s.key, "missing (required)")
            return s.default_value()
        try:
            value = parse_value(s.kind, raw, s.meta.lo, s.meta.hi)
            return s.meta.check(value) if s.meta.check else value
        except ValueError as exc:
            raise self.error(s.section, s.key, str(exc)) from None

    def section(self, name: str) -> dict[str, Any]:
        return {s.key: self.value(s) for s in SETTINGS if s.section == name}


def _did_you_mean(name: str, known: typing.Iterable[str], form: str) -> str:
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f" (did you mean {form.format(close[0])}?)"
    return "; known: " + ", ".join(form.format(k) for k in known)


def _read_token(r: _Reader, section: str, values: dict[str, Any]) -> str:
    inline, token_file = values["token"], values["token_file"]
    if inline and token_file:
        raise r.error(section, "token", "set either token or token_file, not both")
    if token_file:
        try:
            return read_token_file(token_file)
        except OSError as exc:
            raise r.error(section, "token_file", f"cannot read {token_file}: {exc.strerror}") from None
        except ValueError as exc:
            raise r.error(section, "token_file", str(exc)) from None
    if inline:
        return inline
    raise r.error(section, "token_file", "missing (set token_file, or token)")


def load_config(path: str | os.PathLike | None = None, tokens: bool = True) -> Config:
    """Read and validate the whole file; raise ConfigError on the first problem.
    ``tokens=False`` (moodle-sync-agent connect, which writes them) leaves the
    tokens unread: empty."""
    path = config_path(path)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except FileNotFoundError:
        raise ConfigError(path, "file", "not found") from None
    except PermissionError:
        raise ConfigError(path, "file", "permission denied") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        problem = str(exc).splitlines()[0]
        raise ConfigError(path, "file", f"not a valid INI file: {problem}") from None
    r = _Reader(path, parser)
    r.refuse_unknown()
    values = {name: r.section(name) for name in SECTIONS}
    values["moodle"]["token"] = _read_token(r, "moodle", values["moodle"]) if tokens else ""
    if values["box"]["url"] and tokens:
        values["box"]["token"] = _read_token(r, "box", values["box"])
    sections = {name: cls(**values[name]) for name, cls in SECTIONS.items()
                if name not in OPTIONAL_SECTIONS or values[name]["url"]}
    return Config(path=path, **sections)
