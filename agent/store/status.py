"""The box's status at a glance, for the page, the JSON API and ``status``:
the queue's counts, the last sync, the server and the box's own Moodle, the
settings that steer the runs. Stored state only: no server is asked."""

from __future__ import annotations

from typing import Any

import peewee as pw

from . import settings
from ..config import Config
from .db import Event, Setting, Run, database, iso, utcnow
from .history import IS_SYNC, is_running, last_collection, last_successful, run_dict
from .queue import count_by_status


def status(config: Config, values: dict[str, Any] | None = None,
           recent: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``values``: the settings (preferences and state), ``recent``: history.recent()'s
    syncs (not with collections), when the caller (the page) read them already: not
    read a second time."""
    counts = count_by_status()
    if values is None:
        values = settings.preferences(config) | settings.state(config)
    if recent is None:
        last = Run.select().where(IS_SYNC).order_by(Run.started_at.desc(), pw.SQL("rowid DESC")).first()
        last_sync = run_dict(last) if last else None
    else:  # the same order as this query: its first is the last sync
        last_sync = recent[0] if recent else None
    ok = last_successful()
    oldest = (Event.select(Event.queued_at).where(Event.status == Event.QUEUED)
              .order_by(Event.id).first())
    return {
        "queued": counts[Event.QUEUED],
        "conflicts": counts[Event.CONFLICT],
        "sent": counts[Event.SENT],
        "oldest_queued_at": oldest.queued_at if oldest else None,
        "running": is_running(),
        "last_sync": last_sync,
        "last_success_at": ok.completed_at if ok else None,
        "server": {
            "url": config.moodle.url,
            "site_name": values["site_name"],
            "site_url": values["site_url"],
            "release": values["moodle_release"],
            "token_rejected": bool(values["token_rejected"]),
        },
        "sync_enabled": bool(values["sync_enabled"]),
        "schedule": {"enabled": bool(values["schedule_enabled"]), "time_utc": values["schedule_time_utc"]},
        "box_name": config.agent.box_name,
        "box_moodle": box_moodle(config, values),
    }


def box_moodle(config: Config, values: dict[str, Any]) -> dict[str, Any] | None:
    """The box's own Moodle ([box]) as the last collection found it; None without one."""
    if config.box is None:
        return None
    last = last_collection()
    return {
        "url": config.box.url,
        "site_name": values["box_site_name"],
        "reachable": values["box_reachable"],  # None: never tried
        "down_since": values["box_down_since"],  # when it stopped answering; None while it answers
        "collect_minutes": config.box.collect_minutes,
        "last_collection": None if last is None else {
            "id": last.id, "status": last.status, "started_at": last.started_at,
            "completed_at": last.completed_at, "full": bool(last.force), "actions": last.actions or {},
            "errors": last.errors or []},
    }


def box_answered(reachable: bool, **more: Any) -> None:
    """Whether the box's Moodle answered, and since when it has not (kept from its first silence)."""
    with database.obj.atomic():
        if reachable:
            settings.put(box_reachable=True, box_down_since=None, **more)
        elif Setting.get_or_none(Setting.key == "box_down_since") is None:
            settings.put(box_reachable=False, box_down_since=iso(utcnow()), **more)
        else:
            settings.put(box_reachable=False, **more)
