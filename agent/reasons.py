"""Why a run failed or ended with warnings, and what to do: one table for the
page, the e-mail notice and the command line.

Each reason has a code, a sentence and an advice. The English texts here are
what the command line and the e-mail print; the page shows the same reason
in its language, from the message ids ``reason_<code>`` and ``advice_<code>``
in webui/locale/*/LC_MESSAGES/messages.po (a test checks both stay in step).
A reason carries the values its sentence names (``{course}``, ``{n}``...).

Where a reason comes from:
- what ended a run (an exception): agent/runs.py's ``reason_of``, stored in
  the run's ``reasons`` column (and by the sync's online check); this module
  stays free of the wire (the page imports it);
- what a finished run left for a teacher to look at (its collection from the
  box's Moodle failed, a course differs or is missing, events became
  conflicts, the clock is far off): :func:`warnings_of`, worked out when the
  run ends and stored in its ``warnings`` column (an older row: from the row).
A run with warnings and no errors is "completed with warnings", never a plain
success (agent/runs.py, Record.final_status).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .health import MAX_CLOCK_OFFSET_S
from .store.db import Run
from .store.runkinds import COLLECT


@dataclass(frozen=True)
class Reason:
    code: str
    sentence: str
    advice: str
    warning: bool = False  # a warning: the run did its work, with something to look at
    one: str = ""  # the sentence for a count of 1, where it differs


TABLE: dict[str, Reason] = {r.code: r for r in (
    Reason("token_rejected", "The school's Moodle rejected the box's token.",
           "Ask the Moodle administrator for a new web service token and put it in the token file "
           "(/etc/moodle-sync-agent/token). The events stay queued meanwhile."),
    Reason("server_unreachable", "The school's Moodle could not be reached.",
           "Check the box's network connection. Nothing is lost: the events stay queued and go "
           "with the next sync."),
    Reason("captive_portal", "The network showed a login page (captive portal) instead of the school's Moodle.",
           "Open any web page on a phone or computer on the same network and accept the portal's terms, then start "
           "a sync again."),
    Reason("server_busy", "The school's Moodle is busy or under maintenance (it answered HTTP {status}).",
           "Nothing to do on the box: the next sync tries again. If it lasts more than a day, tell the "
           "Moodle administrator."),
    Reason("server_retry_after", "The school's Moodle asked the box to wait {wait} s before trying again.",
           "Nothing to do: the agent waits and tries again by itself."),
    Reason("server_refused", "The school's Moodle refused a request.",
           "Check that the token's web service has every function the agent needs "
           "(moodle-sync-agent check); the details name the request."),
    Reason("disk_full", "The box's storage is full: the run could not write its results.",
           "Free some space on the box (old files, logs) or use a bigger SD card. The events not yet "
           "confirmed stay queued."),
    Reason("interrupted", "The run was cut off: the agent stopped or the box lost power.",
           "Nothing to do: the next sync finishes the job."),
    Reason("internal", "An internal error stopped the run.",
           "Send the details to whoever looks after the box."),
    Reason("box_down", "The box's Moodle did not answer: the learners' work since then was not collected.",
           "Check that the box's Moodle is running (restart the box if needed). Nothing is lost: the "
           "work waits in the box's Moodle and is collected as soon as it answers.", warning=True),
    Reason("box_token_rejected", "The box's Moodle rejected the agent's token: nothing was collected.",
           "Put a valid token of the box's Moodle in the file named by [box] token_file.", warning=True),
    Reason("collection_failed", "The collection from the box's Moodle did not finish: some work was not "
           "collected.", "Look at the details; the next collection tries again (every few minutes).",
           warning=True),
    Reason("course_differs", "The course {course} on the box differs from the school's Moodle.",
           "Make the activities the same on both sides; the work on the differing activities waits "
           "as conflicts until then.", warning=True),
    Reason("course_missing", "The course {course} is missing on the school's Moodle.",
           "Restore the course on the school's Moodle and retry its conflicts, or discard them.", warning=True),
    Reason("conflicts", "{n} events could not be applied and wait as conflicts.",
           "Look at the conflicts under Events waiting: retry them once the cause is fixed, or discard "
           "them.", warning=True, one="{n} event could not be applied and waits as a conflict."),
    Reason("clock_off", "The box's clock is {minutes} minutes off the school's Moodle.",
           "Set the box's time (it sets itself from the network when it can reach a time server).",
           warning=True, one="The box's clock is {minutes} minute off the school's Moodle."),
)}

# Reasons whose sentence has a count: their message ids are plural entries.
COUNTED = {"conflicts": "n", "clock_off": "minutes"}


def reason(code: str, **values: Any) -> dict[str, Any]:
    return {"code": code, **values}


def of_collection(collected: dict[str, Any] | None, stored: list[dict[str, Any]] | None = None) -> list[dict]:
    """The warning of a sync whose collection did not complete (None: no [box])."""
    if not collected or collected.get("status") == Run.COMPLETED:
        return []
    if collected.get("status") == Run.SKIPPED_OFFLINE:
        return [reason("box_down")]
    for r in stored or []:
        if TABLE.get(r.get("code", "")) is not None and TABLE[r["code"]].warning:
            return [r]
    return [reason("collection_failed")]


def collection_reasons(row: Run) -> list[dict[str, Any]]:
    """The stored reasons of the collection a sync started with."""
    run_id = (row.collected or {}).get("run")
    found = Run.select(Run.reasons).where(Run.id == run_id).first() if run_id else None
    return list(found.reasons or []) if found is not None else []


def warnings_of(row: Run, collection_reasons: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """What a sync (or verify) that did its work leaves for a teacher to look at."""
    found = of_collection(row.collected, collection_reasons)
    for c in row.courses or []:
        outcome = str(c.get("outcome", ""))
        if c.get("differs"):
            found.append(reason("course_differs", course=c.get("shortname")))
        elif outcome.startswith("missing on the server"):
            found.append(reason("course_missing", course=c.get("shortname")))
    if row.conflicts:
        found.append(reason("conflicts", n=row.conflicts))
    if row.clock_offset_s is not None and abs(row.clock_offset_s) > MAX_CLOCK_OFFSET_S:
        found.append(reason("clock_off", minutes=round(abs(row.clock_offset_s) / 60)))
    return found


def of_run(row: Run) -> list[dict[str, Any]]:
    """Every reason of a finished run, failures first; a failure with nothing
    stored (an older row, a skipped scheduled sync) gets its status's."""
    stored = [r for r in (getattr(row, "reasons", None) or []) if r.get("code") in TABLE]
    if row.status == Run.RUNNING:
        return []
    if not stored:
        if row.status == Run.SKIPPED_OFFLINE:
            stored = [reason("server_unreachable")]
        elif row.status == Run.INTERRUPTED:
            stored = [reason("interrupted")]
        elif row.status == Run.FAILED:
            stored = [reason("internal")] if row.kind != COLLECT else [reason("collection_failed")]
    if row.kind == COLLECT:
        return stored
    codes = {r["code"] for r in stored}
    found = getattr(row, "warnings", None)  # stored when the run ended (version 11)
    if found is None:  # an older row, or one that died with its process
        found = warnings_of(row, collection_reasons(row) if row.collected else None)
    return stored + [w for w in found if w["code"] not in codes]


def words(r: dict[str, Any]) -> tuple[str, str]:
    """The English sentence and advice of a reason (the CLI and the e-mail)."""
    entry = TABLE.get(r.get("code", ""), TABLE["internal"])
    values = {k: v for k, v in r.items() if k != "code"}
    sentence = entry.one if entry.one and values.get(COUNTED.get(entry.code, "")) == 1 else entry.sentence
    try:
        return sentence.format(**values), entry.advice
    except (KeyError, IndexError):
        return entry.sentence, entry.advice
