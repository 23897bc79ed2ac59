"""Full re-check: does the server still hold what the box sent?

Reads back, per course and user, the completion states and grades of every
completion and grade event sent inside the retention window, and puts back
in the queue each one the server no longer matches (say, after the server
was restored from a backup); the next sync sends it again. Only the latest
event per user and activity counts: that is the state the server should
hold. It runs as a sync does (same lock, same history, same error handling),
with trigger "verify".
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

import peewee as pw

from .awards import compare_courses
from .config import Config
from .down.diff import grade_items, server_completions
from .kinds import COMPLETION_STATES, KINDS, is_complete, whole_number
from .store.db import Course, Event, Run, database, iso, utcnow
from .store.runkinds import CLI, VERIFY, VERIFY_KINDS
from .moodle import CallResult, MoodleClient
from .push.plan import Call
from .runs import recorded_run
from .push.session import Session, fatal_error
from .moodle.clients import connect, connect_box
from .sync import check_connection

# What each kind of event is checked against, if it is (agent/kinds.py).
READS = {k.name: k.verify_read for k in KINDS.values() if k.verify_read}
# Moodle keeps grades with five decimals.
GRADE_TOLERANCE = 0.000005


def latest_sent(config: Config, course_id: int | None = None, now: datetime | None = None) -> list[Event]:
    """The latest completion or grade event per course, user and activity, if
    it was sent inside the retention window. One still queued is skipped: the
    next sync sends it anyway."""
    since = iso((now or utcnow()) - timedelta(days=config.agent.retention_days))
    query = Event.select().where(Event.type.in_(list(READS)), Event.status.in_([Event.SENT, Event.QUEUED]))
    if course_id is not None:
        query = query.where(Event.course_id == course_id)
    latest: dict[tuple, Event] = {}
    for event in query.order_by(Event.id).iterator():
        latest[(event.type, event.course_id, event.username, event.cmid)] = event
    return [e for e in latest.values() if e.status == Event.SENT and (e.sent_at or "") >= (since or "")]


def server_values(function: str, data: object) -> dict[int, float | None]:
    """cmid -> completion state, or cmid -> raw grade, from a read's answer,
    checked as the way down checks it (agent/down/diff.py): an entry that is
    not Moodle's (a NaN grade, a string id) is as good as missing, so the
    event is sent again."""
    data = data if isinstance(data, dict) else {}
    if function == COMPLETION_STATES:
        states, _ = server_completions(data.get("statuses"))
        return {cmid: reported.value for cmid, reported in states.items()}
    reports = data.get("usergrades")
    items = [i for ug in reports if isinstance(ug, dict) for i in ug.get("gradeitems") or []] \
        if isinstance(reports, list) else []
    grades, _ = grade_items(items, "")
    ungraded = {whole_number(i.get("cmid")) for i in items if isinstance(i, dict) and i.get("graderaw") is None}
    return {**{c: None for c in ungraded if c is not None},
            **{cmid: reported.value for cmid, reported in grades.items()}}


def mismatch(event: Event, server: dict[int, float | None]) -> str | None:
    """Why the server no longer matches the event, or None when it does."""
    cmid = event.cmid
    if cmid not in server:
        what = "completion state" if event.type == "completion" else "grade item"
        return f"the server has no {what} for activity {cmid}"
    value = server[cmid]
    if event.type == "completion":
        done = is_complete(value)
        if done != event.data["completed"]:
            return f"the server shows activity {cmid} as {'complete' if done else 'not complete'}"
        return None
    if value is None:
        return f"the server holds no grade for activity {cmid}"
    if abs(float(value) - float(event.data["grade"])) > GRADE_TOLERANCE:
        return f"the server holds grade {float(value):g} for activity {cmid}, not {event.data['grade']:g}"
    return None


def requeue(reasons: dict[int, str]) -> int:
    """Back to the queue, the reason kept; only events still marked sent."""
    changed = 0
    with database.obj.atomic():
        for event_id, reason in reasons.items():
            changed += (Event.update(status=Event.QUEUED, last_error=f"verify: {reason}")
                        .where(Event.id == event_id, Event.status == Event.SENT).execute())
    return changed


@dataclass
class Verify:
    """The comparisons of one verify run, counted per course."""

    run: Session
    events: dict[int, Event] = field(default_factory=dict)
    per_course: dict[int, Counter] = field(default_factory=lambda: defaultdict(Counter))

    def work(self, course_id: int | None) -> str:
        run = self.run
        if not check_connection(run):
            return Run.SKIPPED_OFFLINE
        missing = run.client.site_info().lacking(list(READS.values()))
        if missing:
            run.rec.errors.append(f"the token's service lacks {', '.join(missing)}: nothing could be checked")
            return Run.FAILED
        events = latest_sent(run.config, course_id)
        self.events = {e.id: e for e in events}
        groups: dict[tuple[int, str], list[Event]] = defaultdict(list)
        for e in events:
            groups[(e.course_id or 0, e.username)].append(e)  # completions and grades always have a course
        run.rec.save(phase="verifying", events_total=len(events),
                     courses_total=len({cid for cid, _ in groups}), courses_done=0)
        run.resolve_users({username for _, username in groups})
        calls = []
        for (cid, username), group in sorted(groups.items()):
            user_id = run.user_ids.get(username)
            if user_id is None:
                self.not_checked(group, f"user {username!r} is not on the server")
                continue
            for etype, function in READS.items():
                ids = [e.id for e in group if e.type == etype]
                if ids:
                    calls.append(Call(function, {"courseid": cid, "userid": user_id}, ids, "checked"))
        done = 0
        for results in run.client.answers([(c.function, c.args) for c in calls]):
            self.settle(calls[done:done + len(results)], results)
            done += len(results)
        run.rec.courses = {cid: self.outcome(cid, counts) for cid, counts in sorted(self.per_course.items())}
        if run.box is not None:  # course completion and badges, beside the box's Moodle's (agent/awards.py)
            kept = Course.select().where(Course.id == course_id) if course_id is not None else Course.select()
            compare_courses(run, list(kept.order_by(Course.id)), run.box)
        run.rec.save(courses_done=len(run.rec.courses))
        return run.rec.final_status()

    def settle(self, calls: list[Call], results: list[CallResult]) -> None:
        """One request's reads compared with the events they cover; what
        differs queued again, the counts with it: one commit. An error that
        ends the run is raised after it."""
        run, fatal = self.run, None
        counted = run.rec.snapshot()
        try:
            with database.obj.atomic():
                for call, result in zip(calls, results):
                    group = [self.events[i] for i in call.events]
                    if not result.ok:
                        assert result.error is not None
                        fatal = fatal_error(result.error)
                        if fatal:
                            break
                        self.not_checked(group, f"{call.function} failed: {result.error.message} "
                                                f"({result.error.errorcode})")
                        continue
                    server = server_values(call.function, result.data)
                    reasons = {e.id: reason for e in group if (reason := mismatch(e, server))}
                    requeued = requeue(reasons)
                    self.count(group, checked=len(group), matching=len(group) - len(reasons), requeued=requeued)
                run.rec.save()
        except pw.DatabaseError:
            run.rec.restore(counted)  # not committed: the history must not count it either
            raise
        if fatal:
            raise fatal

    def not_checked(self, group: list[Event], why: str) -> None:
        e = group[0]
        self.run.rec.errors.append(f"course {e.course_id}, user {e.username}: {len(group)} event(s) not checked: {why}")
        self.count(group, not_checked=len(group))

    def count(self, group: list[Event], **kinds: int) -> None:
        self.run.rec.actions.update(kinds)
        self.per_course[group[0].course_id or 0].update(kinds)

    def outcome(self, course_id: int, counts: Counter) -> dict:
        course = Course.get_or_none(Course.id == course_id)
        text = f"{counts['checked']} checked, {counts['matching']} matching, {counts['requeued']} queued again"
        if counts["not_checked"]:
            text += f", {counts['not_checked']} not checked"
        return {"id": course_id, "shortname": course.shortname if course else str(course_id), "outcome": text}


def run_verify(config: Config, course_id: int | None = None, *, trigger: str = CLI, stop: threading.Event | None = None,
               client: MoodleClient | None = None,
               on_started: Callable[[Run], None] | None = None) -> Run:
    """Run one full re-check and return its history row (trigger "verify").
    Raises AlreadyRunning or SyncDisabled, as a sync does."""
    with recorded_run(config, VERIFY, trigger, VERIFY_KINDS, on_started=on_started) as rec:
        client = client or connect(config, stop)
        rec.traffic.append(client.traffic)
        stop = stop or threading.Event()
        run = Session(config, client, rec, stop=stop, box=connect_box(config, stop))
        rec.status = Verify(run).work(course_id)
    return rec.row
