"""A page's learners' completion states and grades on the box's Moodle:
the calls that read them, and the few fields kept of each answer (the
rest is dropped at once, so that a page's reads never sit in memory whole).

A course of one page in a full collection has its grades in one call
(userid=0); otherwise each learner's go with their completion states.
"""

from __future__ import annotations

from typing import Any, Iterator

from ..kinds import COMPLETION_STATES, GRADE_ITEMS
from ..moodle import CallResult
from .diff import Learner
from .page import Page

STATUS_KEYS = ("cmid", "state", "timecompleted", "overrideby")
ITEM_KEYS = ("cmid", "graderaw", "grademin", "grademax", "gradedategraded", "idnumber")


def calls(page: Page, whole: bool) -> list[tuple[str, dict[str, Any]]]:
    """The reads of the page's learners to read; ``whole``: the course's grades in one call."""
    box_id = page.box.id
    wanted: list[tuple[str, dict[str, Any]]] = []
    if whole:
        wanted.append((GRADE_ITEMS, {"courseid": box_id, "userid": 0}))
    for u in page.reading:
        wanted.append((COMPLETION_STATES, {"courseid": box_id, "userid": u.userid}))
        if not whole:
            wanted.append((GRADE_ITEMS, {"courseid": box_id, "userid": u.userid}))
    return wanted


def take(page: Page, whole: bool, results: Iterator[CallResult]) -> list[str]:
    """The page's answers, in the order of :func:`calls`, kept in the page;
    the reads the box's Moodle refused, named."""
    problems: list[str] = []
    if whole:
        problems += _grades(page, next(results), None)
    for u in page.reading:
        result = next(results)
        if result.ok:
            statuses = (result.data or {}).get("statuses") if isinstance(result.data, dict) else None
            page.statuses[u.userid] = [{k: s.get(k) for k in STATUS_KEYS} for s in statuses or []
                                       if isinstance(s, dict)]
        else:
            assert result.error is not None
            problems.append(f"the completion states of {u.username} could not be read: "
                            f"{result.error.message} ({result.error.errorcode})")
        if not whole:
            problems += _grades(page, next(results), u)
    return problems


def _grades(page: Page, result: CallResult, u: Learner | None) -> list[str]:
    if result.ok:
        reports = (result.data or {}).get("usergrades") if isinstance(result.data, dict) else None
        page.usergrades += [{"userid": r.get("userid"), "gradeitems": [
            {k: i.get(k) for k in ITEM_KEYS} for i in r.get("gradeitems") or [] if isinstance(i, dict)]}
            for r in reports or [] if isinstance(r, dict)]
        return []
    assert result.error is not None
    if u is not None:
        page.statuses.pop(u.userid, None)  # read again next time, grades with it
    whose = f"of {u.username} " if u is not None else ""
    return [f"the grades {whose}could not be read: {result.error.message} ({result.error.errorcode})"]
