"""The ``moodle-sync-agent`` command line.

Exit status: 0 done (with warnings too); 1 a sync completed with errors or failed; 2 bad usage,
configuration or input; 3 offline (sync skipped); 4 another sync is running.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
import threading
import time
from typing import Any, Callable

import peewee as pw

# The daemon, the sync and collection engines, the way down and the verify
# (and through them requests and schedule) are imported by the commands that
# run them: `status` or `enqueue`, run often from scripts and by the learning
# apps, start without them. agent.moodle is light: it imports requests at its
# first call.
from . import courses, health, reasons
from .store import handoff, history, settings
from .store.status import status as box_status
from .store.runkinds import CLI, COLLECT, RUN_NAMES
from .config import Config, ConfigError, load_config
from .store.db import Event, SyncRequest, Run
from .store.schema import open_db
from .logs import configure_logging
from .moodle import MoodleError, TokenRejected, Unreachable
from .cli_args import build_parser
from .learners_cli import cmd_learners
from .store.queue import EventError, conflict_dicts, enqueue, parse_events, read_input, set_conflicts, validate_events
from .runs import AlreadyRunning, SyncDisabled
from .store.diskspace import database_problem
from .exits import EXIT_ERRORS, EXIT_OFFLINE, EXIT_OK, EXIT_RUNNING, EXIT_USAGE
from .text import error_words, human_bytes

SYNC_EXIT = {
    Run.COMPLETED: EXIT_OK,
    Run.COMPLETED_WITH_WARNINGS: EXIT_OK,  # it did its work; the reasons say what to look at
    Run.COMPLETED_WITH_ERRORS: EXIT_ERRORS,
    Run.FAILED: EXIT_ERRORS,
    Run.INTERRUPTED: EXIT_ERRORS,
    Run.SKIPPED_OFFLINE: EXIT_OFFLINE,
}

log = logging.getLogger("moodle_sync_agent")

# How long `sync --via-agent` waits for the daemon to pick its request up.
PICKUP_TIMEOUT_S = 10.0


class UsageError(Exception):
    pass


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


def print_rows(rows: list[dict], as_json: bool, empty: str, line: Callable[[dict], str]) -> int:
    """A listing: JSON, or one line per row, or a hint when there is nothing."""
    if as_json:
        _print_json(rows)
    else:
        for row in rows:
            print(line(row))
        if not rows:
            print(empty)
    return EXIT_OK


# -- commands ----------------------------------------------------------------

def cmd_enqueue(config: Config, args: argparse.Namespace) -> int:
    source = sys.stdin.buffer if args.file in (None, "-") else open(args.file, "rb")
    with source:
        data = read_input(source)
    events = validate_events(parse_events(data))
    result = enqueue(events, config=config)
    print(f"queued {result.stored} event(s)" + (f", {result.duplicates} already queued" if result.duplicates else ""))
    return EXIT_OK


def cmd_courses(config: Config, args: argparse.Namespace) -> int:
    if args.action == "add":
        from .moodle import MoodleClient

        added = courses.add(MoodleClient(config.moodle), args.courses)
        for c in added:
            print(f"added {c.shortname} (id {c.id}): {len(list(c.activities))} activities")
        return EXIT_OK
    if args.action == "remove":
        n = courses.remove(args.courses)
        print(f"removed {n} course(s)")
        return EXIT_OK if n else EXIT_USAGE
    rows = [{"id": c.id, "shortname": c.shortname, "fullname": c.fullname, "timemodified": c.timemodified,
             "cacherev": c.cacherev, "fetched_at": c.fetched_at,
             "activities": [{"cmid": a.cmid, "name": a.name, "modname": a.modname}
                            for a in courses.Activity.select().where(courses.Activity.course == c.id)]}
            for c in courses.Course.select().order_by(courses.Course.id)]
    return print_rows(rows, args.json, "no courses on this box yet: moodle-sync-agent courses add ID_OR_SHORTNAME",
                      lambda r: f"{r['id']:>6}  {r['shortname']:<20} {len(r['activities']):>3} activities  "
                                f"fetched {r['fetched_at']}")


def format_run(run: dict) -> str:
    if run["kind"] == COLLECT:
        head = (f"Collection {run['id']}  [{run['status']}]  {'full' if run['force'] else 'incremental'}"
                f"  trigger {run['trigger']}")
    else:
        head = (f"{RUN_NAMES[run['kind']].capitalize()} {run['id']}  [{run['status']}]  trigger {run['trigger']}"
                f"{' (forced)' if run['force'] else ''}")
    lines = [
        head,
        f"  started {run['started_at']}  completed {run['completed_at']}  duration {run['duration_s']} s",
        f"  data: {human_bytes(run['bytes_sent'])} sent, {human_bytes(run['bytes_received'])} received",
    ]
    if run["courses"]:
        lines.append("  courses: " + ", ".join(f"{c['shortname']} ({c['outcome']})" for c in run["courses"]))
    acts = {k: v for k, v in run["actions"].items() if v}
    lines.append("  actions: " + (", ".join(f"{k.replace('_', ' ')} {v}" for k, v in acts.items()) or "none"))
    if run.get("collected"):
        lines.append("  collected before: " + collected_words(run["collected"]))
    lines += [f"  error: {e}" for e in run["errors"]]
    lines += [f"  {'why' if run['status'] != 'completed_with_warnings' else 'warning'}: {s}\n    what to do: {a}"
              for s, a in map(reasons.words, run.get("reasons") or [])]
    return "\n".join(lines)


def collected_words(found: dict) -> str:
    """What the collection before a sync found, as the Information dialog says it."""
    # A collection never ends "with warnings" (agent/runs.py Record.final_status: syncs and verifies only).
    if found["status"] not in (Run.COMPLETED, Run.COMPLETED_WITH_ERRORS):
        return f"{found['status']}" + (f" ({found['errors'][0]})" if found.get("errors") else "")
    from .kinds import found_counters

    return ", ".join(f"{found.get(k, 0)} {k}" for k in found_counters())


def cmd_sync(config: Config, args: argparse.Namespace) -> int:
    if args.via_agent:
        return request_sync_via_agent(config, force=args.force, as_json=args.json)
    from .sync import run_sync

    return run_and_report(lambda: run_sync(config, trigger=CLI, force=args.force), args.json)


def run_and_report(start: Callable[[], Run], as_json: bool) -> int:
    """Run a sync (or a verify), print its history entry, map its status to an exit code."""
    try:
        row = start()
    except AlreadyRunning as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_RUNNING
    except SyncDisabled as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_ERRORS
    return report_run(row, as_json)


def report_run(row: Run, as_json: bool) -> int:
    """Print a run's history entry; its status gives the exit code."""
    run = history.run_dict(row)
    if as_json:
        _print_json(run)
    else:
        print(format_run(run))
    return SYNC_EXIT.get(row.status, EXIT_ERRORS)


def request_sync_via_agent(config: Config, force: bool = False, as_json: bool = False, *,
                           pickup_timeout_s: float = PICKUP_TIMEOUT_S, poll_s: float = 0.1) -> int:
    """Queue a request for the agent, wait for its run to end, print it like
    ``sync`` does and return the same exit status."""
    if not settings.get(config, "sync_enabled"):
        print(SyncDisabled(), file=sys.stderr)
        return EXIT_ERRORS
    request_id = handoff.request_sync(trigger=CLI, force=force).id
    deadline = time.monotonic() + pickup_timeout_s
    while True:
        request = SyncRequest.get_by_id(request_id)
        if request.sync_id:
            break
        if request.picked_at and not settings.get(config, "sync_enabled"):
            print(SyncDisabled(), file=sys.stderr)
            return EXIT_ERRORS
        if time.monotonic() > deadline:
            print(f"moodle-sync-agent: no agent picked up the request within {pickup_timeout_s:g} s: "
                  "is `moodle-sync-agent run` running (systemctl status moodle-sync-agent)? "
                  "The request stays queued until it starts.", file=sys.stderr)
            return EXIT_ERRORS
        time.sleep(poll_s)
    while True:
        row = Run.get_by_id(request.sync_id)
        if row.status != Run.RUNNING:
            break
        if not history.is_running():
            row = Run.get_by_id(request.sync_id)  # it may have ended just now
            if row.status == Run.RUNNING:
                print(f"moodle-sync-agent: the agent stopped during sync {row.id}", file=sys.stderr)
                return EXIT_ERRORS
            break
        time.sleep(poll_s)
    return report_run(row, as_json)


def cmd_collect(config: Config, args: argparse.Namespace) -> int:
    """One collection from the box's Moodle; exit 3 when it does not answer.
    SIGTERM or SIGINT ends it after its current request, as interrupted."""
    from .box.collect import NoBox, run_collect
    from .interrupt import stop_on_signals

    try:
        with stop_on_signals(threading.Event()) as stop:
            result = run_collect(config, full=args.full, trigger=CLI, stop=stop)
    except NoBox as exc:
        print(f"moodle-sync-agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AlreadyRunning as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_RUNNING
    except SyncDisabled as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_ERRORS
    report_run(result.row, args.json)
    if result.unreachable or result.row.status == Run.SKIPPED_OFFLINE:
        return EXIT_OFFLINE
    return EXIT_ERRORS if result.row.status in (Run.FAILED, Run.INTERRUPTED) else EXIT_OK


def cmd_verify(config: Config, args: argparse.Namespace) -> int:
    from .verify import run_verify

    return run_and_report(lambda: run_verify(config, course_id=args.course, trigger=CLI), args.json)


def cmd_history(config: Config, args: argparse.Namespace) -> int:
    runs = history.recent(args.limit, collections=True)
    if args.json:
        _print_json(runs)
    else:
        print("\n\n".join(format_run(r) for r in runs) or "no sync has run yet")
    return EXIT_OK


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    st = box_status(config)
    st["health"] = health.gather(config)
    if args.json:
        _print_json(st)
        return EXIT_OK
    last = st["last_sync"]
    print(f"queued events: {st['queued']}   conflicts: {st['conflicts']}   sent: {st['sent']}")
    print(f"server: {st['server']['site_name'] or '?'} ({config.moodle.url})"
          + ("  TOKEN REJECTED" if st["server"]["token_rejected"] else ""))
    print(f"sync: {'on' if st['sync_enabled'] else 'OFF'}; scheduled daily at {st['schedule']['time_utc']} UTC "
          f"({'on' if st['schedule']['enabled'] else 'off'})")
    print(f"last sync: {last['started_at']} {last['status']}" if last else "last sync: never")
    box = st["box_moodle"]
    if box is not None:
        collection = box["last_collection"]
        print(f"box's Moodle: {box['site_name'] or '?'} ({box['url']})"
              + {True: "", False: "  NOT ANSWERING", None: "  not contacted yet"}[box["reachable"]]
              + (f"; last collection {collection['started_at']} {collection['status']}" if collection
                 else "; no collection yet"))
    for name, reason in st["health"]["warnings"].items():
        print(f"attention: {name}: {reason}")
    return EXIT_OK


def cmd_check(config: Config, args: argparse.Namespace) -> int:
    from .check import run_check

    return run_check(config, args.json, getattr(args, "only", None))


def cmd_conflicts(config: Config, args: argparse.Namespace) -> int:
    if args.action in ("retry", "discard"):
        status = Event.QUEUED if args.action == "retry" else Event.DISCARDED
        n = set_conflicts(args.ids, status)
        print(f"{args.action}: {n} conflict(s)")
        return EXIT_OK if n == len(set(args.ids)) else EXIT_USAGE
    return print_rows(conflict_dicts(), args.json, "no conflicts",
                      lambda r: f"{r['id']:>8}  {r['type']:<10} {r['user']:<20} course {r['course_id']}  {r['reason']}")


def cmd_set_password(config: Config, args: argparse.Namespace) -> int:
    from .auth import hash_password  # werkzeug is only needed here and in the page

    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("New admin password: ")
        if password != getpass.getpass("Again: "):
            raise UsageError("the two passwords differ")
    if len(password) < 8:
        raise UsageError("password: must be at least 8 characters")
    settings.put(password_hash=hash_password(password))
    print("admin password set")
    return EXIT_OK


def cmd_connect(config: Config, args: argparse.Namespace) -> int:
    """A token by login for the server or the box's Moodle, written to its file; then check."""
    from .connect import ConnectError, command

    try:
        return command(config, args, cmd_check)
    except ConnectError as exc:
        raise UsageError(str(exc)) from None


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    from .service.daemon import run_daemon

    return run_daemon(config)


# -- parser ------------------------------------------------------------------

COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "enqueue": cmd_enqueue,
    "courses": cmd_courses,
    "sync": cmd_sync,
    "history": cmd_history,
    "status": cmd_status,
    "check": cmd_check,
    "conflicts": cmd_conflicts,
    "set-password": cmd_set_password,
    "verify": cmd_verify,
    "collect": cmd_collect,
    "learners": cmd_learners,
    "run": cmd_run,
    "connect": cmd_connect,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    try:
        # connect writes the tokens: they need not be there yet.
        config = load_config(args.config, tokens=args.command != "connect")
        configure_logging(config)
        open_db(config.agent.database)
        return COMMANDS[args.command](config, args)
    except (ConfigError, EventError, UsageError) as exc:
        print(f"moodle-sync-agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except courses.CourseNotFound as exc:
        print(f"moodle-sync-agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TokenRejected:
        print("moodle-sync-agent: the server rejected the token", file=sys.stderr)
        return EXIT_ERRORS
    except Unreachable as exc:
        print(f"moodle-sync-agent: offline: {exc.reason}", file=sys.stderr)
        return EXIT_OFFLINE
    except MoodleError as exc:
        print(f"moodle-sync-agent: the server refused: {error_words(exc)}", file=sys.stderr)
        return EXIT_ERRORS
    except OSError as exc:  # a file, the disk probe: named with the command that met it
        print(f"moodle-sync-agent: {args.command}: {error_words(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except pw.DatabaseError as exc:  # typically a full disk: SQLite cannot even open its WAL
        print(f"moodle-sync-agent: {database_problem(config, exc)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
