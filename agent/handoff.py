"""Sync requests: how the page (or ``sync --via-agent``) asks the daemon to sync.

The page never runs a sync inside a gunicorn worker: it writes a request row,
and the one daemon process picks it up, runs it, and records which run served
it. A worker restart or a second worker can neither start nor lose a run.
"""

from __future__ import annotations

import threading

from . import settings
from .config import Config
from .db import SyncRequest, SyncRun, database, iso, utcnow
from .sync import AlreadyRunning, SyncDisabled, run_sync


def request_sync(config: Config, trigger: str = "manual", force: bool = False) -> SyncRequest:
    """Queue a request; one already waiting absorbs the new one (force is kept)."""
    # IMMEDIATE: this reads, then writes; a deferred transaction whose snapshot
    # a concurrent writer (the daemon) made stale fails at once with "database
    # is locked" instead of waiting.
    with database.obj.atomic("IMMEDIATE"):
        waiting = SyncRequest.select().where(SyncRequest.picked_at.is_null()).order_by(SyncRequest.id).first()
        if waiting is not None:
            if force and not waiting.force:
                waiting.force = True
                waiting.save()
            return waiting
        return SyncRequest.create(requested_at=iso(utcnow()), trigger=trigger, force=force)


def next_request() -> SyncRequest | None:
    return SyncRequest.select().where(SyncRequest.picked_at.is_null()).order_by(SyncRequest.id).first()


def attach(request: SyncRequest, run_id: str) -> None:
    """Let a run already going on serve the request: runs never overlap."""
    request.picked_at = iso(utcnow())
    request.sync_id = run_id
    request.save()


def serve_request(config: Config, request: SyncRequest, stop: threading.Event | None = None) -> SyncRun | None:
    """Run the sync a request asked for. A one-shot Force Sync set on the page
    applies to this run and is then cleared."""
    force = request.force or bool(settings.get(config, "force_next"))

    def started(row: SyncRun) -> None:
        request.sync_id = row.id
        request.save()

    request.picked_at = iso(utcnow())
    request.save()
    try:
        row = run_sync(config, trigger=request.trigger, force=force, stop=stop, on_started=started)
    except (AlreadyRunning, SyncDisabled) as exc:
        request.sync_id = None
        request.save()
        raise exc
    if force:
        settings.put(force_next=False)
    return row
