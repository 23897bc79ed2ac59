"""The sync down: the server's completions and grades into the box's own
Moodle ([box]), for direction ``down`` or ``both`` ([sync] direction, the
page's setting).

For every course kept on the box, after the course check and the mapping of
the box's activities (agent/course_check.py), before anything is pushed (so that a
change made on both sides is decided, not overwritten):
- read from the server, for the learners of the box's course known on both
  sides, their completion states and grades (two calls per learner,
  batched; never the whole course's grades, userid=0: a server course holds
  the learners of every box);
- decide per learner and activity (agent/down/diff.py) against the last
  state known of the server (ServerSeen), the box's current state (as
  collected: Collected) and the box's change waiting to be pushed;
- write what changed on the server into the box's Moodle through the box's
  token (core_completion_override_activity_completion_status,
  core_grades_update_grades), under the box's ids, batched;
- then, in one transaction per course: the new ServerSeen (what the server
  holds, including what is about to be pushed there: it must not come back
  down), the new Collected (what the agent wrote into the box's Moodle is
  not collected back as a learner's), the box's changes that lost or were
  already on the server taken out of the queue, and the conflicts log.

A kill between the writes and the commit loses nothing: the writes set a
state (repeating them changes nothing), the next collection finds the
written values and queues them, and, equal to the server's, they are taken
out of the queue without being sent.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Collection

from peewee import fn

from ..box.check import participants
from ..box.collect import PARTICIPANT_FIELDS
from ..kinds import COMPLETION_STATES, CREATE_USERS, ENROL, GRADE_ITEMS, KINDS, LOOKUP, OVERRIDE, PARTICIPANTS, \
    SAVE_ASSIGN_GRADES, UPDATE_GRADES, brought_down, completion_state, value_of
from ..mapping import ActivityInfo
from ..roles import STUDENT_ROLE_ID
from ..store.db import BoxCourse, Collected, Course, Event, Participant, ServerSeen, Run, TwoWayConflict, \
    database, first_column, iso, utcnow
from ..store.history import IS_SYNC
from .diff import COMPLETION, GRADE, Decision, Reported, decide, normal, server_completions, server_grades
from ..moodle import MoodleClient, MoodleError, TokenRejected, Unreachable
from ..push.plan import assign_grade, assign_grade_args, update_grades_args
from ..push.session import Session
from ..learners import made_down_ids, mark_made_down
from .boxcalls import BoxTokenRejected, BoxUnreachable, box_call, box_read_all
from .profiles import profiles_down

log = logging.getLogger(__name__)

# What each kind's way down needs of each side (agent/kinds.py).
SERVER_READS = list(dict.fromkeys(f for k in KINDS.values() for f in k.server_down))
BOX_WRITES = list(dict.fromkeys(f for k in KINDS.values() for f in k.box_down))
# The changes written down that a sync's row names (the Information dialog's first 20).
MOVED_NAMED = 20

# ServerSeen's row of a learner enrolled in the server's course (cmid 0).
ENROLMENT = "enrolment"
Key = tuple[str, int, str]  # username, the server's cmid, kind


def pull_down(run: Session, pushable: list[Course]) -> None:
    """The way down for every course, through the run's two connections."""
    box = run.box
    if box is None:
        run.rec.errors.append("direction down: there is no box's Moodle ([box] url) to write into")
        return
    missing = run.client.site_info().lacking(SERVER_READS)
    if missing:
        run.rec.errors.append(f"direction down: the server's token service lacks {', '.join(missing)}: "
                              "nothing was brought down")
        return
    # The box's connection is the collection's too: the sync's row counts the way down's bytes.
    run.rec.box_traffic.append(box.meter())
    try:
        info = box.site_info()
    except Unreachable as exc:
        run.rec.errors.append(f"direction down: the box's Moodle does not answer: {exc.reason}")
        return
    except TokenRejected:
        run.rec.errors.append("direction down: the box's Moodle rejected its token ([box] token_file)")
        return
    lacking = info.lacking(BOX_WRITES)
    if lacking:
        run.rec.errors.append(f"direction down: the box's Moodle token service lacks {', '.join(lacking)}: "
                              "nothing was brought down")
        return
    run.rec.save(phase="syncing_down")
    cut = last_cut_off(run.rec.row.id)
    for course in pushable:
        run.check_stop()
        bc = BoxCourse.get_or_none(BoxCourse.course_id == course.id)
        if bc is None:
            continue
        try:
            enrolled = accounts_down(run, course, bc, box)
            down_course(run, course, bc, box, enrolled, cut)
        except BoxTokenRejected:
            run.rec.errors.append("direction down: the box's Moodle rejected its token ([box] token_file)")
            return
        except BoxUnreachable as exc:
            # Its site info was read at the collection: it went away since. The push still goes on.
            run.rec.errors.append(f"direction down: the box's Moodle stopped answering: {exc.reason}")
            return
        except TokenRejected:
            raise  # the server's token: the run ends, as for any other call to the server
        except MoodleError as exc:
            # One course's refusal (an account the box's Moodle will not make, say) stops only that course.
            run.rec.errors.append(f"course {course.shortname}: the way down stopped: {exc}")
    try:
        profiles_down(run, box)  # issue 19: the server's profile changes
    except BoxTokenRejected:
        run.rec.errors.append("direction down: the box's Moodle rejected its token ([box] token_file)")
    except BoxUnreachable as exc:
        run.rec.errors.append(f"direction down: the box's Moodle stopped answering: {exc.reason}")


def accounts_down(run: Session, course: Course, bc: BoxCourse, box: MoodleClient) -> dict[str, int]:
    """A learner newly enrolled in the server's course (not seen there at an
    earlier sync down) and not in the box's: their account on the box's
    Moodle if they have none (with Moodle's createpassword: no password
    travels), then their enrolment. Their progress comes down in the same
    sync: those enrolled on the box are returned (username -> the box's
    user id) for down_course. A learner seen before and not on
    the box was unenrolled there: unenrolments are never copied, so neither
    is the enrolment again. A repeat after a kill finds the account made."""
    people = run.client.call(PARTICIPANTS, {"courseid": course.id, "options": [PARTICIPANT_FIELDS]})
    # Checked as the collection checks the box's (agent/box/check.py): a bad record is left out and named.
    found, problems, _ = participants(people if isinstance(people, list) else [])
    for problem in problems:
        run.rec.errors.append(f"course {course.shortname}: the server's {problem}: left out of the way down")
    learners = [u for u in found if u.role is not None]
    seen = set(first_column(ServerSeen.select(ServerSeen.username).where(
        ServerSeen.course_id == course.id, ServerSeen.kind == ENROLMENT)))
    on_box = set(first_column(Participant.select(Participant.username).where(Participant.box_course == bc.id)))
    missing = [u for u in learners if u.username not in seen and u.username not in on_box]
    enrolled: dict[str, int] = {}
    if missing:
        found = box_call(box, LOOKUP,
                         {"field": "username", "values": [u.username for u in missing]})
        ids = {str(u["username"]): int(u["id"]) for u in found or []}
        new = [u for u in missing if u.username not in ids and all(u.profile.get(k) for k in
                                                                   ("firstname", "lastname", "email"))]
        if new and run.config.sync.accounts_down:
            # No password works on the box until one is set on the page (issue 19): marked before
            # Moodle makes them, so that a kill after it did leaves them marked.
            mark_made_down([u.username for u in new])
            created = box_call(box, CREATE_USERS, {"users": [
                {"username": u.username, **u.profile, "createpassword": 1} for u in new]})
            made = {str(u["username"]): int(u["id"]) for u in created or []}
            ids |= made
            run.rec.actions["accounts_down"] += len(made)
        made_down_ids(ids)  # made now, or found by the look-up after a kill
        enrol = [u for u in missing if u.username in ids]
        if enrol:
            box_call(box, ENROL, {"enrolments": [
                {"roleid": STUDENT_ROLE_ID, "userid": ids[u.username], "courseid": bc.id} for u in enrol]})
            run.rec.actions["enrolments_down"] += len(enrol)
            enrolled = {u.username: ids[u.username] for u in enrol}
    rows = [{"course_id": course.id, "username": u.username, "cmid": 0, "kind": ENROLMENT, "value": 1.0}
            for u in learners if u.username not in seen]
    with database.obj.atomic():
        for start in range(0, len(rows), 200):
            ServerSeen.insert_many(rows[start:start + 200]).on_conflict_replace().execute()
        run.rec.save()
    return enrolled


def _waiting(course_id: int) -> dict[Key, tuple[list[int], Reported]]:
    """The box's changes queued for the server, mapped: the latest per key, and every event id."""
    found: dict[Key, tuple[list[int], Reported]] = {}
    for e in (Event.select(Event.id, Event.type, Event.username, Event.cmid, Event.data, Event.event_time)
              .where(Event.status == Event.QUEUED, Event.course_id == course_id,
                     Event.type.in_(brought_down("learning")), Event.cmid.is_null(False)).order_by(Event.id)):
        value = value_of(e.type, e.data)
        if value is None:
            continue
        when = int(datetime.fromisoformat(e.event_time.replace("Z", "+00:00")).timestamp()) if e.event_time else 0
        key = (e.username, int(e.cmid or 0), e.type)
        ids = found[key][0] if key in found else []
        found[key] = ([*ids, e.id], Reported(float(value), when))
    return found


def last_cut_off(this_run: str) -> str | None:
    """When the last sync cut off (killed, or its connection lost) ended, or
    was found dead by the next run, before anything else was queued. Its
    ``kind``, not its trigger: a collection that failed pushed nothing."""
    cut = first_column(Run.select(fn.MAX(Run.completed_at)).where(
        IS_SYNC, Run.id != this_run, Run.status.in_([Run.FAILED, Run.INTERRUPTED])))
    return cut[0] if cut else None


def maybe_pushed(course_id: int, cut: str | None) -> dict[Key, set[float]]:
    """The values of the box's changes still queued that a sync cut off
    (``cut``: last_cut_off) after they were queued may have pushed without
    hearing the server's answer. The server holding one of them has not
    changed on its own: a later change on the box is then no conflict."""
    found: dict[Key, set[float]] = {}
    if cut is None:
        return found
    for e in (Event.select(Event.type, Event.username, Event.cmid, Event.data)
              .where(Event.status == Event.QUEUED, Event.course_id == course_id, Event.queued_at < cut,
                     Event.type.in_(brought_down("learning")), Event.cmid.is_null(False))):
        value = value_of(e.type, e.data)
        if value is not None:
            found.setdefault((e.username, int(e.cmid or 0), e.type), set()).add(normal(e.type, float(value)))
    return found


def down_course(run: Session, course: Course, bc: BoxCourse, box: MoodleClient,
                enrolled: dict[str, int] | None = None, cut: str | None = None) -> None:
    """``enrolled``: learners just enrolled on the box (accounts_down), not collected yet;
    ``cut``: when the last cut-off sync ended (last_cut_off)."""
    learners = {p.username: p.userid for p in Participant.select().where(Participant.box_course == bc.id)
                if "student" in (p.roles or [])} | (enrolled or {})
    run.resolve_users(set(learners))
    on_server = {u: run.user_ids[u] for u in learners if u in run.user_ids}
    if not on_server:
        return
    mapping = run.mappings.of(course.id)  # the same the push used (agent/mapping.py)
    if mapping is None:
        return
    to_box = mapping.to_box
    names = sorted(on_server)
    # Each of this box's learners' completion states and grades, never the
    # whole course's (userid=0): a server course holds the learners of every box.
    reads = run.client.read_all([
        (function, {"courseid": course.id, "userid": on_server[u]}) for u in names
        for function in (COMPLETION_STATES, GRADE_ITEMS)])
    server: dict[Key, Reported] = {}
    by_id = {uid: u for u, uid in on_server.items()}
    for username, states, grades in zip(names, reads[0::2], reads[1::2]):
        for result, what in ((states, "completion states"), (grades, "grades")):
            if not result.ok:
                run.rec.errors.append(f"course {course.shortname}: the server's {what} of {username} "
                                      f"could not be read: {result.error}")
                return
        # Checked as the box's answers are: a bad entry is left out of the way down and named.
        completions, problems = server_completions(states.data.get("statuses") if isinstance(states.data, dict)
                                                   else None)
        for cmid, reported in completions.items():
            server[(username, cmid, COMPLETION)] = reported
        found, refused = server_grades(grades.data.get("usergrades") if isinstance(grades.data, dict) else None,
                                       by_id)
        for (whose, cmid), reported in found.items():
            if whose == username:  # the report asked for, not another's
                server[(username, cmid, GRADE)] = reported
        run.rec.errors += [f"course {course.shortname}: the server's {p}: left out of the way down"
                           for p in problems + refused]

    seen = {(s.username, s.cmid, s.kind): s.value for s in ServerSeen.select().where(
        ServerSeen.course_id == course.id, ServerSeen.kind != ENROLMENT)}
    box_now = {(c.username, mapping.mapped[c.box_cmid], c.kind): c.value
               for c in Collected.select().where(Collected.box_course == bc.id) if c.box_cmid in mapping.mapped}
    waiting = _waiting(course.id)
    keys = {k for k in {*server, *waiting} if k[0] in on_server and k[1] in to_box}
    pushed = maybe_pushed(course.id, cut)
    for k in pushed.keys() & server.keys():
        if normal(k[2], server[k].value) in pushed[k]:
            seen[k] = normal(k[2], server[k].value)  # the box's own push, not confirmed: not the server's change
    decisions = {k: decide(k[2], server.get(k), seen.get(k), box_now.get(k),
                           waiting[k][1] if k in waiting else None) for k in sorted(keys)}

    writes = [(k, d) for k, d in decisions.items() if d.write_down is not None]
    calls, owners = box_calls(writes, bc.id, learners, to_box, mapping.on_box, box.site_info().functions)
    results = box_read_all(box, calls) if calls else []
    failed: set[Key] = set()
    for (function, _), result, keys_of in zip(calls, results, owners):
        problem: object = None
        if not result.ok:
            problem = result.error
        elif function == UPDATE_GRADES and result.data not in (0, "0"):
            problem = f"it answered {result.data}"
        if problem is not None:
            failed |= set(keys_of)
            run.rec.errors.append(f"course {course.shortname}: the box's Moodle refused {function}: {problem}")
    save_course(run, course, bc, decisions, failed, server, waiting, to_box)


def box_calls(writes: list[tuple[Key, Decision]], box_course: int, learners: dict[str, int], to_box: dict[int, int],
              box_acts: dict[int, ActivityInfo], functions: Collection[str] = ()
              ) -> tuple[list[tuple[str, dict[str, Any]]], list[list[Key]]]:
    """The box's calls for what to write, under the box's ids, and the keys each one carries. An
    assignment's grades go into the assignment (mod_assign_save_grades) when the box's service has it."""
    calls: list[tuple[str, dict[str, Any]]] = []
    owners: list[list[Key]] = []
    per_activity: dict[int, int] = {}
    for key, d in writes:
        username, cmid, kind = key
        box_cmid, userid = to_box[cmid], learners[username]
        assert d.write_down is not None
        if kind == COMPLETION:
            calls.append((OVERRIDE, {"userid": userid, "cmid": box_cmid,
                                     "newstate": completion_state(d.write_down > 0)}))
            owners.append([key])
            continue
        act = box_acts[box_cmid]
        variant = KINDS["grade"].variant(act.modname)
        if variant is not None and variant.function in functions and act.instance:
            if box_cmid not in per_activity:
                per_activity[box_cmid] = len(calls)
                calls.append((SAVE_ASSIGN_GRADES, assign_grade_args(act.instance)))
                owners.append([])
            i = per_activity[box_cmid]
            calls[i][1]["grades"].append(assign_grade(userid, d.write_down))
            owners[i].append(key)
            continue
        if box_cmid not in per_activity:
            per_activity[box_cmid] = len(calls)
            calls.append((UPDATE_GRADES, update_grades_args(box_course, act.modname, box_cmid)))
            owners.append([])
        i = per_activity[box_cmid]
        calls[i][1]["grades"].append({"studentid": userid, "grade": d.write_down})
        owners[i].append(key)
    return calls, owners


def save_course(run: Session, course: Course, bc: BoxCourse, decisions: dict[Key, Decision], failed: set[Key],
                server: dict[Key, Reported], waiting: dict[Key, tuple[list[int], Reported]],
                to_box: dict[int, int]) -> None:
    """One course's outcome: one commit. A key whose write failed keeps its
    old state: it is decided again next time."""
    now = iso(utcnow())
    seen_rows, collected_rows, conflicts, dropped, discarded = [], [], [], [], {}
    for key, d in decisions.items():
        if key in failed:
            continue
        username, cmid, kind = key
        if d.server_after is not None:
            seen_rows.append({"course_id": course.id, "username": username, "cmid": cmid, "kind": kind,
                              "value": d.server_after})
        if d.write_down is not None:
            collected_rows.append({"box_course": bc.id, "username": username, "box_cmid": to_box[cmid], "kind": kind,
                                   "value": d.write_down, "version": "synced-down"})
            run.rec.actions[KINDS[kind].down_counter] += 1
            if len(run.rec.moved_down) < MOVED_NAMED:
                run.rec.moved_down.append({"username": username, "course_id": course.id, "cmid": cmid, "kind": kind,
                                           "value": d.write_down})
        if d.rule is not None:
            box_value, server_value = waiting[key][1].value, server[key].value
            conflicts.append({"sync_id": run.rec.row.id, "course_id": course.id, "username": username, "cmid": cmid,
                              "kind": kind, "box_value": box_value, "server_value": server_value, "kept": d.kept,
                              "rule": d.rule, "at": now})
            if d.drop_box:
                for event_id in waiting[key][0]:
                    discarded[event_id] = (f"changed on both sides: box {box_value:g}, server {server_value:g}; "
                                           f"the server's kept ({d.rule})")
        elif d.drop_box and key in waiting:
            dropped += waiting[key][0]  # already on the server: nothing to send
    with database.obj.atomic():
        for start in range(0, len(seen_rows), 200):
            ServerSeen.insert_many(seen_rows[start:start + 200]).on_conflict_replace().execute()
        for start in range(0, len(collected_rows), 200):
            Collected.insert_many(collected_rows[start:start + 200]).on_conflict_replace().execute()
        for event_id, reason in discarded.items():
            Event.update(status=Event.DISCARDED, last_error=reason, sync_id=run.rec.row.id).where(
                Event.id == event_id).execute()
        if dropped:
            Event.update(status=Event.SENT, sent_at=now, sync_id=run.rec.row.id, last_error=None).where(
                Event.id.in_(dropped)).execute()
        if conflicts:
            TwoWayConflict.insert_many(conflicts).execute()
        run.rec.actions["two_way_conflicts"] += len(conflicts)
        run.rec.save()


def record_pushed(run: Session) -> None:
    """After the push (direction both): what the server confirmed in this
    run is its last known state, so that it does not come back down. A run
    cut off before this leaves it for the next one, which reads the pushed
    value on the server, finds it already on the box, and writes nothing."""
    latest: dict[tuple[int, int, str, str], float] = {}  # (course, cmid, kind, username) -> value
    for e in (Event.select(Event.type, Event.username, Event.course_id, Event.cmid, Event.data)
              .where(Event.sync_id == run.rec.row.id, Event.status == Event.SENT,
                     Event.type.in_(brought_down("learning")), Event.cmid.is_null(False)).order_by(Event.id)):
        value = value_of(e.type, e.data)
        if value is not None and e.course_id is not None:
            latest[(e.course_id, int(e.cmid or 0), e.type, e.username)] = float(value)
    rows = [{"course_id": course, "username": username, "cmid": cmid, "kind": kind, "value": value}
            for (course, cmid, kind, username), value in latest.items()]
    with database.obj.atomic():
        for start in range(0, len(rows), 200):
            ServerSeen.insert_many(rows[start:start + 200]).on_conflict_replace().execute()
