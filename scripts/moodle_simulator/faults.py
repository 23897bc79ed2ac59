"""Fault switches: what a school's network or an overloaded Moodle does to requests, and the cost model.

The cost of a request is real time: the server sleeps it before answering.
Two models, switched by the fault switches and added when both are on:

- flat: ``request_cost_ms`` per request + ``call_cost_ms`` per function call
  (REALISTIC_* = 32 + 8, the first estimate, which scripts/bench uses);
- ``calibrated_costs``: CALIBRATED, fitted to a stock Moodle 4.5.6 (see
  below and docs/performance.md), where a call's cost grows with what it
  answers: the participants of a course, the fields of each profile.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Any

from . import hostile
from .config import BATCH_FUNCTION

#: The flat model's figures: one completion override alone about 40 ms, each
#: entry of a batch about 8 ms.
REALISTIC_REQUEST_COST_MS = 32
REALISTIC_CALL_COST_MS = 8


REQUEST = "(request)"      # the part of a request's cost that is not any function's


@dataclass(frozen=True)
class FunctionCost:
    """What one call of a function costs, in ms: a fixed part, and parts per record and field it returns."""
    call_ms: float = 0.0
    record_ms: float = 0.0
    field_ms: float = 0.0           # each top-level field of each record
    records_key: str | None = None  # where the answer lists its records: None, the answer itself; "a.b": the
                                    # lists b inside each record of the list a
    input_ms: float = 0.0           # each entry of the list parameter input_key (a write's cost is in what
    input_key: str | None = None    # it is asked to write: its answer is null)

    def _records(self, answer: Any) -> Any:
        if not self.records_key:
            return answer
        outer, _, inner = self.records_key.partition(".")
        records = answer.get(outer) if isinstance(answer, dict) else None
        if inner and isinstance(records, list):
            return [r for group in records if isinstance(group, dict) for r in group.get(inner) or []]
        return records

    def of(self, answer: Any, params: Any = None) -> float:
        writes = params.get(self.input_key) if self.input_key and isinstance(params, dict) else None
        cost = self.call_ms + (self.input_ms * len(writes) if isinstance(writes, list) else 0.0)
        records = self._records(answer)
        if not isinstance(records, list):
            return cost               # a failed call, or an answer without records
        fields = sum(len(r) for r in records if isinstance(r, dict)) if self.field_ms else 0
        return cost + self.record_ms * len(records) + self.field_ms * fields


@dataclass(frozen=True)
class CostModel:
    request_ms: float
    default: FunctionCost
    functions: dict[str, FunctionCost] = field(default_factory=dict)

    def of(self, fname: str, answer: Any, params: Any = None) -> float:
        return self.functions.get(fname, self.default).of(answer, params)


# Calibrated on a stock Moodle 4.5.6 (PHP 8.2, Apache, PostgreSQL 15, loopback, 2 cores); figures in ms.
#
# Request R and override c, from two figures of the same server:
#   one override per request, a bare loop, 22/s:        R + c       = 1000 / 22  = 45.5
#   a batch of 100 overrides in a sync (774, 733 ms):   R + 100 c   = 753.5
#   so 99 c = 708, c = 7.15 -> 7.2, and R = 45.5 - 7.2 = 38.3 -> 38.
#   (The bare loop of batches, 206/s, i.e. 485 ms per 100, is not fitted: its
#   4.5 ms per entry cannot go with 22/s single calls and a 36 ms site info.
#   A sync's entries, 50 learners in 2 courses, are the ones to model.)
# Site info, 36 ms: R alone (38, 2 ms over); the call itself costs nothing more.
# Course check, ids of 2 courses, 41 ms: 41 - 38 = 3 -> 1.5 per course returned.
# User look-up, 50 usernames, 247 ms: (247 - 38) / 50 = 4.2 per user returned.
# core_enrol_get_enrolled_users, 156 participants, per participant P + F per field:
#   full profiles (15 fields each), 689 and 668 ms:    R + 156 (P + 15 F) = 678.5
#   userfields=id (id and fullname: 2 fields), 0.11-0.14 s: R + 156 (P + 2 F) = 125
#   so 156 x 13 F = 553.5, F = 0.273 -> 0.27; P = (125 - 38) / 156 - 2 F = 0.012 -> 0.01:
#   a participant costs its fields (roles, courses, picture...), hardly anything by itself.
#   Check: 38 + 156 x (0.01 + 15 x 0.27) = 671.4; 38 + 156 x (0.01 + 2 x 0.27) = 123.8.
# core_user_get_course_user_profiles builds the same course profiles: the same P and F.
# Other functions (no figure): an override's 7.2; core_enrol_get_users_courses adds 1.5 per course.
# The functions of issues 21 and 22 (no figure either), by the nearest measured one:
#   mod_assign_save_grades: each grade is a write like an override (a grade row, the grade book, the
#   activity's and the course's completion), 7.2 per grade and nothing for the call itself, so one grade
#   costs what one override costs; mod_assign_save_grade: one grade, 7.2.
#   mod_assign_get_grades: 7.2 for the call, plus 0.27 per field of each grade row returned, as a
#   profile's field (7 fields: 1.9 a row; an upper bound, the rows are plain, no profile to build).
#   core_completion_get_course_completion_status: the default 7.2 (one course, one user, a few criteria).
#   core_badges_get_user_badges: 7.2, plus 1.5 per badge returned (like a course returned).
CALIBRATED = CostModel(
    request_ms=38.0,
    default=FunctionCost(call_ms=7.2),
    functions={
        "core_webservice_get_site_info": FunctionCost(),
        "core_course_get_courses_by_field": FunctionCost(record_ms=1.5, records_key="courses"),
        "core_user_get_users_by_field": FunctionCost(record_ms=4.2),
        "core_enrol_get_enrolled_users": FunctionCost(record_ms=0.01, field_ms=0.27),
        "core_user_get_course_user_profiles": FunctionCost(record_ms=0.01, field_ms=0.27),
        "core_enrol_get_users_courses": FunctionCost(call_ms=7.2, record_ms=1.5),
        "core_completion_override_activity_completion_status": FunctionCost(call_ms=7.2),
        "mod_assign_save_grades": FunctionCost(input_ms=7.2, input_key="grades"),
        "mod_assign_save_grade": FunctionCost(call_ms=7.2),
        "mod_assign_get_grades": FunctionCost(call_ms=7.2, field_ms=0.27, records_key="assignments.grades"),
        "core_completion_get_course_completion_status": FunctionCost(call_ms=7.2),
        "core_badges_get_user_badges": FunctionCost(call_ms=7.2, record_ms=1.5, records_key="badges"),
        BATCH_FUNCTION: FunctionCost(),     # within the fit of R and c
    },
)


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
        "calibrated_costs": False,
        "debug": False,
        # Answers over this many bytes go chunked, without Content-Length, as the recorded Apache sent
        # 22,722 and 160,668 bytes (recordings 102, 103; 5,219 still came with a length): None = never.
        "chunked_over": None,
        "hostile_grade": None,      # hostile.py: one learner's grade for one activity becomes a bad value
        "hostile_user": None,       # hostile.py: one learner's entry in the participant lists gets bad fields
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
                hostile.check(k, v)
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
                 "clock_offset_s": self.clock_offset_s or 0, "chunked_over": self.chunked_over}
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

    def request_costs(self, calls: list) -> dict[str, float]:
        """What a request that made these [function, answer, parameters] calls costs, in ms, by function
        (REQUEST for the request itself); empty when no cost model is on."""
        costs: dict[str, float] = {}

        def add(name: str, ms: float) -> None:
            if ms:
                costs[name] = costs.get(name, 0.0) + ms
        add(REQUEST, self.request_cost_ms or 0)
        for fname, *_ in calls:
            if fname != BATCH_FUNCTION:
                add(fname, self.call_cost_ms or 0)
        if self.calibrated_costs:
            add(REQUEST, CALIBRATED.request_ms)
            for fname, answer, *params in calls:
                add(fname, CALIBRATED.of(fname, answer, params[0] if params else None))
        return costs
