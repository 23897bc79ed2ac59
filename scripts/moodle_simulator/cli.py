"""The command line: ``scripts/moodle-simulator --host H --port P --token T`` (or python -m moodle_simulator)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .faults import REALISTIC_CALL_COST_MS, REALISTIC_REQUEST_COST_MS
from .server import SimServer


def main(argv=None):
    ap = argparse.ArgumentParser(prog="moodle-simulator",
                                 description="Simulated Moodle 4.5 Web Services REST server.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--token", required=True, help="the web service token clients must send")
    ap.add_argument("--request-cost-ms", type=float, default=0, help="simulated cost of each HTTP request")
    ap.add_argument("--call-cost-ms", type=float, default=0, help="simulated cost of each function call")
    ap.add_argument("--realistic-costs", action="store_true",
                    help=f"use {REALISTIC_REQUEST_COST_MS} ms per request + {REALISTIC_CALL_COST_MS} ms per call")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--no-seed", action="store_true", help="start with only the site and the admin")
    ap.add_argument("--without-function", action="append", default=[], metavar="NAME",
                    help="leave a function out of the token's service (repeatable)")
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
                        seed=not args.no_seed, without_functions=args.without_function, wwwroot=args.wwwroot,
                        tls_cert=args.tls_cert, tls_key=args.tls_key, debug=args.debug_developer,
                        verbose=args.verbose)
    except OSError as e:
        print(f"moodle-simulator: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1

    def on_term(signum, frame):
        threading.Thread(target=sim.httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    print(f"moodle-simulator ready on {sim.url} (token set)", flush=True)
    try:
        sim.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0
