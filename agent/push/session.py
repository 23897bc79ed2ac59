"""One run's connection to the server and what it learnt of it (the
:class:`Session`), and the settling of what the server answered: each answered
request becomes a :class:`Settlement` (the events sent, the conflicts, the
counters, what was learnt of the server) that the caller commits in one
transaction. The sync (agent/sync.py) and the verify (agent/verify.py) both
work through it; the connection (agent/moodle/) sends the calls."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import peewee as pw

from ..store import known
from ..config import Config
from ..kinds import LOOKUP, PROFILES
from ..mapping import Mappings
from ..store.db import Event, Secret, database, iso, utcnow
from ..moodle import CallResult, MoodleClient, MoodleError, TokenRejected, Unreachable
from .plan import Call, Knowledge, Plan, grade_problem, warnings_problem
from ..runs import Interrupted, Record
from ..rights import OPTIONAL_RIGHTS, REFUSED_KEY, off_refused

log = logging.getLogger(__name__)

LOOKUP_CHUNK = 100


@dataclass
class Settlement:
    """What one answered request settles, written by :meth:`Session.commit` in
    one transaction. The facts learnt are the last word per account and
    enrolment (in the request's order)."""

    sent: list[int] = field(default_factory=list)
    conflicts: dict[int, str] = field(default_factory=dict)
    actions: Counter = field(default_factory=Counter)
    users: dict[str, int | None] = field(default_factory=dict)  # username -> id confirmed, or None: not there
    enrolments: dict[tuple[int, int], bool] = field(default_factory=dict)  # (course, user id) -> enrolled?
    stale_ids: list[int] = field(default_factory=list)  # ids refused: looked up again next time
    rights: dict[str, bool] = field(default_factory=dict)  # optional function -> the account holds its right?
    retry: list[Call] = field(default_factory=list)  # a grades call refused as a whole, one per student: sent next
    fatal: Exception | None = None  # what ends the run, raised once the rest is committed


@dataclass
class Session:
    """One run's connection to the server (and to the box's Moodle, for the
    way down) and what it learnt of them."""

    config: Config
    client: MoodleClient  # the server's connection
    rec: Record
    force: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    box: MoodleClient | None = None  # the box's Moodle's connection, shared by the collection and the way down
    knowledge: Knowledge = field(default_factory=Knowledge)
    mappings: Mappings = field(default_factory=Mappings)  # the box's activities to the server's, once per course
    secrets_erased: bool = False
    direction: str = "up"  # [sync] direction / the page's setting, read once when the run starts
    skipped_now: set[str] = field(default_factory=set)  # the optional features this run named as off
    # The optional functions the server refused (the rights_refused setting), read at the first answer
    # about one and kept for the run: only this run writes it meanwhile.
    refused_rights: set[str] | None = None

    def __post_init__(self) -> None:
        self.client.stop = self.stop  # a wait for Retry-After ends with the run
        if self.box is not None:
            self.box.stop = self.stop

    @property
    def functions(self) -> frozenset[str]:
        """The server's functions for this token (after the online check)."""
        return self.client.site_info().functions

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
        return self.client.batch_size

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
        """Events the server confirmed (or that needed nothing), in one statement."""
        if not ids:
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

    def commit(self, s: Settlement) -> None:
        """One answered request's outcome, its history row with it: one commit.
        Its fatal error, if any, is raised after: what was confirmed stays sent."""
        counted = self.rec.snapshot()
        try:
            with database.obj.atomic():
                self.mark_sent(s.sent)
                self.mark_conflicts(s.conflicts)
                self.rec.actions.update(s.actions)
                known.confirm_users(self.site, {u: uid for u, uid in s.users.items() if uid is not None})
                known.forget_users(self.site, [u for u, uid in s.users.items() if uid is None])
                known.forget_user_ids(self.site, s.stale_ids)
                known.confirm_enrolments(self.site, [pair for pair, yes in s.enrolments.items() if yes])
                known.forget_enrolments(self.site, [pair for pair, yes in s.enrolments.items() if not yes])
                for function, granted in s.rights.items():
                    self.optional_right(function, granted)
                self.rec.save()
        except pw.DatabaseError:
            self.rec.restore(counted)  # not committed: the history must not count it either
            raise
        if s.fatal is not None:
            raise s.fatal

    # -- settling what the server answered ------------------------------------

    def settle(self, call: Call, result: CallResult, s: Settlement) -> bool:
        """One call's result into the settlement; False when it ends the run
        (``s.fatal``): the calls after it are not settled."""
        if result.ok:
            if call.function in OPTIONAL_RIGHTS:
                s.rights[call.function] = True
            problem = grade_problem(call, result.data) or warnings_problem(call, result.data)
            if problem and call.split():
                s.retry += call.split()
                return True
            if problem:
                s.conflicts.update(dict.fromkeys(call.events, problem))
                return True
            s.sent += call.events
            s.actions[call.kind] += call.count
            k = self.knowledge
            if call.creates_user:
                uid = int(result.data[0]["id"])
                k.ids[call.creates_user] = uid
                k.looked_up.add(call.creates_user)
                k.new.add(uid)
                s.users[call.creates_user] = uid
            if call.enrols is not None:
                course = int(call.args["enrolments"][0]["courseid"])
                k.enrolled.setdefault(course, set()).add(call.enrols)
                k.checked.add((course, call.enrols))
                s.enrolments[(course, call.enrols)] = True
            return True
        error = result.error
        assert error is not None
        s.fatal = fatal_error(error)
        if s.fatal is not None:
            return False
        if call.enrols is not None:
            # Refused for an account the box thought it knew (deleted?): look it up next time.
            s.stale_ids.append(call.enrols)
        if call.split():  # which grade the server refused is not said: each is sent on its own
            log.info("%s refused %d grades at once: sending them one by one", error.function, len(call.events))
            s.retry += call.split()
            return True
        reason = f"the server refused {error.function}: {error.message} ({error.errorcode})"
        right = OPTIONAL_RIGHTS.get(call.function)
        if right is not None and error.errorcode == "nopermissions":
            # An optional right the school withheld: its feature is off, the rest goes on (agent/rights.py).
            reason = f"skipped: {off_refused(right)}"
            s.rights[call.function] = False
        s.conflicts.update(dict.fromkeys(call.events, reason))
        return True

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
        if self.refused_rights is None:
            self.refused_rights = set(settings.get(self.config, REFUSED_KEY) or [])
        if granted == (function in self.refused_rights):
            self.refused_rights ^= {function}
            settings.put(**{REFUSED_KEY: sorted(self.refused_rights)})

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
            s = Settlement()
            self.learn_users(asked, answer, s)
            self.commit(s)

    def learn_users(self, asked: list[str], answer: Any, s: Settlement) -> None:
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
        s.users.update({u: found.get(u) for u in asked})

    def learn_profiles(self, pairs: list[tuple[int, int, str]], answer: Any, s: Settlement) -> None:
        """An enrolment check's answer: each asked user's profile in the asked
        course, with their roles there (none: not enrolled). No profile, or
        one under another username: the id is not that account any more."""
        profiles = {int(p["id"]): p for p in answer or [] if isinstance(p, dict) and "id" in p}
        k = self.knowledge
        gone = []
        for course, uid, username in pairs:
            profile = profiles.get(uid)
            k.stale.pop(username, None)
            if profile is None or str(profile.get("username")) != username:
                gone.append(username)
                continue
            s.users[username] = uid
            k.ids.setdefault(username, uid)
            k.checked.add((course, uid))
            if profile.get("roles"):
                k.enrolled.setdefault(course, set()).add(uid)
                s.enrolments[(course, uid)] = True
            else:
                k.enrolled.get(course, set()).discard(uid)
                s.enrolments[(course, uid)] = False
        for username in gone:
            # Asked again, unless this run looked it up already: then it is gone.
            k.ids.pop(username, None)
            s.users[username] = None

    def learn_participants(self, course: int, pairs: list[tuple[int, int, str]], answer: Any,
                           s: Settlement) -> None:
        """The older check's answer: the ids of everyone enrolled in the
        course. Kept for the run (the course is not read twice); only the
        asked learners' enrolments are remembered."""
        ids = {int(u["id"]) for u in answer or [] if isinstance(u, dict) and "id" in u}
        k = self.knowledge
        k.listed.add(course)
        k.enrolled[course] = ids
        for _, _, username in pairs:
            k.stale.pop(username, None)  # this answer names no one: an old id is looked up
        s.enrolments.update({(course, uid): uid in ids for _, uid, _ in pairs})


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
