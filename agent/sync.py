"""One sync run: online check, course check, push of the queued events.

Guarantees:
- an event is marked sent only after the server's answer for it said success;
- a network failure, a crash or a kill at any moment leaves every event not
  yet confirmed in the queue, and the next run finishes the job;
- re-sending is safe: accounts are looked up before they are created,
  enrolments are checked before they are made, and completion overrides and
  grades set a state rather than add to one;
- one run at a time across processes (agent/runs.py).

The steps, each in a module of its own: the collection from the box's
Moodle (agent/box/collect.py), the online check (here), the course check and
the mapping of the box's activities (agent/course_check.py, agent/mapping.py),
the way down (agent/down/pull.py), the push (agent/push/pusher.py: what to
send is decided by the pure functions of agent/push/plan.py; each answered
request is settled in one transaction, agent/push/session.py: the SD card is
slow, one fsync per chunk and per batch, not per event). A run opens one
connection to each Moodle (agent/moodle/) and every step shares it.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from .awards import compare_courses
from .store import settings
from .box.collect import collect_for_sync
from .course_check import check_courses, map_box_activities
from .down.pull import pull_down, record_pushed
from .config import Config
from .kinds import down_counters, push_counters
from .store.db import Event, Run, erase_wal
from .store.runkinds import SYNC
from .moodle import MoodleClient, Unreachable
from .moodle.clients import connect, connect_box
from .push.pusher import push_events
from .store.queue import correct_event_times
from .store.queue import count_by_status
from .runs import recorded_run, unreachable_reason
from .push.session import Session

log = logging.getLogger(__name__)

def check_connection(run: Session) -> bool:
    """The online check; notes the clock offset, the service's functions and the site."""
    try:
        info = run.client.site_info()
    except Unreachable as exc:
        run.rec.errors.append(f"offline: {exc.reason}")
        run.rec.reasons.append(unreachable_reason(exc))
        return False
    run.rec.row.clock_offset_s = run.client.clock_offset_s()
    settings.put(token_rejected=False, site_name=info.site_name, site_url=info.site_url,
                 moodle_release=info.release)
    return True


def execute(run: Session) -> str:
    if not check_connection(run):
        return Run.SKIPPED_OFFLINE
    pushable = check_courses(run)
    map_box_activities(run, pushable)
    if run.direction != "up":
        pull_down(run, pushable)
        if run.direction == "down":
            return compared(run, pushable)
    run.rec.save(phase="sending_events")
    offset = run.rec.row.clock_offset_s
    corrected = correct_event_times(offset)
    if corrected:
        log.info("corrected the time of %d event(s) stamped while the clock was unknown, by %+.0f s",
                 corrected, offset)
    push_events(run, pushable)
    if run.direction == "both":
        record_pushed(run)
    return compared(run, pushable)


def compared(run: Session, pushable: list) -> str:
    """With a box's Moodle: its course completion and badges beside the server's, one line per course in the
    run's course entries (agent/awards.py); the run's status."""
    if run.box is not None:
        compare_courses(run, pushable, run.box)
    return run.rec.final_status()


def run_sync(config: Config, trigger: str = "cli", force: bool = False, *,
             stop: threading.Event | None = None, client: MoodleClient | None = None,
             on_started: Callable[[Run], None] | None = None, collect: bool = True) -> Run:
    """Run one sync and return its history row. Raises AlreadyRunning or SyncDisabled.
    With a box's Moodle ([box]) and ``collect``, a full collection comes first,
    in its own history row; the sync's row keeps what it found. ``client``:
    the server's connection, when the caller checked it already (the
    daemon's worker): its site info is not asked for again."""
    direction = settings.get(config, "sync_direction")
    kinds = push_counters() if direction == "up" else push_counters() + down_counters()
    stop = stop or threading.Event()
    # Made before the run starts: it imports the HTTP stack (0.05-0.15 s on
    # a small board), which is the process starting, not the sync.
    client = client or connect(config, stop)
    client.max_batch = config.agent.batch_size
    # The box's Moodle's, one for the run: the collection and the way down share it.
    box = connect_box(config, stop)
    with recorded_run(config, SYNC, trigger, kinds, force=force, on_started=on_started) as rec:
        rec.row.direction = direction
        if collect and box is not None:
            rec.save(phase="collecting")
            rec.row.collected = collect_for_sync(config, stop, client=box)
            # The progress bar's total: with what the collection queued.
            rec.save(phase="checking_connection", events_total=count_by_status()[Event.QUEUED])
        rec.traffic.append(client.traffic)
        run = Session(config, client, rec, force=force, stop=stop, box=box, direction=direction)
        try:
            rec.status = execute(run)
        finally:
            if run.secrets_erased:
                erase_wal()
    return rec.row
