"""The kinds of run in the history, who can start one, and what each counts.

A run's ``kind`` says what it does (a sync, a full re-check, a collection
from the box's Moodle); its ``trigger`` says who started it. Both are
columns of the runs table (agent/store/db.py); before schema version 8 the
trigger held both. Plain constants: nothing here reads the database.
"""

from __future__ import annotations

from ..kinds import found_counters, push_counters

# What a run does.
SYNC = "sync"  # agent/sync.py
VERIFY = "verify"  # a full re-check (agent/verify.py)
COLLECT = "collect"  # a collection from the box's Moodle (agent/box/collect.py)
RUN_KINDS = (SYNC, VERIFY, COLLECT)

# Who started it.
PAGE = "page"  # a button on the page (a request the daemon served)
CLI = "cli"  # the command line, or a request from ``sync --via-agent``
SCHEDULE = "schedule"  # the daemon's daily sync, or its collection every few minutes
BY_SYNC = "sync"  # the collection a sync starts with
# (A verify or a collection recorded before the kind had its own column has
# the trigger "unknown": agent/store/schema.py's upgrade to version 8.)

# What a run's ``actions`` count: a sync's server actions (each kind's, from
# agent/kinds.py, then the course check's), a verify's checks.
ACTION_KINDS = push_counters()
VERIFY_KINDS = ["checked", "matching", "requeued", "not_checked"]
# A collection's: the events it queued, and how many learners' completion states it read.
COLLECT_KINDS = found_counters() + ["learners_read"]

# How the log names a run of each kind.
RUN_NAMES = {SYNC: "sync", VERIFY: "verify", COLLECT: "collection"}
