"""Bounded growth: old sent events and old history go, in small batches.

Sent events stay ``retention_days`` as an audit trail (and for ``verify``),
history 365 days or 10,000 runs, whichever is less; the collections from
the box's Moodle (one every few minutes) COLLECTIONS_DAYS, and they do not
count in the 10,000. Conflicts, queued and
discarded events are never deleted here: only a person settles those.
Freed pages go back to the filesystem through SQLite's incremental vacuum
(the database is created with auto_vacuum=incremental), which unlike VACUUM
needs no second copy of the file on a nearly full SD card.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import peewee as pw

from ..config import Config
from .db import Event, Run, database, first_column, iso, utcnow
from ..clock import clock_is_sane
from .history import IS_SYNC
from .runkinds import COLLECT

HISTORY_DAYS = 365
HISTORY_RUNS = 10_000
COLLECTIONS_DAYS = 14
# Small transactions: the page and the queue never wait long on the lock,
# and a power cut loses at most one batch of deletions (which is redone).
BATCH = 500


@dataclass
class Pruned:
    events: int = 0
    runs: int = 0

    @property
    def anything(self) -> bool:
        return bool(self.events or self.runs)


def _delete_in_batches(model: type[pw.Model], key: pw.Field, where: pw.Expression) -> int:
    deleted = 0
    while True:
        with database.obj.atomic():
            ids = first_column(model.select(key).where(where).limit(BATCH))
            if not ids:
                return deleted
            deleted += model.delete().where(key.in_(ids)).execute()


def prune(config: Config, now: datetime | None = None) -> Pruned:
    """Delete what is past retention; cheap (two indexed look-ups) when nothing is."""
    now = now or utcnow()
    pruned = Pruned()
    if not clock_is_sane(now):
        return pruned  # "30 days ago" means nothing on a clock that was never set
    sent_before = iso(now - timedelta(days=config.agent.retention_days))
    pruned.events = _delete_in_batches(Event, Event.id, (Event.status == Event.SENT) & (Event.sent_at < sent_before))
    runs_before = iso(now - timedelta(days=HISTORY_DAYS))
    oldest_kept = (Run.select(Run.started_at).where(IS_SYNC).order_by(Run.started_at.desc())
                   .offset(HISTORY_RUNS - 1).limit(1).scalar())
    if oldest_kept is not None and oldest_kept > runs_before:
        runs_before = oldest_kept
    collections_before = iso(now - timedelta(days=COLLECTIONS_DAYS))
    finished = Run.status != Run.RUNNING
    pruned.runs = _delete_in_batches(Run, Run.id, finished & IS_SYNC & (Run.started_at < runs_before))
    pruned.runs += _delete_in_batches(Run, Run.id, finished & (Run.kind == COLLECT)
                                      & (Run.started_at < collections_before))
    if pruned.anything:
        db = database.obj
        # Through executescript: Python's cursor steps this pragma only once,
        # which frees nothing; the script runs it to the end.
        db.connection().executescript("PRAGMA incremental_vacuum;")
        # In WAL mode the file only shrinks once the WAL is folded back into it.
        db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return pruned
