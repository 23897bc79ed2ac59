"""Sync requests: how the page (or ``sync --via-agent``) asks the daemon to sync.

The page never runs a sync inside a gunicorn worker: it writes a request row,
and the one daemon process picks it up, runs it, and records which run served
it. A worker restart or a second worker can neither start nor lose a run.
"""

from __future__ import annotations

from .db import SyncRequest, Run, database, iso, utcnow
from .runkinds import PAGE, RUN_KINDS, SYNC, VERIFY


def request_sync(trigger: str = PAGE, force: bool = False, kind: str = SYNC) -> SyncRequest:
    """Queue a request; one of the same kind already waiting absorbs the new one
    (force is kept). Kind "verify" asks for a full re-check instead of a sync."""
    if kind not in (SYNC, VERIFY):
        raise ValueError(f"kind: a request is for a sync or a verify, not {kind!r} (one of {RUN_KINDS})")
    same_kind = SyncRequest.kind == kind
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
        return SyncRequest.create(requested_at=iso(utcnow()), kind=kind, trigger=trigger, force=force)


def next_request() -> SyncRequest | None:
    return SyncRequest.select().where(SyncRequest.picked_at.is_null()).order_by(SyncRequest.id).first()


def pick(request: SyncRequest) -> None:
    """The daemon has taken the request (its worker then serves it)."""
    request.picked_at = iso(utcnow())
    request.save()


def attach(request: SyncRequest, run_id: str) -> bool:
    """Let a run already going on serve the request: runs never overlap.
    A run of the other kind (a sync for a verify, or the reverse, or a
    collection from the box's Moodle for either) cannot: the request waits
    for its own turn. Returns whether it was attached."""
    run = Run.get_or_none(Run.id == run_id)
    if run is not None and run.kind != request.kind:  # a request is never for a collection
        if request.picked_at is not None:  # back to waiting; no write (an fsync) when it already is
            request.picked_at = request.sync_id = None
            request.save()
        return False
    request.picked_at = iso(utcnow())
    request.sync_id = run_id
    request.save()
    return True
