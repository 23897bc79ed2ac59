"""The course check a sync starts with: every course of the box compared
with the server's in one request, what changed refreshed, and the box's
completions and grades given the server's activities (agent/mapping.py)."""

from __future__ import annotations

import peewee as pw

from . import courses as courses_mod
from .kinds import of_stage
from .mapping import describe_activity
from .moodle import MoodleError
from .push.session import Session
from .store.db import Activity, Collected, Course, Event, database, first_column


def queued_ids(course_id: int, *where: pw.Expression) -> list[int]:
    return first_column(Event.select(Event.id).where(Event.status == Event.QUEUED, Event.course_id == course_id,
                                                     *where))


def check_courses(run: Session) -> list[Course]:
    """One request for every course of the box; refresh what changed.
    Returns the courses whose events can be pushed."""
    rec = run.rec
    box = {c.id: c for c in Course.select()}
    wanted = set(box)
    wanted |= set(first_column(Event.select(Event.course_id).where(
        Event.status == Event.QUEUED, Event.course_id.is_null(False)).distinct()))
    rec.save(phase="checking_courses", courses_total=len(wanted), courses_done=0)
    server = courses_mod.fetch_by_ids(run.client, sorted(wanted)) if wanted else {}
    pushable = []
    for done, cid in enumerate(sorted(wanted), 1):
        run.check_stop()
        mine, theirs = box.get(cid), server.get(cid)
        outcome = {"id": cid, "shortname": mine.shortname if mine else (theirs.shortname if theirs else str(cid))}
        if theirs is None:
            # Kept queued, its events would stop every later sync; as
            # conflicts a teacher can retry them (the course restored) or discard them.
            gone = queued_ids(cid)
            run.mark_conflicts(dict.fromkeys(gone, f"course {outcome['shortname']} (id {cid}) is missing on the server"))
            outcome["outcome"] = f"missing on the server: {len(gone)} event(s) kept as conflicts"
        elif mine is not None and courses_mod.is_same(mine, theirs) and not run.force:
            outcome["outcome"] = "unchanged"
            pushable.append(mine)
        else:
            try:
                courses_mod.refresh(run.client, theirs)
            except MoodleError as exc:
                outcome["outcome"] = "refresh failed"
                rec.errors.append(f"course {theirs.shortname}: could not read its contents: {exc}")
                rec.courses[cid] = outcome
                continue
            rec.actions["courses_refreshed"] += 1
            outcome["shortname"] = theirs.shortname
            if run.force:
                outcome["outcome"] = "refreshed (forced)"
            elif mine is None:
                outcome["outcome"] = "fetched"
            else:
                removed = conflicts_for_missing_activities(run, cid, theirs.shortname)
                outcome["outcome"] = "changed on the server: refreshed" + (
                    f"; {removed} event(s) on removed activities kept as conflicts" if removed else "")
            pushable.append(Course.get_by_id(cid))
        rec.courses[cid] = outcome
        rec.row.courses_done = done
        if outcome["outcome"] != "unchanged" or done == len(wanted):
            # One commit (an fsync on the SD card) per course that took a
            # request, not per course: an unchanged one is done at once.
            rec.save()
    return pushable


def conflicts_for_missing_activities(run: Session, course_id: int, shortname: str) -> int:
    present = Activity.select(Activity.cmid).where(Activity.course == course_id)
    gone = list(Event.select(Event.id, Event.cmid).where(
        Event.status == Event.QUEUED, Event.course_id == course_id,
        Event.cmid.is_null(False), Event.cmid.not_in(present)))
    run.mark_conflicts({e.id: f"activity {e.cmid} no longer exists in course {shortname} "
                              "(the course changed on the server)" for e in gone})
    return len(gone)


# -- the box's own Moodle: its activities mapped to the server's ---------------


def map_box_activities(run: Session, pushable: list[Course]) -> None:
    """Give the completions and grades collected from the box's Moodle the
    server's cmids, per course, before they are pushed (after the course
    check: the server's activities are up to date). The courses are the same
    when every box activity with learner data maps to exactly one server
    activity; otherwise the course is shown as differing, naming the
    activities, and their events become conflicts with the reason. Force
    Sync skips the check, yet pushes only what maps: a mapping is never guessed."""
    for course in pushable:
        mapping = run.mappings.of(course.id)  # computed once per sync, shared with the way down
        if mapping is None:
            continue
        waiting = list(Event.select(Event.id, Event.data).where(
            Event.status == Event.QUEUED, Event.course_id == course.id, Event.type.in_(of_stage("learning")),
            Event.cmid.is_null()))
        with_data = set(first_column(Collected.select(Collected.box_cmid)
                                     .where(Collected.box_course == mapping.box_course).distinct()))
        with_data |= {int(e.data["box_cmid"]) for e in waiting if "box_cmid" in e.data}
        if not with_data:
            continue
        on_box = mapping.on_box
        why = {cmid: f"activity {describe_activity(on_box[cmid])} of the box's course {course.shortname} has no "
                     f"match on the server: {reason}" for cmid, reason in mapping.unmapped.items()}
        why |= {cmid: f"activity {cmid} of the box's course {course.shortname} is no longer on the box's Moodle"
                for cmid in with_data - set(on_box)}
        differs = sorted(why[cmid] for cmid in with_data if cmid in why)
        settle_box_events(run, waiting, mapping.mapped, why)
        if differs and not run.force:
            outcome = run.rec.courses.setdefault(course.id, {"id": course.id, "shortname": course.shortname,
                                                             "outcome": "unchanged"})
            outcome["outcome"] += "; differs from the box's course: " + "; ".join(differs)
            outcome["differs"] = differs
            run.rec.save()


def settle_box_events(run: Session, waiting: list[Event], mapped: dict[int, int], why: dict[int, str]) -> None:
    """The server's cmid on each mapped event, a conflict for each other one: one commit."""
    to_cmid: dict[int, list[int]] = {}
    conflicts = {}
    for e in waiting:
        box_cmid = int(e.data.get("box_cmid") or 0)
        if box_cmid in mapped:
            to_cmid.setdefault(mapped[box_cmid], []).append(e.id)
        else:
            conflicts[e.id] = why.get(box_cmid, f"activity {box_cmid} of the box's Moodle has no match on the server")
    with database.obj.atomic():
        for cmid, ids in to_cmid.items():
            Event.update(cmid=cmid).where(Event.id.in_(ids)).execute()
        run.mark_conflicts(conflicts)
