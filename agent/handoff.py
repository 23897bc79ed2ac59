"""Sync requests: how the page (or ``sync --via-agent``) asks the daemon to sync.

The page never runs a sync inside a gunicorn worker: it writes a request row,
and the one daemon process picks it up, runs it, and records which run served
it. A worker restart or a second worker can neither start nor lose a run.
"""

from __future__ import annotations

import threading
from typing import Callable

from . import settings
from .config import Config
from .db import SyncRequest, SyncRun, database, iso, utcnow
from .sync import AlreadyRunning, SyncDisabled, run_sync
from .verify import TRIGGER as VERIFY
from .verify import run_verify


def request_sync(config: Config, trigger: str = "manual", force: bool = False) -> SyncRequest:
    """Queue a request; one of the same kind already waiting absorbs the new one
    (force is kept). Trigger "verify" asks for a full re-check instead of a sync."""
    same_kind = SyncRequest.trigger == VERIFY if trigger == VERIFY else SyncRequest.trigger != VERIFY
    # IMMEDIATE: this reads, then writes; a deferred transaction whose snapshot
    # a concurrent writer (the daemon) made stale fails at once with "database
    # is locked" instead of waiting.
    with database.obj.atomic("IMMEDIATE"):
        waiting = (SyncRequest.select().where(SyncRequest.picked_at.is_null(), same_kind)
                   .order_by(SyncRequest.id).first())
        if waiting is not None:
            if force and not waiting.force:
                waiting.force = True
                waiting.save()
            return waiting
        return SyncRequest.create(requested_at=iso(utcnow()), trigger=trigger, force=force)


def next_request() -> SyncRequest | None:
    return SyncRequest.select().where(SyncRequest.picked_at.is_null()).order_by(SyncRequest.id).first()


def pick(request: SyncRequest) -> None:
    """The daemon has taken the request (its worker then serves it)."""
    request.picked_at = iso(utcnow())
    request.save()


def attach(request: SyncRequest, run_id: str) -> bool:
    """Let a run already going on serve the request: runs never overlap.
    A run of the other kind (a sync for a verify, or the reverse) cannot:
    the request waits for its own turn. Returns whether it was attached."""
    run = SyncRun.get_or_none(SyncRun.id == run_id)
    if run is not None and (run.trigger == VERIFY) != (request.trigger == VERIFY):
        if request.picked_at is not None:  # back to waiting; no write (an fsync) when it already is
            request.picked_at = request.sync_id = None
            request.save()
        return False
    request.picked_at = iso(utcnow())
    request.sync_id = run_id
    request.save()
    return True


def serve_request(config: Config, request: SyncRequest, stop: threading.Event | None = None,
                  on_started: Callable[[SyncRun], None] | None = None) -> SyncRun | None:
    """Run the sync (or verify) a request asked for. A one-shot Force Sync set on
    the page applies to the next sync and is then cleared."""
    verify = request.trigger == VERIFY
    force = not verify and (request.force or bool(settings.get(config, "force_next")))

    def started(row: SyncRun) -> None:
        request.sync_id = row.id
        request.save()
        if on_started:
            on_started(row)

    if request.picked_at is None:
        pick(request)
    try:
        if verify:
            row = run_verify(config, stop=stop, on_started=started)
        else:
            row = run_sync(config, trigger=request.trigger, force=force, stop=stop, on_started=started)
    except (AlreadyRunning, SyncDisabled) as exc:
        request.sync_id = None
        request.save()
        raise exc
    if force:
        settings.put(force_next=False)
    return row
