"""The history of runs: what each run recorded, the run going on now, and
the box's status, as plain dicts for the CLI, the page, the JSON API and the
e-mail notice. Stored state only: nothing here talks to a server, and no
secret ever goes in here."""

from __future__ import annotations

import logging
import os
from typing import Any

import peewee as pw

from . import settings
from .config import Config
from .db import Event, SyncRun, iso, utcnow
from .queue import count_by_status

log = logging.getLogger(__name__)

SUCCESS = (SyncRun.COMPLETED,)
VERIFY = "verify"  # the trigger of a full re-check (agent/verify.py)

# What a run's ``actions`` count: a sync's server actions, a verify's checks.
ACTION_KINDS = ["users_created", "users_updated", "enrolments", "completions", "grades", "courses_refreshed"]
VERIFY_KINDS = ["checked", "matching", "requeued", "not_checked"]


def events_done(row: SyncRun) -> int:
    """How far the run's progress bar is: events settled (sent or made a
    conflict) by a sync, events checked by a verify."""
    if row.trigger == VERIFY:
        actions = row.actions or {}
        return int(actions.get("checked", 0)) + int(actions.get("not_checked", 0))
    return row.events_sent + row.conflicts


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
        "events_sent": row.events_sent,
        "conflicts": row.conflicts,
        "errors": row.errors or [],
        "clock_offset_s": row.clock_offset_s,
        "progress": {
            "phase": row.phase,
            "courses_done": row.courses_done,
            "courses_total": row.courses_total,
            "events_done": events_done(row),
            "events_total": row.events_total,
        },
    }


def recent(limit: int = 5) -> list[dict[str, Any]]:
    rows = SyncRun.select().order_by(SyncRun.started_at.desc(), pw.SQL("rowid DESC")).limit(limit)
    return [run_dict(r) for r in rows]


def last_successful() -> SyncRun | None:
    return (SyncRun.select().where(SyncRun.status.in_(SUCCESS))
            .order_by(SyncRun.started_at.desc()).first())


def running_run() -> SyncRun | None:
    """The run going on now: a row marked running whose process still exists.
    (Probing the lock instead would race with a run starting at that moment.)"""
    row = SyncRun.select().where(SyncRun.status == SyncRun.RUNNING).order_by(SyncRun.started_at.desc()).first()
    if row is None or not row.pid:
        return None
    try:
        os.kill(row.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, under another user
        pass
    return row


def is_running() -> bool:
    return running_run() is not None


def recover_stale_runs(run_id: str | None = None) -> None:
    """A run still marked running while nobody holds the lock died with its
    process. With ``run_id``: the agent is leaving before that run could end itself."""
    now = iso(utcnow())
    query = SyncRun.select().where(SyncRun.status == SyncRun.RUNNING)
    for stale in query.where(SyncRun.id == run_id) if run_id else query:
        stale.status = SyncRun.INTERRUPTED
        stale.completed_at = stale.completed_at or now
        stale.errors = (stale.errors or []) + ["the run was cut off (the agent stopped or lost power)"]
        stale.phase = "done"
        stale.save()


def record_skipped(trigger: str, reason: str, bytes_sent: int = 0, bytes_received: int = 0,
                   clock_offset_s: float | None = None) -> SyncRun:
    """The one history row for a scheduled sync that did not happen because
    the server could not be reached, with what its checks cost: the checks
    themselves record nothing."""
    now = iso(utcnow())
    row = SyncRun.create(trigger=trigger, status=SyncRun.SKIPPED_OFFLINE, started_at=now, completed_at=now,
                         duration_s=0.0, phase="done", errors=[reason], bytes_sent=bytes_sent,
                         bytes_received=bytes_received, clock_offset_s=clock_offset_s)
    log.info("sync %s recorded: %s (%s)", row.id, row.status, reason)
    return row


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
        "running": is_running(),
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
