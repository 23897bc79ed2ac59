"""Configuration: one INI file, read in one place, passed down as dataclasses.

Lookup order: ``--config PATH``, then ``$MOODLE_SYNC_AGENT_CONFIG``, then
``/etc/moodle-sync-agent/agent.ini``. Every bad or missing value raises
:class:`ConfigError` naming the file, the key and the problem.
"""

from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_PATH = Path("/etc/moodle-sync-agent/agent.ini")
ENV_VAR = "MOODLE_SYNC_AGENT_CONFIG"
DEFAULT_DATABASE = "/var/lib/moodle-sync-agent/agent.db"


class ConfigError(Exception):
    """A bad or missing configuration value; str() is the one line to print."""

    def __init__(self, path: Path | str, key: str, problem: str):
        self.path, self.key, self.problem = str(path), key, problem
        super().__init__(f"{path}: {key}: {problem}")


@dataclass(frozen=True)
class MoodleConfig:
    url: str
    token: str = field(repr=False)  # never printed: repr hides it
    timeout: float = 30.0
    ca_bundle: str | None = None
    # Fixed prefix of the REST endpoint; a real Moodle always uses this path.
    endpoint: str = "/webservice/rest/server.php"

    @property
    def rest_url(self) -> str:
        return self.url.rstrip("/") + self.endpoint


@dataclass(frozen=True)
class AgentConfig:
    database: Path = Path(DEFAULT_DATABASE)
    batch_size: int = 100
    box_name: str = "classroom-box"
    retention_days: int = 30
    min_free_mb: int = 200
    min_free_percent: float = 5.0

    @property
    def data_dir(self) -> Path:
        return self.database.parent


@dataclass(frozen=True)
class ScheduleConfig:
    enabled: bool = True
    time_utc: str = "02:00"
    jitter_minutes: float = 10.0
    catch_up_hours: float = 6.0


@dataclass(frozen=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = field(default=None, repr=False)
    public_status: bool = False
    stale_days: int = 7


@dataclass(frozen=True)
class SmtpConfig:
    host: str | None = None
    port: int = 25
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sender: str = "moodle-sync-agent@localhost"
    timeout: float = 10.0


@dataclass(frozen=True)
class Config:
    path: Path
    moodle: MoodleConfig
    agent: AgentConfig = AgentConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    web: WebConfig = WebConfig()
    smtp: SmtpConfig = SmtpConfig()


def config_path(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_PATH


class _Reader:
    """Typed getters over one parsed file; each failure names file and key."""

    def __init__(self, path: Path, parser: configparser.ConfigParser):
        self.path, self.parser = path, parser

    def error(self, section: str, key: str, problem: str) -> ConfigError:
        return ConfigError(self.path, f"[{section}] {key}", problem)

    def raw(self, section: str, key: str) -> str | None:
        if not self.parser.has_option(section, key):
            return None
        value = self.parser.get(section, key, raw=True).strip()
        return value or None

    def str(self, section: str, key: str, default: str | None = None, required: bool = False) -> str | None:
        value = self.raw(section, key)
        if value is None and required:
            raise self.error(section, key, "missing (required)")
        return default if value is None else value

    def int(self, section: str, key: str, default: int, lo: int, hi: int) -> int:
        value = self.raw(section, key)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise self.error(section, key, f"must be a whole number, got {value!r}") from None
        if not lo <= number <= hi:
            raise self.error(section, key, f"must be between {lo} and {hi}, got {number}")
        return number

    def float(self, section: str, key: str, default: float, lo: float, hi: float) -> float:
        value = self.raw(section, key)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise self.error(section, key, f"must be a number, got {value!r}") from None
        if not lo <= number <= hi:
            raise self.error(section, key, f"must be between {lo:g} and {hi:g}, got {number:g}")
        return number

    def bool(self, section: str, key: str, default: bool) -> bool:
        value = self.raw(section, key)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "yes", "true", "on"):
            return True
        if lowered in ("0", "no", "false", "off"):
            return False
        raise self.error(section, key, f"must be yes or no, got {value!r}")


TIME_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def parse_time_utc(value: str) -> str:
    """Validate HH:MM (24 h, UTC); raise ValueError with the problem."""
    if not TIME_RE.match(value or ""):
        raise ValueError(f"must be a time as HH:MM (00:00 to 23:59), got {value!r}")
    return value


def _read_token(r: _Reader) -> str:
    inline = r.raw("moodle", "token")
    token_file = r.raw("moodle", "token_file")
    if inline and token_file:
        raise r.error("moodle", "token", "set either token or token_file, not both")
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise r.error("moodle", "token_file", f"cannot read {token_file}: {exc.strerror}") from None
        if not token:
            raise r.error("moodle", "token_file", f"{token_file} is empty")
        return token
    if inline:
        return inline
    raise r.error("moodle", "token_file", "missing (set token_file, or token)")


def _moodle(r: _Reader) -> MoodleConfig:
    url = r.str("moodle", "url", required=True)
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise r.error("moodle", "url", f"must be an http:// or https:// address, got {url!r}")
    if parsed.query or parsed.fragment:
        raise r.error("moodle", "url", "must be the site's base address, without ? or #")
    ca_bundle = r.str("moodle", "ca_bundle")
    if ca_bundle and not Path(ca_bundle).is_file():
        raise r.error("moodle", "ca_bundle", f"no such file: {ca_bundle}")
    return MoodleConfig(
        url=url.rstrip("/"),
        token=_read_token(r),
        timeout=r.float("moodle", "timeout", 30.0, 0.1, 600.0),
        ca_bundle=ca_bundle,
    )


def _agent(r: _Reader) -> AgentConfig:
    database = r.str("agent", "database", DEFAULT_DATABASE)
    return AgentConfig(
        database=Path(database),
        batch_size=r.int("agent", "batch_size", 100, 1, 1000),
        box_name=r.str("agent", "box_name", os.uname().nodename),
        retention_days=r.int("agent", "retention_days", 30, 1, 3650),
        min_free_mb=r.int("agent", "min_free_mb", 200, 0, 1_000_000),
        min_free_percent=r.float("agent", "min_free_percent", 5.0, 0.0, 90.0),
    )


def _schedule(r: _Reader) -> ScheduleConfig:
    time_utc = r.str("schedule", "time_utc", "02:00")
    try:
        parse_time_utc(time_utc)
    except ValueError as exc:
        raise r.error("schedule", "time_utc", str(exc)) from None
    return ScheduleConfig(
        enabled=r.bool("schedule", "enabled", True),
        time_utc=time_utc,
        jitter_minutes=r.float("schedule", "jitter_minutes", 10.0, 0.0, 720.0),
        catch_up_hours=r.float("schedule", "catch_up_hours", 6.0, 0.0, 23.0),
    )


def _web(r: _Reader) -> WebConfig:
    return WebConfig(
        host=r.str("web", "host", "127.0.0.1"),
        port=r.int("web", "port", 8080, 1, 65535),
        api_key=r.str("web", "api_key"),
        public_status=r.bool("web", "public_status", False),
        stale_days=r.int("web", "stale_days", 7, 1, 365),
    )


def _smtp(r: _Reader) -> SmtpConfig:
    return SmtpConfig(
        host=r.str("smtp", "host"),
        port=r.int("smtp", "port", 25, 1, 65535),
        starttls=r.bool("smtp", "starttls", False),
        username=r.str("smtp", "username"),
        password=r.str("smtp", "password"),
        sender=r.str("smtp", "sender", "moodle-sync-agent@localhost"),
        timeout=r.float("smtp", "timeout", 10.0, 0.5, 120.0),
    )


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Read and validate the whole file; raise ConfigError on the first problem."""
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
    return Config(
        path=path,
        moodle=_moodle(r),
        agent=_agent(r),
        schedule=_schedule(r),
        web=_web(r),
        smtp=_smtp(r),
    )
