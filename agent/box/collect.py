"""One collection from the box's own Moodle ([box]): what the learners did
there, queued as ordinary events for the next sync.

For every course kept on the box (found on the box's Moodle by its short
name, the same on both sides), through the box's web services and the same
client as the school's:
- the participants (core_enrol_get_enrolled_users: usernames, profiles,
  roles, lastcourseaccess) and every learner's grades (one
  gradereport_user_get_grade_items call per course, userid=0);
- the completion states (core_completion_get_activities_completion_status)
  of the learners whose lastcourseaccess moved since the last collection
  (incremental), or of every learner (full: before every sync, so that a
  teacher's override, which moves no learner's access, is not missed).

The last collected state is kept in SQLite (Participant, Collected); only
what changed is queued, with event ids derived from the box, the course,
the learner, the activity and the new state (agent/box/diff.py). Each
course is one transaction: its events, its new state and the run's counts
commit together, so a collection cut off at any point and run again queues
nothing twice. A learner new to a course becomes a ``user`` event (created
on the server only if missing there) and an ``enrolment`` event. Completion
and grade events carry the server's course id and the box's cmid
(``data.box_cmid``); the sync maps it to the server's (agent/sync.py).

Each collection is a run in the history, trigger "collect"; the one a sync
starts with runs inside the sync's lock (:func:`collect_for_sync`).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Sequence

from .. import courses as courses_mod
from ..store import settings
from .diff import COMPLETION, GRADE, Change, Learner, completion_changes, event_key, grade_changes, \
    grade_idnumbers, learner, needs_recheck, to_read
from ..config import BoxConfig, Config
from ..store.db import BoxActivity, BoxCourse, Collected, Course, Event, Participant, SyncRun, database, first_column, \
    iso, utcnow
from ..store.history import COLLECT, COLLECT_KINDS
from ..kinds import KINDS, box_functions, data_of, found_counters
from ..moodle import CallResult, MoodleClient, MoodleError, TokenRejected, Unreachable
from ..store.queue import NewEvent, StorageFull, enqueue
from ..runs import Interrupted, Record, nested_run, recorded_run

log = logging.getLogger(__name__)

# What the box's token's service needs (moodle-sync-agent check lists what it
# lacks): the functions each kind's collection reads (agent/kinds.py).
BOX_FUNCTIONS = box_functions(down=False)
READ_FUNCTIONS = BOX_FUNCTIONS[1:]
# Only what a collection uses of each participant: the answer is a third of the size.
PARTICIPANT_FIELDS = {"name": "userfields",
                      "value": "username,firstname,lastname,email,idnumber,roles,lastcourseaccess"}
# The counts a sync's row keeps of the collection before it: each kind's (agent/kinds.py).
FOUND_KINDS = found_counters()
EVENT_KIND = {k.name: k.found for k in KINDS.values()}


class NoBox(Exception):
    def __init__(self, config: Config):
        super().__init__(f"{config.path}: [box] url is not set: there is no box's Moodle to collect from")


@dataclass
class Collection:
    """A collection's history row, and whether the box's Moodle answered."""

    row: SyncRun
    unreachable: str | None = None

    @property
    def found(self) -> dict[str, int]:
        actions = self.row.actions or {}
        return {kind: int(actions.get(kind, 0)) for kind in FOUND_KINDS}

    def summary(self) -> dict[str, Any]:
        """What a sync's row keeps of it, for the Information dialog."""
        return {"run": self.row.id, "status": self.row.status, **self.found, "errors": list(self.row.errors or [])}


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

    @property
    def batch_size(self) -> int:
        return self.client.batch_size

    # -- reading ---------------------------------------------------------------

    def read(self, calls: Sequence[tuple[str, dict[str, Any]]]) -> list[CallResult]:
        return self.client.read_all(calls)

    def check_connection(self) -> bool:
        try:
            info = self.client.site_info()
        except Unreachable as exc:
            self.unreachable = exc.reason
            settings.put(box_reachable=False)
            self.rec.errors.append(f"the box's Moodle does not answer: {exc.reason}")
            return False
        self.functions = info.functions
        settings.put(box_reachable=True, box_site_name=info.site_name)
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
            return SyncRun.SKIPPED_OFFLINE
        missing = [f for f in READ_FUNCTIONS if f not in self.functions]
        if missing:
            self.rec.errors.append(f"the service of the box's Moodle token lacks {', '.join(missing)}: "
                                   "nothing was collected")
            return SyncRun.FAILED
        pairs = self.box_courses()
        self.rec.save(phase="collecting", courses_total=len(pairs), courses_done=0)
        per_group = max(1, self.batch_size // 2)  # two reads per course in a request
        for start in range(0, len(pairs), per_group):
            self.collect_group(pairs[start:start + per_group])
        return self.rec.final_status()

    def box_courses(self) -> list[tuple[Course, BoxCourse]]:
        """Each kept course's counterpart on the box's Moodle, its contents
        read again when it changed there (timemodified or cacherev)."""
        kept = list(Course.select().order_by(Course.id))
        known = {b.course_id: b for b in BoxCourse.select()}
        on_box = courses_mod.fetch_by_ids(self.client, [known[c.id].id for c in kept if c.id in known])
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
        return pairs

    def collect_group(self, pairs: list[tuple[Course, BoxCourse]]) -> None:
        """A few courses: their participants and grades in one request, then
        the completion states to read, then one commit per course."""
        reads = self.read([call for _, box in pairs for call in (
            ("core_enrol_get_enrolled_users", {"courseid": box.id, "options": [PARTICIPANT_FIELDS]}),
            ("gradereport_user_get_grade_items", {"courseid": box.id, "userid": 0}))])
        plans = []
        for i, (course, box) in enumerate(pairs):
            enrolled, grades = reads[2 * i], reads[2 * i + 1]
            failed = next((r for r in (enrolled, grades) if not r.ok), None)
            if failed is not None:
                assert failed.error is not None
                self.course_error(course, f"the box's Moodle refused {failed.error.function}: "
                                          f"{failed.error.message} ({failed.error.errorcode})")
                continue
            learners = [learner(u) for u in enrolled.data or [] if isinstance(u, dict) and u.get("username")]
            access, recheck = {}, set()
            for p in Participant.select(Participant.userid, Participant.lastcourseaccess, Participant.recheck) \
                    .where(Participant.box_course == box.id):
                access[p.userid] = p.lastcourseaccess
                if p.recheck:
                    recheck.add(p.userid)
            plans.append(CoursePlan(course, box, learners, access, grades.data or {},
                                    to_read(learners, access, self.full, recheck), self.box_now()))
        reads = self.read([("core_completion_get_activities_completion_status",
                            {"courseid": p.box.id, "userid": u.userid}) for p in plans for u in p.reading])
        results = iter(reads)
        for plan in plans:
            for u in plan.reading:
                result = next(results)
                if result.ok:
                    plan.statuses[u.userid] = (result.data or {}).get("statuses") or []
                else:
                    assert result.error is not None
                    self.course_error(plan.course, f"the completion states of {u.username} could not be read: "
                                                   f"{result.error.message} ({result.error.errorcode})")
            self.store(plan)

    def box_now(self) -> float | None:
        """The box's Moodle's clock, from its last answer's Date header."""
        date = self.client.server_date
        return date.timestamp() if date is not None else None

    def course_error(self, course: Course, problem: str) -> None:
        self.rec.errors.append(f"course {course.shortname}: {problem}")
        self.rec.courses.setdefault(course.id, {"id": course.id, "shortname": course.shortname,
                                                "outcome": "not collected"})

    def store(self, plan: CoursePlan) -> None:
        """One course's events, its new collected state and the run's counts: one commit."""
        if self.stop.is_set():
            raise Interrupted()
        box_name = self.config.agent.box_name
        previous: dict[str, dict[tuple[str, int], float | None]] = {COMPLETION: {}, GRADE: {}}
        for row in Collected.select().where(Collected.box_course == plan.box.id):
            previous[row.kind][(row.username, row.box_cmid)] = row.value
        by_id = {u.userid: u.username for u in plan.learners}
        changes = grade_changes(plan.grades.get("usergrades") or [], by_id, previous[GRADE])
        for u in plan.reading:
            changes += completion_changes(u.username, plan.statuses.get(u.userid, []), previous[COMPLETION])
        activities = {a.cmid: a for a in BoxActivity.select().where(BoxActivity.box_course == plan.box.id)}
        events = [*newcomer_events(box_name, plan), *(change_event(box_name, plan, c, activities) for c in changes)]
        idnumbers = grade_idnumbers(plan.grades.get("usergrades") or [])
        db = database.obj
        with db.atomic("IMMEDIATE"):  # read, then write
            counted = self.rec.snapshot()
            try:
                fresh = new_keys([e.key for e in events])
                if events:
                    enqueue(events, config=self.config)
                save_state(plan, changes, idnumbers, activities)
                found = Counter(EVENT_KIND[e.type] for e in events if e.key in fresh)
                self.rec.actions.update(found)
                self.rec.actions["learners_read"] += len(plan.reading)
                self.rec.courses[plan.course.id] = {"id": plan.course.id, "shortname": plan.course.shortname,
                                                    "outcome": found_words(found)}
                self.rec.row.courses_done += 1
                self.rec.save()
            except BaseException:
                self.rec.restore(counted)  # not committed: the history must not count it either
                raise


@dataclass
class CoursePlan:
    """What one course's reads gave, until it is stored."""

    course: Course
    box: BoxCourse
    learners: list[Learner]
    access: dict[int, int]  # box user id -> lastcourseaccess at the last collection
    grades: dict[str, Any]
    reading: list[Learner]  # whose completion states are read this time
    box_now: float | None  # the box's clock when the participants were read
    statuses: dict[int, list[dict]] = field(default_factory=dict)  # box user id -> completion states read


def found_words(found: Counter) -> str:
    words = [f"{found[kind]} {kind}" for kind in FOUND_KINDS if found[kind]]
    return ("queued " + ", ".join(words)) if words else "nothing new"


def newcomer_events(box_name: str, plan: CoursePlan) -> Iterator[NewEvent]:
    """A learner new to the course: the account (made on the server only if
    it is missing there, with Moodle's createpassword: a password cannot be
    read through web services) and the enrolment."""
    for u in plan.learners:
        if u.role is None or u.userid in plan.access:
            continue
        if all(u.profile.get(k) for k in ("firstname", "lastname", "email")):
            yield NewEvent(key=event_key(box_name, "", u.username, "", "user"), type="user", username=u.username,
                           data={**u.profile, "only_if_missing": True})
        yield NewEvent(key=event_key(box_name, plan.course.shortname, u.username, "", "enrolment", u.role),
                       type="enrolment", username=u.username, course_id=plan.course.id, data={"role": u.role})


def change_event(box_name: str, plan: CoursePlan, change: Change, activities: dict[int, BoxActivity]) -> NewEvent:
    """A completion or a grade, on the server's course; its cmid is the
    box's until the sync maps it (data.box_cmid, data.activity in words)."""
    a = activities.get(change.box_cmid)
    data: dict[str, Any] = {"box_cmid": change.box_cmid}
    if a is not None:
        data["activity"] = {"name": a.name, "modname": a.modname, "section": a.section}
    data |= data_of(change.kind, change.value)
    key = event_key(box_name, plan.course.shortname, change.username, change.box_cmid, change.kind,
                    f"{change.value:g}", change.version)
    when = iso(datetime.fromtimestamp(change.time, timezone.utc)) if change.time > 0 else None
    return NewEvent(key=key, type=change.kind, username=change.username, course_id=plan.course.id, data=data,
                    event_time=when)


def new_keys(keys: list[str]) -> set[str]:
    """The keys not queued before (a repeated collection finds its events there)."""
    present: set[str] = set()
    for start in range(0, len(keys), 500):
        present.update(first_column(Event.select(Event.key).where(Event.key.in_(keys[start:start + 500]))))
    return set(keys) - present


def save_state(plan: CoursePlan, changes: list[Change], idnumbers: dict[int, str],
               activities: dict[int, BoxActivity]) -> None:
    """The course's collected state, in the caller's transaction. A learner
    whose completion states could not be read keeps the old lastcourseaccess:
    they are read again next time."""
    rows = [{"box_course": plan.box.id, "username": c.username, "box_cmid": c.box_cmid, "kind": c.kind,
             "value": c.value, "version": c.version} for c in changes]
    for start in range(0, len(rows), 200):
        Collected.insert_many(rows[start:start + 200]).on_conflict_replace().execute()
    read = {u.userid for u in plan.reading if u.userid in plan.statuses}
    failed = {u.userid for u in plan.reading} - read
    people = [{"box_course": plan.box.id, "userid": u.userid, "username": u.username, "profile": dict(u.profile),
               "roles": list(u.roles),
               "lastcourseaccess": plan.access.get(u.userid, 0) if u.userid in failed else u.lastcourseaccess,
               "recheck": u.userid in failed or (u.userid in read and needs_recheck(u.lastcourseaccess, plan.box_now))}
              for u in plan.learners if u.userid not in failed or u.userid in plan.access]
    Participant.delete().where(Participant.box_course == plan.box.id).execute()
    for start in range(0, len(people), 200):
        Participant.insert_many(people[start:start + 200]).execute()
    for cmid, idnumber in idnumbers.items():
        if cmid in activities and activities[cmid].idnumber != idnumber:
            BoxActivity.update(idnumber=idnumber).where(BoxActivity.cmid == cmid).execute()


def store_box_course(course_id: int, course: courses_mod.ServerCourse, contents: list) -> BoxCourse:
    """The box's copy of one course and its activities. Updated in place, never
    replaced: what was collected for the course hangs on its row."""
    values = {"course_id": course_id, "shortname": course.shortname, "timemodified": course.timemodified,
              "cacherev": course.cacherev, "fetched_at": iso(utcnow())}
    with database.obj.atomic():
        # The course restored again on the box (a new id): what was collected belonged to the old one.
        BoxCourse.delete().where(BoxCourse.course_id == course_id, BoxCourse.id != course.id).execute()
        if BoxCourse.update(**values).where(BoxCourse.id == course.id).execute() == 0:
            BoxCourse.create(id=course.id, **values)
        # The idnumbers come from the grade book, not from the contents: kept.
        idnumbers = {a.cmid: a.idnumber for a in BoxActivity.select().where(BoxActivity.box_course == course.id)}
        BoxActivity.delete().where(BoxActivity.box_course == course.id).execute()
        activities = [
            {"cmid": int(m["id"]), "box_course": course.id, "section": int(s.get("section", 0)),
             "name": str(m.get("name", ""))[:255], "modname": str(m.get("modname", "")),
             "idnumber": idnumbers.get(int(m["id"]))}
            for s in contents for m in s.get("modules", [])
        ]
        for start in range(0, len(activities), 200):
            BoxActivity.insert_many(activities[start:start + 200]).execute()
    return BoxCourse.get_by_id(course.id)


def box_failure(exc: BaseException) -> tuple[str, str] | None:
    """What ends a collection, in the box's words (the common sentences speak of the server)."""
    if isinstance(exc, TokenRejected):
        return SyncRun.FAILED, "the box's Moodle rejected its token ([box] token_file)"
    if isinstance(exc, Unreachable):
        settings.put(box_reachable=False)
        return SyncRun.FAILED, (f"the box's Moodle stopped answering: {exc.reason}; "
                                "the courses collected before are kept")
    if isinstance(exc, MoodleError):
        return SyncRun.FAILED, f"the box's Moodle refused a request: {exc}"
    if isinstance(exc, StorageFull):
        return SyncRun.FAILED, f"{exc.problem}: nothing more was collected"
    return None


def run_collect(config: Config, full: bool = False, *, stop: threading.Event | None = None,
                client: MoodleClient | None = None,
                on_started: Callable[[SyncRun], None] | None = None) -> Collection:
    """Run one collection (with the run lock) and return its row. Raises
    NoBox without [box], AlreadyRunning or SyncDisabled before anything is recorded."""
    box = _box(config)
    collectors: list[Collector] = []
    with recorded_run(config, COLLECT, COLLECT_KINDS, force=full, on_started=on_started,
                      describe=box_failure) as rec:
        client = client or MoodleClient(box, max_batch=config.agent.batch_size)
        collectors.append(Collector(config, client, rec, full, stop or threading.Event()))
        collectors[0].run()
    return Collection(rec.row, collectors[0].unreachable if collectors else None)


def collect_for_sync(config: Config, stop: threading.Event | None = None,
                     client: MoodleClient | None = None) -> dict[str, Any] | None:
    """The full collection a sync starts with, inside the sync's lock; what
    it found, for the sync's row. None without [box]. ``client``: the box's
    connection of the sync (its way down uses it too)."""
    if config.box is None:
        return None
    client = client or MoodleClient(config.box, max_batch=config.agent.batch_size)
    with nested_run(config, COLLECT, COLLECT_KINDS, force=True, describe=box_failure) as rec:
        Collector(config, client, rec, True, stop or threading.Event()).run()
    log.info("collection before the sync: %s", rec.row.status)
    return Collection(rec.row).summary()


def _box(config: Config) -> BoxConfig:
    if config.box is None:
        raise NoBox(config)
    return config.box


__all__ = ["BOX_FUNCTIONS", "Collection", "NoBox", "collect_for_sync", "run_collect"]
