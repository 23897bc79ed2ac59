"""What the Information dialog names about a run, and the school's Moodle's
state as the history shows it. Stored state only, read for the page.

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

from ..reasons import TABLE
from .db import Activity, Course, Event, Run
from .history import IS_SYNC
from .runkinds import COLLECT, VERIFY

NAMED = 20
MOVED_TYPES = ("completion", "grade", "user", "enrolment")
FOUND_KINDS = ("completions", "grades", "accounts", "enrolments")
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


def moved(run: dict[str, Any]) -> dict[str, Any]:
    """{"up": [...], "up_total": N, "down": [...], "down_total": M}; each item
    {"kind", "username", "course", "activity", "value"} (activity None for an
    account or an enrolment)."""
    sent = Event.select().where(Event.sync_id == run["id"], Event.status == Event.SENT,
                                Event.type.in_(MOVED_TYPES))
    up_total = sent.count()
    rows = list(sent.order_by(Event.id).limit(NAMED))
    down = list(run.get("moved_down") or [])[:NAMED]
    actions = run.get("actions") or {}
    down_total = int(actions.get("completions_down", 0)) + int(actions.get("grades_down", 0))
    names = _names({int(e.cmid) for e in rows if e.cmid} | {int(d["cmid"]) for d in down})
    courses = _shortnames({int(e.course_id) for e in rows if e.course_id} | {int(d["course_id"]) for d in down})
    up = []
    for e in rows:
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
                   "value": bool(d["value"]) if d["kind"] == "completion" else d["value"]} for d in down]
    return {"up": up, "up_total": up_total, "down": down_items, "down_total": max(down_total, len(down_items))}


def collections_since(run: dict[str, Any]) -> dict[str, Any] | None:
    """What the collections between the previous sync and this one found
    (this sync's own collection left out); None for a run that is no sync."""
    if run["kind"] in (COLLECT, VERIFY):
        return None
    previous = (Run.select(Run.started_at, Run.completed_at)
                .where(IS_SYNC, Run.started_at < run["started_at"])
                .order_by(Run.started_at.desc()).first())
    query = Run.select(Run.id, Run.actions).where(
        Run.kind == COLLECT, Run.started_at <= run["started_at"],
        Run.status.in_([Run.COMPLETED, Run.COMPLETED_WITH_ERRORS]))
    if previous is not None:  # after it ended: its own collection ran inside it
        query = query.where(Run.started_at >= (previous.completed_at or previous.started_at))
    own = (run.get("collected") or {}).get("run")
    if own:
        query = query.where(Run.id != own)
    found = dict.fromkeys(FOUND_KINDS, 0)
    count = 0
    for row in query:
        count += 1
        for kind in FOUND_KINDS:
            found[kind] += int((row.actions or {}).get(kind, 0))
    return {"collections": count, **found}


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
