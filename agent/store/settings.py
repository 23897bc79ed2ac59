"""Values kept in the database's Setting table, each declared once in KEYS.

Three kinds: the page's preferences (the INI file gives a fresh box some of
their defaults; once a teacher changes one on the page, the database holds
it, and both the page and the daemon read it from there), runtime state that
the agent records for the page, and the admin password's hash. A key not in
KEYS is refused, and so is a value of the wrong type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

from ..config import Config
from .db import Setting, database

Kind = Literal["preference", "state", "password"]


@dataclass(frozen=True)
class Key:
    name: str
    kind: Kind
    type: type  # what put accepts (a JSON type); None too, where the default is None
    default: Any = None
    # A default the INI file gives (a fresh box's schedule), instead of default.
    from_config: Callable[[Config], Any] | None = None

    @property
    def optional(self) -> bool:
        return self.default is None and self.from_config is None

    def default_for(self, config: Config) -> Any:
        return self.default if self.from_config is None else self.from_config(config)

    def check(self, value: Any) -> None:
        if value is None and self.optional:
            return
        # bool is an int in Python: a flag must be a real bool, and nothing else one.
        if not isinstance(value, self.type) or (self.type is not bool and isinstance(value, bool)):
            raise TypeError(f"setting {self.name!r} must be {self.type.__name__}"
                            f"{' or None' if self.optional else ''}, got {type(value).__name__}")


KEYS: dict[str, Key] = {key.name: key for key in (
    # The page's preferences.
    Key("sync_enabled", "preference", bool, True),
    Key("schedule_enabled", "preference", bool, from_config=lambda config: config.schedule.enabled),
    Key("schedule_time_utc", "preference", str, from_config=lambda config: config.schedule.time_utc),
    # up, down or both (config.DIRECTIONS); a change applies from the next run on.
    Key("sync_direction", "preference", str, from_config=lambda config: config.sync.direction),
    Key("notify_enabled", "preference", bool, False),
    Key("notify_email", "preference", str),
    Key("force_next", "preference", bool, False),
    # Runtime state. The last online check's answer:
    Key("token_rejected", "state", bool, False),
    Key("site_name", "state", str),
    Key("site_url", "state", str),
    Key("moodle_release", "state", str),
    # Optional functions (agent/rights.py) the server refused the account for
    # lack of the capability, as the last sync found: check and the page say
    # their feature is off until a call succeeds again.
    Key("rights_refused", "state", list),
    # What check, connect or the page's connect last judged of each side's
    # token (agent/rights.py's Judgement, with the site's name): the page shows it.
    Key("server_rights", "state", dict),
    Key("box_rights", "state", dict),
    # The box's own Moodle ([box]), as the last collection found it: its site
    # name and whether it answered (the collection itself is in the history).
    Key("box_site_name", "state", str),
    Key("box_reachable", "state", bool),
    # Since when it has not answered (ISO; None while it answers): the page's banner.
    Key("box_down_since", "state", str),
    # The daemon's: the latest scheduled slot that needs nothing more (ISO).
    Key("schedule_last_slot", "state", str),
    # The daemon's process, [pid, start time]: the page shows its memory.
    Key("agent_process", "state", list),
    # The page's admin password (webui.auth's hash), never shown, and the
    # generation of its sessions: a logout raises it, ending every session.
    Key("password_hash", "password", str),
    Key("session_generation", "password", int, 0),
)}


def _key(name: str) -> Key:
    try:
        return KEYS[name]
    except KeyError:
        raise KeyError(f"unknown setting {name!r}") from None


# Plain SQL: the page reads settings on every request, and building the
# query with peewee cost more than SQLite took to answer it.
_ONE = f'SELECT value FROM "{Setting._meta.table_name}" WHERE key = ?'
_SOME = f'SELECT key, value FROM "{Setting._meta.table_name}" WHERE key IN ({{}})'


def get(config: Config, name: str) -> Any:
    key = _key(name)
    row = database.obj.execute_sql(_ONE, (name,)).fetchone()
    return key.default_for(config) if row is None else Setting.value.python_value(row[0])


def _get_kind(config: Config, kind: Kind) -> dict[str, Any]:
    names = [key.name for key in KEYS.values() if key.kind == kind]
    rows = database.obj.execute_sql(_SOME.format(", ".join("?" * len(names))), names).fetchall()
    stored = {name: Setting.value.python_value(value) for name, value in rows}
    return {name: stored[name] if name in stored else KEYS[name].default_for(config) for name in names}


def preferences(config: Config) -> dict[str, Any]:
    """Every preference of the page, in one query."""
    return _get_kind(config, "preference")


def state(config: Config) -> dict[str, Any]:
    """Every runtime state value, in one query."""
    return _get_kind(config, "state")


def put(**values: Any) -> None:
    """Store values in one transaction; nothing is stored if one is refused.
    None (where the default is None) deletes the row: the column is NOT NULL."""
    for name, value in values.items():
        _key(name).check(value)
    with database.obj.atomic():
        for name, value in values.items():
            if value is None:
                Setting.delete().where(Setting.key == name).execute()
            else:
                Setting.insert(key=name, value=value).on_conflict_replace().execute()
