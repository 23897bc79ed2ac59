"""The command line: ``scripts/moodle-simulator --host H --port P --token T`` (or python -m moodle_simulator)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .faults import REALISTIC_CALL_COST_MS, REALISTIC_REQUEST_COST_MS
from .server import SimServer


def _participants(text: str) -> tuple[int, int]:
    courseid, sep, count = text.partition("=")
    if not (sep and courseid.isdigit() and count.isdigit() and int(count) > 0):
        raise argparse.ArgumentTypeError(f"expected COURSEID=N (e.g. 2=30000), got {text!r}")
    return int(courseid), int(count)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="moodle-simulator",
                                 description="Simulated Moodle 4.5 Web Services REST server.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--token", required=True, help="the web service token clients must send")
    ap.add_argument("--request-cost-ms", type=float, default=0, help="simulated cost of each HTTP request")
    ap.add_argument("--call-cost-ms", type=float, default=0, help="simulated cost of each function call")
    ap.add_argument("--realistic-costs", action="store_true",
                    help=f"use {REALISTIC_REQUEST_COST_MS} ms per request + {REALISTIC_CALL_COST_MS} ms per call")
    ap.add_argument("--calibrated-costs", action="store_true",
                    help="charge what a stock Moodle 4.5 measured: per request, per call of each function, "
                         "per participant and per profile field returned (added to the flat costs above)")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--no-seed", action="store_true", help="start with only the site and the admin")
    ap.add_argument("--box", action="store_true",
                    help="play the classroom box's own Moodle: the same courses and users, every id different")
    ap.add_argument("--participants", action="append", default=[], metavar="COURSEID=N", type=_participants,
                    help="enrol N more students in the course (cN-participant1, ...); repeatable")
    ap.add_argument("--without-function", action="append", default=[], metavar="NAME",
                    help="leave a function out of the token's service (repeatable)")
    ap.add_argument("--sync-account", action="store_true",
                    help="seed the non-admin sync account (syncagent) with the roles of packaging/moodle/")
    ap.add_argument("--sync-without", action="append", default=[], metavar="CAPABILITY",
                    help="take an optional capability out of the sync account's roles (repeatable)")
    ap.add_argument("--mobile-services", choices=["on", "off"],
                    help="mobile web services (moodle_mobile_app); default: on with --box, else off")
    ap.add_argument("--wwwroot", help="site URL to report (default: the simulator's own URL)")
    ap.add_argument("--debug-developer", action="store_true", help="add debuginfo to errors")
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = ap.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    req_cost, call_cost = args.request_cost_ms, args.call_cost_ms
    if args.realistic_costs:
        req_cost, call_cost = REALISTIC_REQUEST_COST_MS, REALISTIC_CALL_COST_MS
    try:
        sim = SimServer(args.host, args.port, args.token, request_cost_ms=req_cost, call_cost_ms=call_cost,
                        calibrated_costs=args.calibrated_costs, seed=not args.no_seed,
                        participants=dict(args.participants), without_functions=args.without_function,
                        wwwroot=args.wwwroot, tls_cert=args.tls_cert, tls_key=args.tls_key,
                        debug=args.debug_developer, verbose=args.verbose, box=args.box,
                        sync_account=args.sync_account, sync_without=args.sync_without,
                        mobile_services=None if args.mobile_services is None else args.mobile_services == "on")
    except OSError as e:
        print(f"moodle-simulator: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    except ValueError as e:     # e.g. --participants for a course the site does not have
        ap.error(str(e))

    def on_term(signum, frame):
        threading.Thread(target=sim.httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    print(f"moodle-simulator ready on {sim.url} (token set{', box' if args.box else ''})", flush=True)
    try:
        sim.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0
