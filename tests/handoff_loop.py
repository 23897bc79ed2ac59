"""A stand-in for the daemon's request loop (``moodle-sync-agent run``) while
that lands: picks the page's sync requests and runs them, like the daemon.

    python -m tests.handoff_loop CONFIG
"""

from __future__ import annotations

import signal
import sys
import threading

from agent.config import load_config
from agent.db import open_db
from agent.handoff import next_request, serve_request
from agent.sync import AlreadyRunning, SyncDisabled


def main(path: str) -> int:
    config = load_config(path)
    open_db(config.agent.database)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.is_set():
        request = next_request()
        if request is None:
            stop.wait(0.3)
            continue
        try:
            serve_request(config, request, stop)
        except (AlreadyRunning, SyncDisabled):
            pass  # the request is marked picked without a run: the page says so
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
