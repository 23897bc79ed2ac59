"""One collection from the box's own Moodle ([box]): what the learners did
there, queued as ordinary events for the next sync.

For every course kept on the box (found on the box's Moodle by its short
name, the same on both sides), through the box's web services and the same
client as the school's, the participants are read in pages
(core_enrol_get_enrolled_users with limitfrom/limitnumber, by id), and each
page is read, diffed and committed before the next, so that memory stays
bounded whatever the course (agent/box/page.py). Small courses share
requests: the first pages of the first few ride with the courses' own
call, and the reads of courses of one page go in the same batches
(agent/box/progress.py), each course still committed on its own:
- a full collection (before every sync, so that a teacher's override or
  grade, which moves no learner's access, is not missed) asks the profiles
  and roles, and reads every learner's completion states
  (core_completion_get_activities_completion_status) and grades
  (gradereport_user_get_grade_items: one call with userid=0 for a course of
  one page, else one per learner);
- an incremental one asks only usernames and access times (a page with a
  newcomer is asked again with the profiles) and reads the completion
  states and grades of the learners whose lastcourseaccess moved.

What the box's Moodle sends is checked like what apps send
(agent/box/check.py): a malformed participant or a grade that is not a
finite number is skipped and named once in the row; a grade outside the
activity's range, or removed on the box, is queued as a conflict of its own.

The last collected state is kept in SQLite (Participant, Collected); only
what changed is queued, with event ids derived from the box, the course,
the learner, the activity and the new state (agent/box/diff.py). Each page
is one transaction: its events, its new state and the run's counts commit
together, so a collection cut off at any point and run again queues
nothing twice. A learner new to a course becomes a ``user`` event (created
on the server only if missing there) and an ``enrolment`` event. Completion
and grade events carry the server's course id and the box's cmid
(``data.box_cmid``); the sync maps it to the server's (agent/course_check.py).

Each collection is a run in the history, trigger "collect"; the one a sync
starts with runs inside the sync's lock (:func:`collect_for_sync`). A stop
(SIGTERM to the CLI or the worker) ends it after its current request, as
interrupted.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .. import courses as courses_mod
from . import check, progress
from .profiles import profile_events
from .diff import COMPLETION, GRADE, Learner, completion_changes, grade_changes, grade_idnumbers, to_read
from .page import CHUNK, Known, Page, change_event, holders, known_learners, mark_conflicts, \
    new_keys, newcomer_events, save_page, store_box_course
from ..config import BoxConfig, Config
from ..store.db import BoxActivity, BoxCourse, Collected, Course, Run, database
from ..store.status import box_answered
from ..store.runkinds import BY_SYNC, CLI, COLLECT, COLLECT_KINDS
from ..kinds import KINDS, PARTICIPANTS, PROFILE_FIELDS, box_functions
from ..moodle import CallResult, MoodleClient, Unreachable
from ..moodle.clients import connect_to
from ..store.queue import enqueue
from ..runs import Interrupted, Record, nested_run, recorded_run
from .outcome import CollectionRun, NoBox, box_failure, found_words  # noqa: F401 (NoBox: the CLI's)
from ..learners import finish_pending

log = logging.getLogger(__name__)

# What the box's token's service needs (moodle-sync-agent check lists what it
# lacks): the functions each kind's collection reads (agent/kinds.py).
BOX_FUNCTIONS = box_functions(down=False)
READ_FUNCTIONS = BOX_FUNCTIONS[1:]
# Only what a collection uses of each participant: the answer is a third of the size.
PARTICIPANT_FIELDS = {"name": "userfields",
                      "value": ",".join(("username", *PROFILE_FIELDS, "roles", "lastcourseaccess"))}
# What an incremental collection asks of the learners it knows: whose access
# moved (recording 103: a seventh of the full profiles' bytes).
SLIM_FIELDS = {"name": "userfields", "value": "username,lastcourseaccess"}
# Courses whose first pages are asked together (Collector.first_pages); the
# first few ride with the courses' own call.
PREFETCH_COURSES = 10
# The counts a sync's row keeps of the collection before it: each kind's (agent/kinds.py).
EVENT_KIND = {k.name: k.found for k in KINDS.values()}


@dataclass
class Pending:
    """A page whose completion states and grades are still to read (Collector.settle)."""

    page: Page
    found: Counter  # its course's counts so far
    activities: dict[int, BoxActivity]  # its course's, by the box's cmid
    last: bool  # the course's last page
    whole: bool  # the course's grades in one call (its only page, in a full collection)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # progress.calls, made once

    def __post_init__(self) -> None:
        self.calls = progress.calls(self.page, self.whole)


@dataclass
class Collector:
    """One collection's connection to the box's Moodle and what it found."""

    config: Config
    client: MoodleClient
    rec: Record
    full: bool
    stop: threading.Event
    functions: frozenset[str] = frozenset()
    unreachable: str | None = None
    named: dict[str, tuple[list[str], int]] = field(default_factory=dict)  # bad record -> courses, line

    # -- reading ---------------------------------------------------------------

    def read(self, calls: Sequence[tuple[str, dict[str, Any]]]) -> list[CallResult]:
        return self.client.read_all(calls)

    def check_connection(self) -> bool:
        try:
            info = self.client.site_info()
        except Unreachable as exc:
            self.unreachable = exc.reason
            box_answered(False)
            self.rec.errors.append(f"the box's Moodle does not answer: {exc.reason}")
            return False
        self.functions = info.functions
        box_answered(True, box_site_name=info.site_name)
        return True

    # -- the run -----------------------------------------------------------------

    def run(self) -> None:
        # The box's connection may be the sync's (shared with its way down):
        # this collection's row counts its own bytes.
        self.client.stop = self.stop
        self.rec.traffic.append(self.client.meter())
        try:
            self.rec.status = self.work()
        except Unreachable as exc:
            self.unreachable = exc.reason
            raise

    def work(self) -> str:
        if not self.check_connection():
            return Run.SKIPPED_OFFLINE
        finish_pending(self.config, self.client, self.rec.errors)  # a learner's add or password cut off (issue 19)
        missing = [f for f in READ_FUNCTIONS if f not in self.functions]
        if missing:
            self.rec.errors.append(f"the service of the box's Moodle token lacks {', '.join(missing)}: "
                                   "nothing was collected")
            return Run.FAILED
        pairs, firsts = self.box_courses()
        self.rec.save(phase="collecting", courses_total=len(pairs), courses_done=0)
        for at in range(0, len(pairs), PREFETCH_COURSES):
            group = pairs[at:at + PREFETCH_COURSES]
            firsts.update(self.first_pages([box.id for _, box in group if box.id not in firsts]))
            pending: list[Pending] = []
            for course, box in group:
                self.collect_course(course, box, firsts.pop(box.id, None), pending)
            self.settle(pending)
        return self.rec.final_status()

    @property
    def fields(self) -> dict[str, str]:
        """What a first page asks of each participant (read_page asks a page with a newcomer again)."""
        return PARTICIPANT_FIELDS if self.full else SLIM_FIELDS

    def first_pages(self, box_ids: list[int]) -> dict[int, CallResult]:
        """The first page of participants of a few courses asked in one batch,
        as everything else is: a box of many small courses is read in a few
        requests, not one a course; a few courses at a time (PREFETCH_COURSES)
        keep memory bounded when their pages are full ones."""
        return dict(zip(box_ids, self.read([self.first_page(box_id) for box_id in box_ids])))

    def first_page(self, box_id: int) -> tuple[str, dict[str, Any]]:
        return PARTICIPANTS, self.page_args(box_id, 0, self.page_size, self.fields)

    def box_courses(self) -> tuple[list[tuple[Course, BoxCourse]], dict[int, CallResult]]:
        """Each kept course's counterpart on the box's Moodle, its contents
        read again when it changed there (timemodified or cacherev); and the
        first pages of the first few courses known, asked in the same
        request as the courses (a box's id never changes but for a course
        made again: a page of an id no longer kept is left unused)."""
        kept = list(Course.select().order_by(Course.id))
        known = {b.course_id: b for b in BoxCourse.select()}
        known_ids = [known[c.id].id for c in kept if c.id in known]
        ahead = known_ids[:PREFETCH_COURSES]
        on_box: dict[int, courses_mod.ServerCourse] = {}
        firsts: dict[int, CallResult] = {}
        if known_ids:
            calls = [courses_mod.by_ids(known_ids)]
            calls += [self.first_page(box_id) for box_id in ahead]
            answered = self.client.answers(calls)
            results = next(answered)
            if not results[0].ok:  # as client.call would: the collection cannot go on
                assert results[0].error is not None
                raise results[0].error
            on_box = courses_mod.courses_of(results[0].data)
            firsts = dict(zip(ahead, [*results[1:], *(r for more in answered for r in more)]))
        pairs = []
        for course in kept:
            mine = known.get(course.id)
            theirs = on_box.get(mine.id) if mine is not None else None
            if theirs is None or theirs.shortname != course.shortname:
                try:
                    theirs = courses_mod.fetch_by_shortname(self.client, course.shortname)
                except courses_mod.CourseNotFound:
                    self.rec.courses[course.id] = {"id": course.id, "shortname": course.shortname,
                                                   "outcome": "not on the box's Moodle"}
                    continue
            if mine is None or mine.id != theirs.id or (mine.timemodified, mine.cacherev) != (
                    theirs.timemodified, theirs.cacherev):
                mine = store_box_course(course.id, theirs, courses_mod.fetch_contents(self.client, theirs.id))
            pairs.append((course, mine))
        return pairs, firsts

    # -- one course, page by page ------------------------------------------------

    @property
    def page_size(self) -> int:
        """Participants per page: twenty requests of their reads (1000 with
        the default batch_size), so that memory stays bounded whatever the course."""
        return max(1, self.config.agent.batch_size) * 20

    def collect_course(self, course: Course, box: BoxCourse, first: CallResult | None,
                       pending: list[Pending]) -> None:
        """A course's participants page by page (by id, as Moodle sorts them
        by default), each page read, diffed and committed before the next.
        ``first``: its first page, already asked with the other courses'.
        A course of one page waits in ``pending``: the completion states and
        grades of several small courses are read in the same requests."""
        size, start, after = self.page_size, 0, 0
        found: Counter = Counter()
        # Read once for all the course's pages (box_courses stored them before any page).
        activities = {a.cmid: a for a in BoxActivity.select().where(BoxActivity.box_course == box.id)}
        while True:
            if self.stop.is_set():
                raise Interrupted()
            if first is not None and start == 0:
                entries = self.participants_of(course, first)
            else:
                entries = self.participants(course, box, start, size, self.fields)
            if entries is None:
                return
            last = len(entries) < size
            page = self.read_page(course, box, entries, start, after, last)
            if page is None:
                return
            if last and start == 0:
                pending.append(Pending(page, found, activities, last=True, whole=self.full))
                if sum(len(p.calls) for p in pending) >= size:
                    self.settle(pending)  # a page's worth of reads, as a big course's page
                return
            self.settle([Pending(page, found, activities, last, whole=False)])
            if last:
                return
            after = page.upto if page.upto is not None else after
            start += size

    @staticmethod
    def page_args(box_id: int, start: int, size: int, fields: dict[str, str]) -> dict[str, Any]:
        return {"courseid": box_id, "options": [fields, {"name": "limitfrom", "value": str(start)},
                                                {"name": "limitnumber", "value": str(size)}]}

    def participants(self, course: Course, box: BoxCourse, start: int, size: int,
                     fields: dict[str, str]) -> list | None:
        [result] = self.read([(PARTICIPANTS, self.page_args(box.id, start, size, fields))])
        return self.participants_of(course, result)

    def participants_of(self, course: Course, result: CallResult) -> list | None:
        """A page's answer: its list of participants, or None with the course's error named."""
        if not result.ok:
            assert result.error is not None
            self.course_error(course, f"the box's Moodle refused {result.error.function}: "
                                      f"{result.error.message} ({result.error.errorcode})")
            return None
        if not isinstance(result.data, list):
            self.course_error(course, f"the box's Moodle answered {PARTICIPANTS} with no list of participants")
            return None
        return result.data

    def read_page(self, course: Course, box: BoxCourse, entries: list, start: int, after: int,
                  last: bool) -> Page | None:
        """A page of participants checked (agent/box/check.py), and who of
        them to read the completion states and grades of. An incremental
        collection asks only ids, usernames and access times; a page with a
        newcomer is asked again with the profiles."""
        learners, problems, skipped = check.participants(entries)
        known = known_learners(box.id, sorted({u.userid for u in learners} | skipped))
        if not self.full and any(u.userid not in known for u in learners):
            again = self.participants(course, box, start, self.page_size, PARTICIPANT_FIELDS)
            if again is None:
                return None
            learners, problems, skipped = check.participants(again)
            known = known_learners(box.id, sorted({u.userid for u in learners} | skipped))
        elif not self.full:
            # Known learners keep the profile and roles collected (a full collection reads them again).
            learners = [Learner(u.userid, u.username, known[u.userid].profile, known[u.userid].roles,
                                u.lastcourseaccess) for u in learners]
        # Only a username new to its id can clash with one collected before.
        fresh = sorted({u.username for u in learners
                        if u.userid not in known or known[u.userid].username != u.username})
        learners, clashes = check.unique_usernames(learners, holders(box.id, fresh))
        for problem in problems + clashes:
            self.name_once(course, problem)
        ids = [u.userid for u in learners] + sorted(skipped)
        access = {uid: p.lastcourseaccess for uid, p in known.items()}
        recheck = {uid for uid, p in known.items() if isinstance(p, Known) and p.recheck}
        reading = to_read(learners, access, self.full, recheck)
        return Page(course, box, learners, access, reading, self.box_now(), after,
                    None if last else max(ids, default=after), seen=set(ids), known=known)

    def settle(self, pending: list[Pending]) -> None:
        """The pages' reads sent together, request after request, each answer
        kept only in the few fields used, and each page stored (one commit)
        as soon as its own answers are in: reads never sit in memory whole."""
        calls = [call for p in pending for call in p.calls]
        results = (result for answered in self.client.answers(calls) for result in answered)
        for p in pending:
            for problem in progress.take(p.page, p.whole, results):
                self.course_error(p.page.course, problem)
            self.store(p.page, p.found, p.last, p.activities)
        pending.clear()

    def name_once(self, course: Course, problem: str) -> None:
        """A bad record, named once in the collection's row: met again in
        another course, that course joins the line."""
        if problem not in self.named:
            self.named[problem] = ([course.shortname], len(self.rec.errors))
            self.rec.errors.append(f"course {course.shortname}: {problem}")
            return
        shortnames, at = self.named[problem]
        if course.shortname not in shortnames:
            shortnames.append(course.shortname)
            self.rec.errors[at] = f"courses {', '.join(shortnames)}: {problem}"

    def box_now(self) -> float | None:
        """The box's Moodle's clock, from its last answer's Date header."""
        date = self.client.server_date
        return date.timestamp() if date is not None else None

    def course_error(self, course: Course, problem: str) -> None:
        self.rec.errors.append(f"course {course.shortname}: {problem}")
        self.rec.courses.setdefault(course.id, {"id": course.id, "shortname": course.shortname,
                                                "outcome": "not collected"})

    def store(self, page: Page, found: Counter, last: bool, activities: dict[int, BoxActivity]) -> None:
        """One page's events, its new collected state and the run's counts: one commit.
        ``activities``: the course's, by the box's cmid."""
        if self.stop.is_set():
            raise Interrupted()
        box_name = self.config.agent.box_name
        previous: dict[str, dict[tuple[str, int], float | None]] = {COMPLETION: {}, GRADE: {}}
        graded_ids = {r.get("userid") for r in page.usergrades}
        names = sorted({u.username for u in page.learners if u.userid in graded_ids}
                       | {u.username for u in page.reading})
        for start in range(0, len(names), CHUNK):
            for row in Collected.select().where(Collected.box_course == page.box.id,
                                                Collected.username.in_(names[start:start + CHUNK])):
                previous[row.kind][(row.username, row.box_cmid)] = row.value
        by_id = {u.userid: u.username for u in page.learners}
        # A learner whose completion states could not be read: their grades wait with them.
        reading = {u.userid for u in page.reading}
        graded = {uid: name for uid, name in by_id.items() if uid in page.statuses or uid not in reading}
        changes, refused = grade_changes(page.usergrades, graded, previous[GRADE])
        for problem in refused:
            self.name_once(page.course, problem)
        for u in page.reading:
            if u.userid in page.statuses:
                changes += completion_changes(u.username, page.statuses[u.userid], previous[COMPLETION])
        changed = [(c, change_event(box_name, page, c, activities)) for c in changes]
        events = [*newcomer_events(box_name, page), *(e for _, e in changed)]
        idnumbers = grade_idnumbers(page.usergrades)
        db = database.obj
        with db.atomic("IMMEDIATE"):  # read, then write
            counted = self.rec.snapshot()
            try:
                events += profile_events(box_name, page.learners)  # issue 19: profiles follow
                fresh = new_keys([e.key for e in events])
                if events:
                    enqueue(events, config=self.config)
                conflicts = {e.key: c.problem for c, e in changed if c.problem and e.key in fresh}
                self.rec.row.conflicts += mark_conflicts(conflicts, self.rec.row.id)
                save_page(page, changes, idnumbers, activities)
                counts = Counter(EVENT_KIND[e.type] for e in events if e.key in fresh and e.key not in conflicts)
                self.rec.actions.update(counts)
                found.update(counts)
                self.rec.actions["learners_read"] += len(page.reading)
                self.rec.courses[page.course.id] = {"id": page.course.id, "shortname": page.course.shortname,
                                                    "outcome": found_words(found)}
                if last:
                    self.rec.row.courses_done += 1
                self.rec.save()
            except BaseException:
                self.rec.restore(counted)  # not committed: the history must not count it either
                raise


def run_collect(config: Config, full: bool = False, *, trigger: str = CLI, stop: threading.Event | None = None,
                client: MoodleClient | None = None,
                on_started: Callable[[Run], None] | None = None) -> CollectionRun:
    """Run one collection (with the run lock) and return its row. Raises
    NoBox without [box], AlreadyRunning or SyncDisabled before anything is recorded."""
    box = _box(config)
    collectors: list[Collector] = []
    with recorded_run(config, COLLECT, trigger, COLLECT_KINDS, force=full, on_started=on_started,
                      describe=box_failure) as rec:
        client = client or connect_to(box, config)
        collectors.append(Collector(config, client, rec, full, stop or threading.Event()))
        collectors[0].run()
    return CollectionRun(rec.row, collectors[0].unreachable if collectors else None)


def collect_for_sync(config: Config, stop: threading.Event | None = None,
                     client: MoodleClient | None = None) -> dict[str, Any] | None:
    """The full collection a sync starts with, inside the sync's lock; what
    it found, for the sync's row. None without [box]. ``client``: the box's
    connection of the sync (its way down uses it too)."""
    if config.box is None:
        return None
    client = client or connect_to(config.box, config)
    with nested_run(config, COLLECT, BY_SYNC, COLLECT_KINDS, force=True, describe=box_failure) as rec:
        Collector(config, client, rec, True, stop or threading.Event()).run()
    log.info("collection before the sync: %s", rec.row.status)
    return CollectionRun(rec.row).summary()


def _box(config: Config) -> BoxConfig:
    if config.box is None:
        raise NoBox(config)
    return config.box


__all__ = ["BOX_FUNCTIONS", "CollectionRun", "NoBox", "collect_for_sync", "run_collect"]
