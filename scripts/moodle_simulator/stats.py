"""What the simulator saw: requests, connections, calls per function, errors, bytes, batches."""

from __future__ import annotations

import threading
import time


class Stats:
    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self):
        with getattr(self, "_lock", threading.Lock()):
            self.requests = 0
            self.control_requests = 0
            self.connections = 0
            self.calls = {}
            self.errors = {}
            self.bytes_in = 0
            self.bytes_out = 0
            self.batches = 0
            self.batch_sizes = {}
            self.faults_fired = {}
            self.started = time.time()

    def add(self, **kw):
        with self._lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)

    def count(self, table, key, n=1):
        with self._lock:
            d = getattr(self, table)
            d[key] = d.get(key, 0) + n

    def snapshot(self):
        with self._lock:
            return {"requests": self.requests, "control_requests": self.control_requests,
                    "connections": self.connections, "calls": dict(self.calls),
                    "total_calls": sum(self.calls.values()), "errors": dict(self.errors),
                    "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "batches": self.batches,
                    "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                    "faults_fired": dict(self.faults_fired),
                    "uptime_s": round(time.time() - self.started, 3)}
