"""One page of a course's participants, from what the box's Moodle answered
to what is queued and kept (agent/box/collect.py reads, this module
decides and writes). A page is one transaction: its events, the collected
state of its learners and the run's counts commit together, so a
collection cut off between two pages and run again queues nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator

from ..kinds import data_of
from .. import courses as courses_mod
from ..store.db import BoxActivity, BoxCourse, Collected, Course, Event, Participant, database, first_column, iso, \
    utcnow
from ..store.queue import NewEvent
from .diff import Change, Learner, event_key, needs_recheck

CHUNK = 400  # ids per IN (...): under SQLite's variable limit of old builds


@dataclass
class Page:
    """What one page's reads gave, until it is stored."""

    course: Course
    box: BoxCourse
    learners: list[Learner]
    access: dict[int, int]  # box user id -> lastcourseaccess at the last collection (known learners of the page)
    reading: list[Learner]  # whose completion states (and grades) are read this time
    box_now: float | None  # the box's clock when the participants were read
    after: int  # the page covers the box user ids above this one ...
    upto: int | None  # ... up to this one (None: the last page, every id above)
    known: dict[int, Learner] = field(default_factory=dict)  # the page's learners as last collected
    seen: set[int] = field(default_factory=set)  # ids in the page, skipped ones included (still enrolled)
    statuses: dict[int, list[dict]] = field(default_factory=dict)  # box user id -> completion states read
    usergrades: list[dict] = field(default_factory=list)  # the grade reports read


def known_learners(box_course: int, ids: list[int]) -> dict[int, Learner]:
    """The page's learners as last collected (Known: with ``recheck``). A
    page is a run of ids: one range query, not a list of them."""
    if not ids:
        return {}
    wanted = set(ids)
    rows: Any = (Participant.select(Participant.userid, Participant.username, Participant.profile,
                                    Participant.roles, Participant.lastcourseaccess, Participant.recheck)
                 .where(Participant.box_course == box_course, Participant.userid.between(min(ids), max(ids)))
                 .tuples())
    return {uid: Known(uid, username, profile or {}, tuple(roles or ()), access, bool(recheck))
            for uid, username, profile, roles, access, recheck in rows if uid in wanted}


@dataclass(frozen=True)
class Known(Learner):
    """A learner as last collected, with whether they are to be read again."""

    recheck: bool = False


def holders(box_course: int, usernames: list[str]) -> dict[str, int]:
    """Who holds these usernames in the course, as last collected."""
    found: dict[str, int] = {}
    for start in range(0, len(usernames), CHUNK):
        rows: Any = (Participant.select(Participant.username, Participant.userid)
                     .where(Participant.box_course == box_course,
                            Participant.username.in_(usernames[start:start + CHUNK])).tuples())
        for username, uid in rows:
            found[username] = uid
    return found


def newcomer_events(box_name: str, page: Page) -> Iterator[NewEvent]:
    """A learner new to the course: the account (made on the server only if
    it is missing there, with Moodle's createpassword: a password cannot be
    read through web services) and the enrolment."""
    for u in page.learners:
        if u.role is None or u.userid in page.access:
            continue
        if all(u.profile.get(k) for k in ("firstname", "lastname", "email")):
            yield NewEvent(key=event_key(box_name, "", u.username, "", "user"), type="user", username=u.username,
                           data={**u.profile, "only_if_missing": True})
        yield NewEvent(key=event_key(box_name, page.course.shortname, u.username, "", "enrolment", u.role),
                       type="enrolment", username=u.username, course_id=page.course.id, data={"role": u.role})


def change_event(box_name: str, page: Page, change: Change, activities: dict[int, BoxActivity]) -> NewEvent:
    """A completion or a grade, on the server's course; its cmid is the
    box's until the sync maps it (data.box_cmid, data.activity in words).
    A grade removed on the box carries no grade, and ``removed``."""
    a = activities.get(change.box_cmid)
    data: dict[str, Any] = {"box_cmid": change.box_cmid}
    if a is not None:
        data["activity"] = {"name": a.name, "modname": a.modname, "section": a.section}
    if change.value is None:
        data |= {"grade": None, "removed": True}
        value = "removed"
    else:
        data |= data_of(change.kind, change.value)
        value = f"{change.value:g}"
    key = event_key(box_name, page.course.shortname, change.username, change.box_cmid, change.kind, value,
                    change.version)
    when = iso(datetime.fromtimestamp(change.time, timezone.utc)) if change.time > 0 else None
    return NewEvent(key=key, type=change.kind, username=change.username, course_id=page.course.id, data=data,
                    event_time=when)


def new_keys(keys: list[str]) -> set[str]:
    """The keys not queued before (a repeated collection finds its events there)."""
    present: set[str] = set()
    for start in range(0, len(keys), 500):
        present.update(first_column(Event.select(Event.key).where(Event.key.in_(keys[start:start + 500]))))
    return set(keys) - present


def mark_conflicts(reasons: dict[str, str], run_id: str | None) -> int:
    """Events queued by this page that are conflicts from the start (a grade
    out of range, a grade removed on the box): never sent as they are."""
    for key, reason in reasons.items():
        Event.update(status=Event.CONFLICT, last_error=reason[:1000], sync_id=run_id).where(
            Event.key == key, Event.status == Event.QUEUED).execute()
    return len(reasons)


def save_page(page: Page, changes: list[Change], idnumbers: dict[int, str],
              activities: dict[int, BoxActivity]) -> None:
    """The page's collected state, in the caller's transaction. A learner
    whose completion states could not be read keeps the old lastcourseaccess:
    they are read again next time. Those enrolled before in the page's range
    of ids and in it no more have left the course."""
    rows = [{"box_course": page.box.id, "username": c.username, "box_cmid": c.box_cmid, "kind": c.kind,
             "value": c.value, "version": c.version} for c in changes]
    for start in range(0, len(rows), 200):
        Collected.insert_many(rows[start:start + 200]).on_conflict_replace().execute()
    read = {u.userid for u in page.reading if u.userid in page.statuses}
    failed = {u.userid for u in page.reading} - read
    people = []
    for u in page.learners:
        if u.userid in failed and u.userid not in page.access:
            continue
        now = Known(u.userid, u.username, dict(u.profile), tuple(u.roles),
                    page.access.get(u.userid, 0) if u.userid in failed else u.lastcourseaccess,
                    u.userid in failed or (u.userid in read and needs_recheck(u.lastcourseaccess, page.box_now)))
        if page.known.get(u.userid) == now:
            continue  # an idle page writes nothing
        people.append({"box_course": page.box.id, "userid": now.userid, "username": now.username,
                       "profile": now.profile, "roles": list(now.roles), "lastcourseaccess": now.lastcourseaccess,
                       "recheck": now.recheck})
    for start in range(0, len(people), 200):
        Participant.insert_many(people[start:start + 200]).on_conflict_replace().execute()
    in_range = Participant.select(Participant.userid).where(Participant.box_course == page.box.id,
                                                             Participant.userid > page.after)
    if page.upto is not None:
        in_range = in_range.where(Participant.userid <= page.upto)
    listed = page.seen | {u.userid for u in page.learners}
    gone = [uid for uid in first_column(in_range) if uid not in listed]
    for start in range(0, len(gone), CHUNK):
        Participant.delete().where(Participant.box_course == page.box.id,
                                   Participant.userid.in_(gone[start:start + CHUNK])).execute()
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
             "idnumber": idnumbers.get(int(m["id"])),
             "instance": int(m["instance"]) if isinstance(m.get("instance"), int) else None}
            for s in contents for m in s.get("modules", [])
        ]
        for start in range(0, len(activities), 200):
            BoxActivity.insert_many(activities[start:start + 200]).execute()
    return BoxCourse.get_by_id(course.id)
