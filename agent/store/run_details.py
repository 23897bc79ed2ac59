"""What the Information dialog names about a run, and the school's Moodle's
state as the history shows it. Stored state only, read for the page.

The page lists five runs: each function below takes them all and asks the
database a few IN queries for all of them, not a few queries per run.

- ``moved``: the learners and activities a sync moved up (its sent events)
  and down (the changes it wrote into the box's Moodle, Run.moved_down),
  the first NAMED of each way and how many in all;
- ``collections_since``: what the collections from the box's Moodle found
  between the previous sync and this one (the every-few-minutes collection
  often queues the work before the sync's own collection looks);
- ``server_state``: whether the school's Moodle answered the last sync, when
  it last did, and when the token was last checked.
"""

from __future__ import annotations

from typing import Any

import peewee as pw

from ..kinds import KINDS, found_counters
from ..reasons import TABLE
from .db import Activity, Course, Event, Run
from .history import IS_SYNC
from .runkinds import COLLECT, VERIFY

NAMED = 20
# What the way down writes into the box's Moodle (Run.moved_down): the learning kinds' changes.
DOWN_COUNTERS = [k.down_counter for k in KINDS.values() if k.down == "learning"]
# The reasons that say the school's Moodle did not answer.
SERVER_SILENT = {code for code in TABLE if code.startswith("server_") and code != "server_refused"} | {
    "captive_portal"}


def _names(cmids: set[int]) -> dict[int, str]:
    if not cmids:
        return {}
    found = {a.cmid: a.name for a in Activity.select(Activity.cmid, Activity.name).where(Activity.cmid.in_(cmids))}
    return found


def _shortnames(ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return {c.id: c.shortname for c in Course.select(Course.id, Course.shortname).where(Course.id.in_(ids))}


def _sent(ids: list[str]) -> tuple[dict[str, int], dict[str, list[Event]]]:
    """How many events each run sent, and its first NAMED: numbered per run in one
    walk of the event_sync index (only ids: the rows named are read after)."""
    ranked = (Event.select(Event.id, Event.sync_id,
                           pw.fn.ROW_NUMBER().over(partition_by=[Event.sync_id], order_by=[Event.id]).alias("rn"),
                           pw.fn.COUNT(Event.id).over(partition_by=[Event.sync_id]).alias("total"))
              .where(Event.sync_id.in_(ids), Event.status == Event.SENT, Event.type.in_(list(KINDS))))
    query: Any = Event.select(ranked.c.id, ranked.c.sync_id, ranked.c.total).from_(ranked).where(ranked.c.rn <= NAMED)
    first: list[tuple[int, str, int]] = list(query.tuples())
    totals = {sync_id: int(total) for _, sync_id, total in first}
    rows: dict[str, list[Event]] = {}
    if first:
        for e in Event.select().where(Event.id.in_([i for i, _, _ in first])).order_by(Event.id):
            rows.setdefault(str(e.sync_id), []).append(e)
    return totals, rows


def moved(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per run id: {"up": [...], "up_total": N, "down": [...], "down_total": M}; each item
    {"kind", "username", "course", "activity", "value"} (activity None for an
    account or an enrolment)."""
    totals, sent = _sent([run["id"] for run in runs])
    down = {run["id"]: list(run.get("moved_down") or [])[:NAMED] for run in runs}
    rows = [e for events in sent.values() for e in events]
    written = [d for items in down.values() for d in items]
    names = _names({int(e.cmid) for e in rows if e.cmid} | {int(d["cmid"]) for d in written})
    courses = _shortnames({int(e.course_id) for e in rows if e.course_id} | {int(d["course_id"]) for d in written})
    found = {}
    for run in runs:
        up = []
        for e in sent.get(run["id"], []):
            data = e.data or {}
            activity = names.get(int(e.cmid)) if e.cmid else None
            if activity is None and isinstance(data.get("activity"), dict):
                activity = data["activity"].get("name")  # collected from the box's Moodle, named there
            if activity is None and e.cmid:
                activity = f"#{e.cmid}"
            value = data.get("completed") if e.type == "completion" else data.get("grade")
            up.append({"kind": e.type, "username": e.username, "course": courses.get(int(e.course_id or 0)),
                       "activity": activity, "value": value})
        down_items = [{"kind": d["kind"], "username": d["username"], "course": courses.get(int(d["course_id"])),
                       "activity": names.get(int(d["cmid"]), f"#{d['cmid']}"),
                       "value": bool(d["value"]) if d["kind"] == "completion" else d["value"]}
                      for d in down[run["id"]]]
        actions = run.get("actions") or {}
        down_total = sum(int(actions.get(counter, 0)) for counter in DOWN_COUNTERS)
        found[run["id"]] = {"up": up, "up_total": totals.get(run["id"], 0), "down": down_items,
                            "down_total": max(down_total, len(down_items))}
    return found


def _previous_syncs(syncs: list[dict[str, Any]]) -> dict[str, Run | None]:
    """Per sync: the sync (or verify) before it. Two walks down the started_at index:
    the one before the oldest, then every one from it to the newest."""
    oldest = min(run["started_at"] for run in syncs)
    newest = max(run["started_at"] for run in syncs)
    before = (Run.select(Run.started_at).where(IS_SYNC, Run.started_at < oldest)
              .order_by(Run.started_at.desc()).first())
    query = Run.select(Run.started_at, Run.completed_at).where(IS_SYNC, Run.started_at < newest)
    if before is not None:
        query = query.where(Run.started_at >= before.started_at)
    earlier = list(query.order_by(Run.started_at.desc()))
    return {run["id"]: next((r for r in earlier if r.started_at < run["started_at"]), None) for run in syncs}


def collections_since(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
    """Per run id: what the collections between the previous sync and this one found
    (this sync's own collection left out); None for a run that is no sync."""
    syncs = [run for run in runs if run["kind"] not in (COLLECT, VERIFY)]
    found: dict[str, dict[str, Any] | None] = {run["id"]: None for run in runs}
    if not syncs:
        return found
    previous = _previous_syncs(syncs)
    # After the previous sync ended: its own collection ran inside it.
    since = {}
    for run in syncs:
        before = previous[run["id"]]
        since[run["id"]] = (before.completed_at or before.started_at) if before is not None else None
    query = Run.select(Run.id, Run.started_at, Run.actions).where(
        Run.kind == COLLECT, Run.started_at <= max(run["started_at"] for run in syncs),
        Run.status.in_([Run.COMPLETED, Run.COMPLETED_WITH_ERRORS]))
    if all(since.values()):
        query = query.where(Run.started_at >= min(s for s in since.values() if s))
    collections = list(query)
    for run in syncs:
        own = (run.get("collected") or {}).get("run")
        start = since[run["id"]]
        counts = dict.fromkeys(found_counters(), 0)
        count = 0
        for row in collections:
            if row.started_at > run["started_at"] or (start and row.started_at < start) or (own and row.id == own):
                continue
            count += 1
            for kind in counts:
                counts[kind] += int((row.actions or {}).get(kind, 0))
        found[run["id"]] = {"collections": count, **counts}
    return found


# How far back the page looks for the last refusal of the token.
RECENT_RUNS = 200


def server_state(token_rejected: bool) -> dict[str, Any]:
    """The school's Moodle as the syncs found it: reachable (None: never
    tried), the last time it answered, and the last token check."""
    last = (Run.select().where(IS_SYNC, Run.status != Run.RUNNING)
            .order_by(Run.started_at.desc(), pw.SQL("rowid DESC")).first())
    answered = (Run.select(Run.started_at).where(IS_SYNC, Run.clock_offset_s.is_null(False))
                .order_by(Run.started_at.desc()).first())
    # The last token check: the last answer, or a refusal of the token among
    # the newest runs (walked down the started_at index, not the whole history).
    recent = (Run.select(Run.started_at, Run.clock_offset_s, Run.reasons).where(IS_SYNC)
              .order_by(Run.started_at.desc()).limit(RECENT_RUNS))
    checked = next((r for r in recent if r.clock_offset_s is not None
                    or any(x.get("code") == "token_rejected" for x in r.reasons or [])), answered)
    reachable: bool | None = None
    if last is not None:
        codes = {r.get("code") for r in last.reasons or []}
        silent = bool(codes & SERVER_SILENT) or last.status == Run.SKIPPED_OFFLINE
        reachable = False if silent else (True if last.clock_offset_s is not None or "token_rejected" in codes
                                          else None)
    return {"reachable": reachable, "last_contact": answered.started_at if answered else None,
            "token_checked_at": checked.started_at if checked else None,
            "token_ok": None if checked is None and not token_rejected else not token_rejected}


__all__ = ["NAMED", "collections_since", "moved", "server_state"]
