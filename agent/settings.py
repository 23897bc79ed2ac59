"""Settings the page changes at run time, kept in the database.

The INI file gives a fresh box its defaults; once a teacher changes a value
on the page, the database holds it and both the page and the daemon read it
from there.
"""

from __future__ import annotations

from typing import Any

from .config import Config
from .db import Setting, database


def defaults(config: Config) -> dict[str, Any]:
    return {
        "sync_enabled": True,
        "schedule_enabled": config.schedule.enabled,
        "schedule_time_utc": config.schedule.time_utc,
        "notify_enabled": False,
        "notify_email": None,
        "force_next": False,
        "token_rejected": False,
        "site_name": None,
        "site_url": None,
        "moodle_release": None,
        "password_hash": None,
        # The daemon's: the latest scheduled slot that needs nothing more (ISO).
        "schedule_last_slot": None,
        # The daemon's process, [pid, start time]: the page shows its memory.
        "agent_process": None,
    }


def get_all(config: Config) -> dict[str, Any]:
    values = defaults(config)
    for row in Setting.select():
        values[row.key] = row.value
    return values


def get(config: Config, key: str) -> Any:
    row = Setting.get_or_none(Setting.key == key)
    return defaults(config).get(key) if row is None else row.value


def put(**values: Any) -> None:
    with database.obj.atomic():
        for key, value in values.items():
            Setting.insert(key=key, value=value).on_conflict_replace().execute()
