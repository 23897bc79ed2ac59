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
from ..config import Config
from ..kinds import found_counters, push_counters
from .db import Activity, Event, SyncRun, TwoWayConflict, iso, utcnow
from .queue import count_by_status

log = logging.getLogger(__name__)

SUCCESS = (SyncRun.COMPLETED,)
VERIFY = "verify"  # the trigger of a full re-check (agent/verify.py)
COLLECT = "collect"  # the trigger of a collection from the box's Moodle (agent/box/collect.py)

# What a run's ``actions`` count: a sync's server actions, a verify's checks.
ACTION_KINDS = push_counters()  # each kind's (agent/kinds.py), then the course check's
VERIFY_KINDS = ["checked", "matching", "requeued", "not_checked"]
# A collection's: the events it queued, and how many learners' completion states it read.
COLLECT_KINDS = found_counters() + ["learners_read"]

# The page's Last Syncs, its status and the e-mail notices are about syncs
# (and verifies): the collections every few minutes stay out of them.
IS_SYNC = SyncRun.trigger != COLLECT


def events_done(row: SyncRun) -> int:
    """How far the run's progress bar is: events settled (sent or made a
    conflict) by a sync, events checked by a verify."""
    if row.trigger == VERIFY:
        actions = row.actions or {}
        return int(actions.get("checked", 0)) + int(actions.get("not_checked", 0))
    return row.events_sent + row.conflicts


def two_way_conflicts(sync_id: str) -> list[dict[str, Any]]:
    """The conflicts log of one sync: what changed on both sides, both values and the one kept."""
    rows = TwoWayConflict.select().where(TwoWayConflict.sync_id == sync_id).order_by(TwoWayConflict.id)
    logged = list(rows)
    names = {a.cmid: a.name for a in Activity.select(Activity.cmid, Activity.name)
             .where(Activity.cmid.in_([c.cmid for c in logged]))} if logged else {}
    return [{"username": c.username, "course_id": c.course_id, "cmid": c.cmid, "activity": names.get(c.cmid),
             "kind": c.kind, "box_value": c.box_value, "server_value": c.server_value, "kept": c.kept,
             "rule": c.rule, "at": c.at} for c in logged]


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
        "collected": row.collected,
        "direction": row.direction,
        "box_bytes": row.box_bytes,
        "two_way_conflicts": two_way_conflicts(row.id) if row.direction in ("down", "both") else [],
        "progress": {
            "phase": row.phase,
            "courses_done": row.courses_done,
            "courses_total": row.courses_total,
            "events_done": events_done(row),
            "events_total": row.events_total,
        },
    }


def recent(limit: int = 5, collections: bool = False) -> list[dict[str, Any]]:
    """The latest runs: syncs and verifies, and with ``collections`` the
    collections from the box's Moodle too (the command line's history)."""
    query = SyncRun.select() if collections else SyncRun.select().where(IS_SYNC)
    rows = query.order_by(SyncRun.started_at.desc(), pw.SQL("rowid DESC")).limit(limit)
    return [run_dict(r) for r in rows]


def last_successful() -> SyncRun | None:
    return (SyncRun.select().where(SyncRun.status.in_(SUCCESS), IS_SYNC)
            .order_by(SyncRun.started_at.desc()).first())


def last_collection() -> SyncRun | None:
    return (SyncRun.select().where(SyncRun.trigger == COLLECT, SyncRun.status != SyncRun.RUNNING)
            .order_by(SyncRun.started_at.desc(), pw.SQL("rowid DESC")).first())


def running_run(syncs_only: bool = False) -> SyncRun | None:
    """The run going on now: a row marked running whose process still exists.
    (Probing the lock instead would race with a run starting at that moment.)
    ``syncs_only``: a collection going on does not count (the page's view)."""
    query = SyncRun.select().where(SyncRun.status == SyncRun.RUNNING)
    if syncs_only:
        query = query.where(IS_SYNC)
    row = query.order_by(SyncRun.started_at.desc()).first()
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
    """A sync (or a verify) is going on; a collection does not count."""
    return running_run(syncs_only=True) is not None


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
    last = SyncRun.select().where(IS_SYNC).order_by(SyncRun.started_at.desc(), pw.SQL("rowid DESC")).first()
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
        "collect_minutes": config.box.collect_minutes,
        "last_collection": None if last is None else {
            "id": last.id, "status": last.status, "started_at": last.started_at,
            "completed_at": last.completed_at, "full": bool(last.force), "actions": last.actions or {},
            "errors": last.errors or []},
    }
