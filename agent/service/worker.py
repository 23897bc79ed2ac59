"""One job of the daemon, in a process of its own: a page's sync request, a
scheduled attempt (the online check, then the sync), or a collection from
the box's own Moodle (every [box] collect_minutes).

Why a process: the daemon idles 23 hours a day. Its jobs need the HTTP stack
(requests, urllib3, TLS: ~12 MB) and grow the heap; a job that exits gives
all of it back, and the daemon stays at its start-up size for months.

    python -m agent.service.worker --config PATH request ID
    python -m agent.service.worker --config PATH scheduled
    python -m agent.service.worker --config PATH collect [--full]

It prints lines of JSON on stdout for the daemon: ``{"run": ID}`` when its
run has started, then its outcome as the last line. SIGTERM or SIGINT stops
the run after its current batch, recorded as interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from typing import Any, Callable

from ..store import handoff, settings
from ..box.collect import run_collect
from ..config import Config, load_config
from ..store.db import SyncRequest, Run
from ..store.schema import open_db
from ..store.runkinds import SCHEDULE, VERIFY
from ..logs import configure_logging
from ..moodle import MoodleError, Unreachable
from ..runs import AlreadyRunning, SyncDisabled
from ..moodle.clients import connect
from ..sync import run_sync
from ..verify import run_verify

log = logging.getLogger("agent.service.worker")  # not "__main__" under -m


def emit(**message: Any) -> None:
    print(json.dumps(message), flush=True)


def started(row: Run) -> None:
    emit(run=row.id)


def serve_request(config: Config, request: SyncRequest, stop: threading.Event | None = None,
                  on_started: Callable[[Run], None] | None = None) -> Run:
    """Run the sync (or verify) a request asked for. A one-shot Force Sync set on
    the page applies to the next sync and is then cleared."""
    verify = request.kind == VERIFY
    force = not verify and (request.force or bool(settings.get(config, "force_next")))

    def attach(row: Run) -> None:
        request.sync_id = row.id
        request.save()
        if on_started:
            on_started(row)

    if request.picked_at is None:
        handoff.pick(request)
    try:
        if verify:
            row = run_verify(config, trigger=request.trigger, stop=stop, on_started=attach)
        else:
            row = run_sync(config, trigger=request.trigger, force=force, stop=stop, on_started=attach)
    except (AlreadyRunning, SyncDisabled):
        request.sync_id = None
        request.save()
        raise
    if force:
        settings.put(force_next=False)
    return row


def serve(config: Config, request_id: int, stop: threading.Event) -> dict:
    request = SyncRequest.get_by_id(request_id)  # the daemon logged its pickup
    try:
        row = serve_request(config, request, stop, on_started=started)
    except AlreadyRunning as exc:
        if exc.run_id:
            handoff.attach(request, exc.run_id)
        log.info("sync request %d: %s", request.id, exc)
        return {}
    except SyncDisabled as exc:
        log.info("sync request %d not run: %s", request.id, exc)
        return {}
    return {"status": row.status}


def scheduled(config: Config, stop: threading.Event) -> dict:
    """The online check first: an offline box records nothing, the daemon
    checks again on its backoff and records one row if the window ends.
    The sync goes on with the same connection: the site info is read once."""
    client = connect(config, stop)

    def offline(reason: str, retry_after: float | None = None) -> dict:
        return {"offline": reason, "retry_after": retry_after, "bytes_sent": client.traffic.bytes_sent,
                "bytes_received": client.traffic.bytes_received, "clock_offset_s": client.clock_offset_s()}

    try:
        client.site_info()
    except Unreachable as exc:
        return offline(exc.reason, exc.retry_after)
    except MoodleError:
        pass  # it answered: the run records what is wrong (a rejected token ...)
    try:  # the run's row counts the check's traffic too: it is the run's online check
        row = run_sync(config, trigger=SCHEDULE, stop=stop, client=client, on_started=started)
    except AlreadyRunning as exc:
        return offline(str(exc))  # checked again with the backoff: never two at once
    except SyncDisabled:
        return {}  # turned off a moment ago: the plan says so at the next step
    return {"status": row.status}


def collect(config: Config, stop: threading.Event, full: bool = False) -> dict:
    """A collection from the box's Moodle; a run going on (a sync collects
    first anyway) or sync turned off: nothing to do."""
    try:
        result = run_collect(config, full=full, trigger=SCHEDULE, stop=stop, on_started=started)
    except (AlreadyRunning, SyncDisabled) as exc:
        log.info("collection not run: %s", exc)
        return {}
    return {"status": result.row.status}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.service.worker")
    parser.add_argument("--config", required=True)
    sub = parser.add_subparsers(dest="job", required=True)
    sub.add_parser("request").add_argument("id", type=int)
    sub.add_parser("scheduled")
    sub.add_parser("collect").add_argument("--full", action="store_true")
    args = parser.parse_args(argv)

    signalled: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Only a flag: the job's thread may hold the stop event's lock.
        signal.signal(sig, lambda signum, _frame: signalled.append(signum))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    config = load_config(args.config)
    configure_logging(config)
    open_db(config.agent.database)
    stop, outcome = threading.Event(), {}  # type: tuple[threading.Event, dict[str, Any]]

    def work() -> None:
        try:
            if args.job == "request":
                outcome.update(serve(config, args.id, stop))
            elif args.job == "collect":
                outcome.update(collect(config, stop, args.full))
            else:
                outcome.update(scheduled(config, stop))
        except Exception as exc:  # the database, a bug: the daemon's plan backs off and it goes on
            log.exception("sync worker failed")
            outcome["error"] = f"internal error: {type(exc).__name__}: {exc}"

    job = threading.Thread(target=work, name="job")
    job.start()
    while job.is_alive():
        if signalled:
            stop.set()
        job.join(0.2)
    emit(done=True, **outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
