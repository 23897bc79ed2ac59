"""One run's connection to the server and what it learnt of it (the
:class:`Run`): sending calls batched, settling their results, and the
look-ups and enrolment checks that the push waits for. The sync (agent/sync.py)
and the verify (agent/verify.py) both work through it."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import peewee as pw

from ..store import known
from ..config import Config
from ..store.db import Event, Secret, database, iso, utcnow
from ..moodle import BATCH_FUNCTION, CallResult, MoodleClient, MoodleError, TokenRejected, Unreachable
from .plan import Call, Knowledge, Plan, grade_problem
from ..runs import Interrupted, Record
from ..rights import OPTIONAL_RIGHTS, off_refused

log = logging.getLogger(__name__)

# A Retry-After longer than this ends the run instead; the next run resumes.
MAX_RETRY_WAIT_S = 120.0
MAX_RETRIES = 3
LOOKUP_CHUNK = 100

Settle = Callable[[Call, CallResult], "Exception | None"]

LOOKUP = "core_user_get_users_by_field"
# The enrolment check: one learner's profile in one course, with their roles
# there; it costs what the box's learners cost, whatever the course holds.
PROFILES = "core_user_get_course_user_profiles"
# A service set up for an older agent may lack PROFILES: the check then reads
# the course's participants (ids only), which grows with the course.
ENROLLED = "core_enrol_get_enrolled_users"


@dataclass
class Run:
    """One run's connection to the server and what it learnt of it."""

    config: Config
    client: MoodleClient
    rec: Record
    force: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    functions: set[str] = field(default_factory=set)
    knowledge: Knowledge = field(default_factory=Knowledge)
    secrets_erased: bool = False
    direction: str = "up"  # [sync] direction / the page's setting, read once when the run starts
    confirmed: list[int] | None = None  # while a batch is settled: its events confirmed, written at its end
    skipped_now: set[str] = field(default_factory=set)  # the optional features this run named as off

    @property
    def user_ids(self) -> dict[str, int]:
        return self.knowledge.ids

    @property
    def site(self) -> str:
        """Whose facts the box's memory holds (agent/store/known.py)."""
        return self.config.moodle.url

    @property
    def batch_size(self) -> int:
        """Calls per request: one each when the service cannot batch."""
        return self.config.agent.batch_size if BATCH_FUNCTION in self.functions else 1

    @property
    def read_size(self) -> int:
        """Queued events are read a multiple of this at a time: at least a
        look-up's worth, so that small batches do not multiply the look-ups."""
        return max(self.config.agent.batch_size, LOOKUP_CHUNK)

    def check_stop(self) -> None:
        if self.stop.is_set():
            raise Interrupted()

    # -- writing outcomes ----------------------------------------------------

    def mark_sent(self, ids: list[int]) -> None:
        if not ids:
            return
        if self.confirmed is not None:
            self.confirmed.extend(ids)
            return
        with database.obj.atomic():
            Event.update(status=Event.SENT, sent_at=iso(utcnow()), sync_id=self.rec.row.id, last_error=None,
                         attempts=Event.attempts + 1).where(Event.id.in_(ids)).execute()
            if Secret.delete().where(Secret.event.in_(ids)).execute():
                self.secrets_erased = True
        self.rec.row.events_sent += len(ids)

    def mark_conflicts(self, reasons: dict[int, str]) -> None:
        """Events the server cannot take, each with its reason, in one transaction."""
        if not reasons:
            return
        by_reason: dict[str, list[int]] = {}
        for event_id, reason in reasons.items():
            by_reason.setdefault(reason[:1000], []).append(event_id)
        with database.obj.atomic():
            for reason, ids in by_reason.items():
                Event.update(status=Event.CONFLICT, last_error=reason, sync_id=self.rec.row.id,
                             attempts=Event.attempts + 1).where(Event.id.in_(ids)).execute()
        self.rec.row.conflicts += len(reasons)

    def write(self, plan: Plan) -> None:
        """A chunk's conflicts and its events needing nothing: one commit."""
        if plan.conflicts or plan.done:
            with database.obj.atomic():
                self.mark_conflicts(plan.conflicts)
                self.mark_sent(plan.done)

    # -- sending ------------------------------------------------------------

    def push(self, calls: list[Call], settle: Settle | None = None) -> None:
        """Send calls, batched when the service allows; every call gets a result."""
        settle = settle or self.settle
        pending = list(calls)
        while pending:
            self.check_stop()
            answered = self.send_and_settle(pending[:self.batch_size], settle)
            # The batch stops at its first error: the rest go in the next one.
            pending = pending[answered:]

    def send_and_settle(self, chunk: list[Call], settle: Settle) -> int:
        """One request, its results committed at once; returns how many of
        its calls have a result (Moodle stops a batch at its first error)."""
        results = self.send_chunk(chunk)
        stop_error = None
        counted = self.rec.snapshot()
        try:
            with database.obj.atomic():
                # The batch's confirmed events in one statement, not one each.
                self.confirmed = []
                try:
                    for call, result in zip(chunk, results):
                        stop_error = settle(call, result)
                        if stop_error:
                            break
                finally:
                    confirmed, self.confirmed = self.confirmed, None
                self.mark_sent(confirmed)
                self.rec.save()
        except pw.DatabaseError:
            self.rec.restore(counted)  # not committed: the history must not count it either
            raise
        if stop_error:  # raised after the commit: what was confirmed stays sent
            raise stop_error
        return len(results)

    def send_chunk(self, chunk: list[Call]) -> list[CallResult]:
        for attempt in range(MAX_RETRIES + 1):
            try:
                if len(chunk) == 1:  # no batch around a single call
                    try:
                        return [CallResult(True, data=self.client.call(chunk[0].function, chunk[0].args))]
                    except TokenRejected:
                        raise
                    except MoodleError as exc:
                        return [CallResult(False, error=exc)]
                results = self.client.batch([(c.function, c.args) for c in chunk])
                if not results:
                    raise Unreachable("the server answered an empty batch", "bad_answer")
                return results
            except Unreachable as exc:
                wait = exc.retry_after
                if wait is None or wait > MAX_RETRY_WAIT_S or attempt == MAX_RETRIES:
                    raise
                log.info("server asked to retry after %.0f s (%s)", wait, exc.reason)
                if self.stop.wait(wait):
                    raise Interrupted() from None
        raise AssertionError("unreachable")

    def settle(self, call: Call, result: CallResult) -> Exception | None:
        """Record one call's result; return the error that must end the run, if any."""
        if result.ok:
            if call.function in OPTIONAL_RIGHTS:
                self.optional_right(call.function, granted=True)
            problem = grade_problem(call, result.data)
            if problem:
                self.mark_conflicts(dict.fromkeys(call.events, problem))
                return None
            self.mark_sent(call.events)
            self.rec.actions[call.kind] += call.count
            k = self.knowledge
            if call.creates_user:
                uid = int(result.data[0]["id"])
                k.ids[call.creates_user] = uid
                k.looked_up.add(call.creates_user)
                k.new.add(uid)
                known.confirm_users(self.site, {call.creates_user: uid})
            if call.enrols is not None:
                course = int(call.args["enrolments"][0]["courseid"])
                k.enrolled.setdefault(course, set()).add(call.enrols)
                k.checked.add((course, call.enrols))
                known.confirm_enrolments(self.site, [(course, call.enrols)])
            return None
        error = result.error
        assert error is not None
        fatal = fatal_error(error)
        if fatal:
            return fatal
        if call.enrols is not None:
            # Refused for an account the box thought it knew (deleted?): look it up next time.
            known.forget_user_ids(self.site, [call.enrols])
        reason = f"the server refused {error.function}: {error.message} ({error.errorcode})"
        right = OPTIONAL_RIGHTS.get(call.function)
        if right is not None and error.errorcode == "nopermissions":
            # An optional right the school withheld: its feature is off, the rest goes on (agent/rights.py).
            reason = f"skipped: {off_refused(right)}"
            self.optional_right(call.function, granted=False)
        self.mark_conflicts(dict.fromkeys(call.events, reason))
        return None

    def name_skipped(self, line: str) -> None:
        """An optional feature off (agent/rights.py): the run's errors say so once."""
        if line not in self.skipped_now:
            self.skipped_now.add(line)
            self.rec.errors.append(f"skipped: {line}")

    def optional_right(self, function: str, granted: bool) -> None:
        """Remember for check and the page whether the account holds an optional right; the run's
        errors name what it skipped, once per run."""
        from ..store import settings

        if not granted:
            self.name_skipped(off_refused(OPTIONAL_RIGHTS[function]))
        refused = set(settings.get(self.config, "rights_refused") or [])
        if granted == (function in refused):
            settings.put(rights_refused=sorted(refused ^ {function}))

    # -- what the server knows ----------------------------------------------

    def remember(self) -> None:
        """Start from the box's facts still within their age (agent/store/known.py);
        --force asks the server everything again."""
        if self.force:
            return
        k = self.knowledge
        known.forget_old(self.site)
        trusted, stale = known.users(self.site)
        for username, uid in trusted.items():
            k.ids.setdefault(username, uid)
        if PROFILES in self.functions:  # only its answer names the account
            k.stale.update({u: uid for u, uid in stale.items() if u not in k.ids})
        for course_id, uids in known.trusted_enrolments(self.site).items():
            k.enrolled.setdefault(course_id, set()).update(uids)

    def resolve_users(self, usernames: set[str]) -> None:
        """Look up, now, the usernames this run has not looked up yet, a
        hundred per call. Always the server's answer, never the box's facts:
        verify relies on it to find an account made again under a new id."""
        todo = sorted(u for u in usernames if u not in self.knowledge.looked_up)
        for start in range(0, len(todo), LOOKUP_CHUNK):
            asked = todo[start:start + LOOKUP_CHUNK]
            answer = self.client.call(LOOKUP, lookup_args(asked))
            with database.obj.atomic():
                self.learn_users(asked, answer)

    def learn_users(self, asked: list[str], answer: Any) -> None:
        """A look-up's answer: the ids of the usernames found; the others are
        not on the server."""
        wanted = set(asked)
        found = {str(u["username"]): int(u["id"]) for u in answer or []
                 if isinstance(u, dict) and u.get("username") in wanted}
        k = self.knowledge
        k.looked_up.update(asked)
        for username in asked:
            if username in found:
                k.ids[username] = found[username]
            else:
                k.ids.pop(username, None)
        known.confirm_users(self.site, found)
        known.forget_users(self.site, [u for u in asked if u not in found])

    def learn_profiles(self, pairs: list[tuple[int, int, str]], answer: Any) -> None:
        """An enrolment check's answer: each asked user's profile in the asked
        course, with their roles there (none: not enrolled). No profile, or
        one under another username: the id is not that account any more."""
        profiles = {int(p["id"]): p for p in answer or [] if isinstance(p, dict) and "id" in p}
        k = self.knowledge
        users, enrolled, not_enrolled, gone = {}, [], [], []
        for course, uid, username in pairs:
            profile = profiles.get(uid)
            k.stale.pop(username, None)
            if profile is None or str(profile.get("username")) != username:
                gone.append(username)
                continue
            users[username] = uid
            k.ids.setdefault(username, uid)
            k.checked.add((course, uid))
            if profile.get("roles"):
                k.enrolled.setdefault(course, set()).add(uid)
                enrolled.append((course, uid))
            else:
                k.enrolled.get(course, set()).discard(uid)
                not_enrolled.append((course, uid))
        for username in gone:
            # Asked again, unless this run looked it up already: then it is gone.
            k.ids.pop(username, None)
        known.confirm_users(self.site, users)
        known.forget_users(self.site, gone)
        known.confirm_enrolments(self.site, enrolled)
        known.forget_enrolments(self.site, not_enrolled)

    def learn_participants(self, course: int, pairs: list[tuple[int, int, str]], answer: Any) -> None:
        """The older check's answer: the ids of everyone enrolled in the
        course. Kept for the run (the course is not read twice); only the
        asked learners' enrolments are remembered."""
        ids = {int(u["id"]) for u in answer or [] if isinstance(u, dict) and "id" in u}
        k = self.knowledge
        k.listed.add(course)
        k.enrolled[course] = ids
        for _, _, username in pairs:
            k.stale.pop(username, None)  # this answer names no one: an old id is looked up
        known.confirm_enrolments(self.site, [(course, uid) for _, uid, _ in pairs if uid in ids])
        known.forget_enrolments(self.site, [(course, uid) for _, uid, _ in pairs if uid not in ids])


def lookup_args(usernames: list[str]) -> dict:
    return {"field": "username", "values": usernames}


def fatal_error(error: MoodleError) -> Exception | None:
    """The error that ends the run, not just one call: a rejected token or a
    passing server fault. None for an error that settles only its call."""
    if isinstance(error, TokenRejected):
        return error
    if error.transient:
        return Unreachable(f"{error.function}: {error.message}", "server")
    return None
