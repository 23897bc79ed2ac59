"""Sync history and the box's status, as plain dicts for the CLI, the page,
the JSON API and the e-mail notice. No secret ever goes in here."""

from __future__ import annotations

from typing import Any

from . import settings
from .config import Config
import peewee as pw

from .db import Event, SyncRun
from .queue import count_by_status
from .sync import is_running

SUCCESS = (SyncRun.COMPLETED,)


def run_dict(row: SyncRun) -> dict[str, Any]:
    return {
        "id": row.id,
        "trigger": row.trigger,
        "force": bool(row.force),
        "status": row.status,
        "started_at": row.started_at,
        "completed_at": row.completed_at,
        "duration_s": row.duration_s,
        "bytes_sent": row.bytes_sent,
        "bytes_received": row.bytes_received,
        "courses": row.courses or [],
        "actions": row.actions or {},
        "errors": row.errors or [],
        "clock_offset_s": row.clock_offset_s,
        "progress": {
            "phase": row.phase,
            "courses_done": row.courses_done,
            "courses_total": row.courses_total,
            "events_sent": row.events_sent,
            "events_total": row.events_total,
        },
    }


def recent(limit: int = 5) -> list[dict[str, Any]]:
    rows = SyncRun.select().order_by(SyncRun.started_at.desc(), pw.SQL("rowid DESC")).limit(limit)
    return [run_dict(r) for r in rows]


def get_run(run_id: str) -> dict[str, Any] | None:
    row = SyncRun.get_or_none(SyncRun.id == run_id)
    return run_dict(row) if row else None


def last_successful() -> SyncRun | None:
    return (SyncRun.select().where(SyncRun.status.in_(SUCCESS))
            .order_by(SyncRun.started_at.desc()).first())


def status(config: Config) -> dict[str, Any]:
    counts = count_by_status()
    values = settings.preferences(config) | settings.state(config)
    last = SyncRun.select().order_by(SyncRun.started_at.desc(), pw.SQL("rowid DESC")).first()
    ok = last_successful()
    oldest = (Event.select(Event.queued_at).where(Event.status == Event.QUEUED)
              .order_by(Event.id).first())
    return {
        "queued": counts[Event.QUEUED],
        "conflicts": counts[Event.CONFLICT],
        "sent": counts[Event.SENT],
        "oldest_queued_at": oldest.queued_at if oldest else None,
        "running": is_running(config),
        "last_sync": run_dict(last) if last else None,
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
    }
