"""The exception that ends a run when the agent is asked to stop: its own
module, so that the connection (agent/moodle/) can raise it while it waits,
without importing the runs that import the connection."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


class Interrupted(Exception):
    """The agent was asked to stop: the run ends after its current batch."""


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """SIGTERM and SIGINT set ``stop`` while the block runs (in the main
    thread): the run ends after its current request, and its history row
    says interrupted at once, not at the next run. Only the event is set:
    what the run is writing is never cut in half. It is set from a thread of
    its own, as the worker's main thread does (agent/service/worker.py): the
    handler runs in the run's thread, which may hold the event's lock at
    that moment (inside stop.wait()), and would wait for itself."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in before:
        signal.signal(sig, lambda _signum, _frame: threading.Thread(target=stop.set, daemon=True).start())
    try:
        yield stop
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
