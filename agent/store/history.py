"""The history of runs: what each run recorded and the run going on now, as
plain dicts for the CLI, the page, the JSON API and the e-mail notice. Stored
state only: nothing here talks to a server, and no secret ever goes in here.
The kinds of run are in agent/store/runkinds.py, the box's status in
agent/store/status.py."""

from __future__ import annotations

import logging
import os
from typing import Any

import peewee as pw

from .. import reasons
from .db import Activity, Run, TwoWayConflict, iso, utcnow
from .runkinds import COLLECT, SYNC, VERIFY

log = logging.getLogger(__name__)

# A sync with warnings did its work: the "last successful sync" counts it.
SUCCESS = (Run.COMPLETED, Run.COMPLETED_WITH_WARNINGS)

# The page's Last Syncs, its status and the e-mail notices are about syncs
# (and verifies): the collections every few minutes stay out of them.
IS_SYNC = Run.kind != COLLECT


def events_done(row: Run) -> int:
    """How far the run's progress bar is: events settled (sent or made a
    conflict) by a sync, events checked by a verify."""
    if row.kind == VERIFY:
        actions = row.actions or {}
        return int(actions.get("checked", 0)) + int(actions.get("not_checked", 0))
    return row.events_sent + row.conflicts


def two_way_conflicts(sync_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The conflicts log of some syncs (one query for all: the page lists five runs):
    per sync, what changed on both sides, both values and the one kept."""
    logged = list(TwoWayConflict.select().where(TwoWayConflict.sync_id.in_(sync_ids)).order_by(TwoWayConflict.id)) \
        if sync_ids else []
    names = {a.cmid: a.name for a in Activity.select(Activity.cmid, Activity.name)
             .where(Activity.cmid.in_({c.cmid for c in logged}))} if logged else {}
    found: dict[str, list[dict[str, Any]]] = {sync_id: [] for sync_id in sync_ids}
    for c in logged:
        found[c.sync_id].append({
            "username": c.username, "course_id": c.course_id, "cmid": c.cmid, "activity": names.get(c.cmid),
            "kind": c.kind, "box_value": c.box_value, "server_value": c.server_value, "kept": c.kept,
            "rule": c.rule, "at": c.at, "box_text": c.box_text, "server_text": c.server_text})
    return found


def went_down(row: Run) -> bool:
    return row.direction in ("down", "both")


def run_dict(row: Run, conflicts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``conflicts``: its conflicts log, when the caller read it for several runs at once."""
    if conflicts is None and went_down(row):
        conflicts = two_way_conflicts([row.id])[row.id]
    return {
        "id": row.id,
        "kind": row.kind,
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
        # Why it failed or what to look at, as codes with values (agent/reasons.py).
        "reasons": reasons.of_run(row),
        "clock_offset_s": row.clock_offset_s,
        "collected": row.collected,
        "direction": row.direction,
        "box_bytes": row.box_bytes,
        "moved_down": row.moved_down or [],
        "two_way_conflicts": conflicts or [],
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
    query = Run.select() if collections else Run.select().where(IS_SYNC)
    rows = list(query.order_by(Run.started_at.desc(), pw.SQL("rowid DESC")).limit(limit))
    conflicts = two_way_conflicts([r.id for r in rows if went_down(r)])
    return [run_dict(r, conflicts.get(r.id, [])) for r in rows]


def last_successful() -> Run | None:
    """One walk down the (status, started_at) index per successful status:
    an IN over both would sort every successful run of the history."""
    found = [Run.select().where(Run.status == status, IS_SYNC).order_by(Run.started_at.desc()).first()
             for status in SUCCESS]
    return max((r for r in found if r is not None), key=lambda r: r.started_at, default=None)


def last_collection() -> Run | None:
    return (Run.select().where(Run.kind == COLLECT, Run.status != Run.RUNNING)
            .order_by(Run.started_at.desc(), pw.SQL("rowid DESC")).first())


def running_run(syncs_only: bool = False) -> Run | None:
    """The run going on now: a row marked running whose process still exists.
    (Probing the lock instead would race with a run starting at that moment.)
    ``syncs_only``: a collection going on does not count (the page's view)."""
    query = Run.select().where(Run.status == Run.RUNNING)
    if syncs_only:
        query = query.where(IS_SYNC)
    row = query.order_by(Run.started_at.desc()).first()
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
    query = Run.select().where(Run.status == Run.RUNNING)
    for stale in query.where(Run.id == run_id) if run_id else query:
        stale.status = Run.INTERRUPTED
        stale.completed_at = stale.completed_at or now
        stale.errors = (stale.errors or []) + ["the run was cut off (the agent stopped or lost power)"]
        stale.phase = "done"
        stale.save()


def record_skipped(trigger: str, reason: str, bytes_sent: int = 0, bytes_received: int = 0,
                   clock_offset_s: float | None = None) -> Run:
    """The one history row for a scheduled sync that did not happen because
    the server could not be reached, with what its checks cost: the checks
    themselves record nothing."""
    now = iso(utcnow())
    row = Run.create(kind=SYNC, trigger=trigger, status=Run.SKIPPED_OFFLINE, started_at=now, completed_at=now,
                         duration_s=0.0, phase="done", errors=[reason], bytes_sent=bytes_sent,
                         bytes_received=bytes_received, clock_offset_s=clock_offset_s)
    log.info("sync %s recorded: %s (%s)", row.id, row.status, reason)
    return row
