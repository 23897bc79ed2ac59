"""What the simulator saw: requests, connections, calls per function, errors, bytes, batches, costs."""

from __future__ import annotations

import threading
import time


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests = 0
            self.control_requests = 0
            self.connections = 0
            self.calls: dict[str, int] = {}
            self.errors: dict[str, int] = {}
            self.bytes_in = 0
            self.bytes_out = 0
            self.batches = 0
            self.batch_sizes: dict[int, int] = {}
            self.faults_fired: dict[str, int] = {}
            self.cost_ms: dict[str, float] = {}     # simulated cost slept, by function ("(request)": the rest)
            self.started = time.time()

    def add(self, **kw: int) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)

    def count(self, table: str, key: object, n: float = 1) -> None:
        with self._lock:
            d = getattr(self, table)
            d[key] = d.get(key, 0) + n

    def snapshot(self) -> dict:
        with self._lock:
            return {"requests": self.requests, "control_requests": self.control_requests,
                    "connections": self.connections, "calls": dict(self.calls),
                    "total_calls": sum(self.calls.values()), "errors": dict(self.errors),
                    "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "batches": self.batches,
                    "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                    "faults_fired": dict(self.faults_fired),
                    "cost_ms": {k: round(v, 3) for k, v in self.cost_ms.items()},
                    "total_cost_ms": round(sum(self.cost_ms.values()), 3),
                    "uptime_s": round(time.time() - self.started, 3)}
