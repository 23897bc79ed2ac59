"""Fault switches: what a school's network or an overloaded Moodle does to requests, and the cost model.

REALISTIC_REQUEST_COST_MS and REALISTIC_CALL_COST_MS are the old flat cost
model (request_cost_ms + call_cost_ms per call), kept for scripts/bench.
"""

from __future__ import annotations

import copy
import threading

#: Cost model measured on a real Moodle 4.5: one completion override alone
#: takes about 40 ms, each entry of a 50-200 entry batch about 8 ms.
REALISTIC_REQUEST_COST_MS = 32
REALISTIC_CALL_COST_MS = 8


class Faults:
    """Fault switches.  Set with ``faults.set(name=value)`` or POST /__sim/faults.

    Count-limited switches (``reset_mid_response``, ``truncated_json``) take
    True (every request) or an int (only the next N requests); ``status``
    takes an HTTP code with optional ``retry_after`` and ``status_count``.
    """

    FIELDS = {
        "latency_ms": 0,
        "reset_after_requests": None,
        "reset_after_processing": False,
        "reset_mid_response": False,
        "status": None,
        "retry_after": None,
        "status_count": None,
        "status_after_processing": False,
        "captive_portal": False,
        "redirect": None,
        "reject_token": False,
        "truncated_json": False,
        "clock_offset_s": 0,
        "fail_function": None,
        "request_cost_ms": 0,
        "call_cost_ms": 0,
        "debug": False,
    }

    def __init__(self, **defaults):
        self._lock = threading.Lock()
        self._defaults = dict(self.FIELDS)
        for k, v in defaults.items():
            if k not in self.FIELDS:
                raise ValueError(f"unknown fault switch {k!r}")
            self._defaults[k] = v
        self.clear()

    def clear(self):
        with self._lock:
            for k, v in self._defaults.items():
                object.__setattr__(self, k, copy.deepcopy(v))

    def set(self, **switches):
        with self._lock:
            for k, v in switches.items():
                if k not in self.FIELDS:
                    raise ValueError(f"unknown fault switch {k!r}")
                if v is None:
                    v = copy.deepcopy(self.FIELDS[k])
                object.__setattr__(self, k, v)
        return self.snapshot()

    def __setattr__(self, key, value):
        if key.startswith("_"):
            object.__setattr__(self, key, value)
        else:
            self.set(**{key: value})

    def snapshot(self):
        return {k: copy.deepcopy(getattr(self, k)) for k in self.FIELDS}

    def _take_count(self, name):
        v = getattr(self, name)
        if v is True:
            return True
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            object.__setattr__(self, name, v - 1 if v > 1 else False)
            return True
        return False

    def take(self):
        """Decide, atomically, which faults apply to the request being served."""
        with self._lock:
            f = {"latency_ms": self.latency_ms or 0, "reset": False, "reset_after_processing": False,
                 "status": None, "retry_after": None, "status_after_processing": False,
                 "captive_portal": bool(self.captive_portal),
                 "redirect": self.redirect, "mid_response": False, "truncated": False,
                 "clock_offset_s": self.clock_offset_s or 0}
            n = self.reset_after_requests
            if n is not None and not isinstance(n, bool):
                if n <= 0:
                    f["reset"] = True
                    f["reset_after_processing"] = bool(self.reset_after_processing)
                    object.__setattr__(self, "reset_after_requests", None)
                else:
                    object.__setattr__(self, "reset_after_requests", n - 1)
            if not f["reset"] and self.status:
                f["status"], f["retry_after"] = int(self.status), self.retry_after
                f["status_after_processing"] = bool(self.status_after_processing)
                if self.status_count is not None:
                    left = int(self.status_count) - 1
                    if left <= 0:
                        object.__setattr__(self, "status", None)
                        object.__setattr__(self, "retry_after", None)
                        object.__setattr__(self, "status_count", None)
                    else:
                        object.__setattr__(self, "status_count", left)
            if not f["reset"] and not f["status"]:
                f["mid_response"] = self._take_count("reset_mid_response")
                if not f["mid_response"]:
                    f["truncated"] = self._take_count("truncated_json")
            return f
