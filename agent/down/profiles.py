"""Profiles down (issue 19): with direction ``down`` or ``both``, a learner's
first name, last name, e-mail address or idnumber changed on the server is
written into the box's Moodle (core_user_update_users, the box's ids).

Per learner of the kept courses known on both sides, after the courses' way
down (agent/down/pull.py): the server's profile now (core_user_get_users_by_field,
a hundred usernames a call) against its last known one (ProfileState.server).
A field the server changed is written down, unless the box changed it too
(a profile event still queued): then the later change wins and a tie keeps
the server's, logged in the conflicts log (TwoWayConflict, kind = the field).

Moodle's web services give no time for a profile change, so each side's is
dated as the agent knows it: the box's when the collection found it (every
[box] collect_minutes, and before each sync), the server's at the last sync
that still read the old value (the earliest it can have been made). A change
made on the box since the last sync therefore wins; one that was already
waiting at the last sync loses to the server's.

What is written down becomes the box's last collected profile in the same
transaction, so it is not collected back as the box's change; a value the
server took from the box is already on the box, so nothing comes back down.
"""

from __future__ import annotations

from typing import Any

from ..kinds import LOOKUP, PROFILE_FIELDS, UPDATE_USERS, profile_of
from ..moodle import MoodleClient, MoodleError
from ..push.session import Session
from ..store.db import ProfileState
from ..store.db import Event, Participant, TwoWayConflict, database, iso, parse_iso, utcnow
from ..text import warnings_words
from .boxcalls import box_call

LOOKUP_CHUNK = 100


def _time(text: str | None) -> float:
    when = parse_iso(text)
    return when.timestamp() if when is not None else 0.0


def waiting_changes(usernames: set[str]) -> dict[str, dict[str, tuple[str, float, list[Event]]]]:
    """username -> field -> (the box's latest queued value, its time, the events carrying the field)."""
    found: dict[str, dict[str, tuple[str, float, list[Event]]]] = {}
    for e in (Event.select().where(Event.status == Event.QUEUED, Event.type == "user").order_by(Event.id)):
        if e.username not in usernames or "update" not in e.data:
            continue
        for k in e.data["update"]:
            events = found.get(e.username, {}).get(k, ("", 0.0, []))[2]
            found.setdefault(e.username, {})[k] = (str(e.data.get(k) or ""), _time(e.event_time), [*events, e])
    return found


def profiles_down(run: Session, box: MoodleClient) -> None:
    """The box's token rejected or the box's Moodle gone raise BoxTokenRejected or BoxUnreachable
    (agent/down/boxcalls.py) at the first learner: pull_down says so once."""
    learners = {p.username: p.userid for p in Participant.select(Participant.username, Participant.userid,
                                                                 Participant.roles)
                if "student" in (p.roles or [])}
    if not learners:
        return
    names = sorted(learners)
    server: dict[str, dict[str, str]] = {}
    for start in range(0, len(names), LOOKUP_CHUNK):
        answer = run.client.call(LOOKUP, {"field": "username", "values": names[start:start + LOOKUP_CHUNK]})
        for u in answer or []:
            if isinstance(u, dict) and u.get("username") in learners:
                # A field the token's user may not see is left out of the answer: it is not compared.
                # (Moodle leaves out an empty idnumber too: that one reads as empty.)
                server[str(u["username"])] = {k: str(u.get(k) or "") for k in PROFILE_FIELDS if k in u or k == "idnumber"}
    found = sorted(server)
    states = {}
    for start in range(0, len(found), 500):  # SQLite's variable limit on old builds
        states.update({s.username: s for s in ProfileState.select().where(
            ProfileState.username.in_(found[start:start + 500]))})
    waiting = waiting_changes(set(server))
    now = iso(utcnow())
    quiet: list[tuple[ProfileState, dict[str, str]]] = []  # nothing to write: saved together at the end
    for username, theirs in sorted(server.items()):
        state = states.get(username) or ProfileState(username=username)
        before = {**theirs, **{k: v for k, v in (state.server or {}).items() if k in theirs}}
        on_box = profile_of(state.box) if state.box is not None else None
        write: dict[str, str] = {}
        conflicts: list[dict[str, Any]] = []
        settled: dict[str, str | None] = {}  # field -> why the box's change is not sent (None: already there)
        for k in theirs:
            if theirs[k] == before[k] or (not theirs[k] and k != "idnumber"):
                continue
            box_change = waiting.get(username, {}).get(k)
            if box_change is None:
                if on_box is None or on_box[k] != theirs[k]:
                    write[k] = theirs[k]
                continue
            box_value, box_time, _ = box_change
            if box_value == theirs[k]:
                settled[k] = None  # already there
                continue
            box_wins = box_time > _time(state.server_seen_at)
            rule = "the later change wins" if box_time != _time(state.server_seen_at) else "a tie keeps the server's"
            conflicts.append({"sync_id": run.rec.row.id, "course_id": 0, "username": username, "cmid": 0, "kind": k,
                              "box_value": 0.0, "server_value": 0.0, "kept": "box" if box_wins else "server",
                              "rule": rule, "at": now, "box_text": box_value, "server_text": theirs[k]})
            if not box_wins:
                write[k] = theirs[k]
                settled[k] = f"changed on both sides: box {box_value!r}, server {theirs[k]!r}; the server's kept ({rule})"
        if write:
            try:
                answer = box_call(box, UPDATE_USERS, {"users": [{"id": learners[username], **write}]})
            except MoodleError as exc:
                run.rec.errors.append(f"learner {username}: the box's Moodle refused the server's profile: {exc}")
                continue
            words = warnings_words(answer)
            if words is not None:
                run.rec.errors.append(f"learner {username}: the box's Moodle refused the server's profile: {words}")
                continue
        if write or conflicts or settled or username not in states:
            save(run, state, theirs, write, conflicts, settled, waiting.get(username, {}), now)
        else:
            quiet.append((state, theirs))
    save_quiet(quiet, now)


def save_quiet(quiet: list[tuple[ProfileState, dict[str, str]]], now: str | None) -> None:
    """The learners with nothing to write: their server profile as read now, and when, in one commit
    (a box of thousands of learners must not pay one fsync each on its SD card)."""
    same = [state.username for state, theirs in quiet if {**(state.server or {}), **theirs} == state.server]
    with database.obj.atomic():
        for start in range(0, len(same), 500):
            ProfileState.update(server_seen_at=now).where(ProfileState.username.in_(same[start:start + 500])).execute()
        for state, theirs in quiet:
            merged = {**(state.server or {}), **theirs}
            if merged != state.server:
                ProfileState.update(server=merged, server_seen_at=now).where(
                    ProfileState.username == state.username).execute()


def save(run: Session, state: ProfileState, theirs: dict[str, str], write: dict[str, str], conflicts: list[dict],
         settled: dict[str, str | None], waiting: dict[str, tuple[str, float, list[Event]]], now: str | None) -> None:
    """One learner's outcome, one commit: the server's profile as now known,
    the box's as written, the conflicts, the box's changes no longer to send."""
    with database.obj.atomic():
        state.server, state.server_seen_at = {**(state.server or {}), **theirs}, now
        if write:
            state.box = {**profile_of(state.box or theirs), **write}
        state.save(force_insert=ProfileState.get_or_none(ProfileState.username == state.username) is None)
        for k, why in settled.items():
            for queued in waiting[k][2]:
                e = Event.get_by_id(queued.id)
                left = [f for f in e.data.get("update", []) if f != k]
                e.data = {**e.data, "update": left}
                if not left and why is None:  # all of it already on the server
                    e.status, e.sent_at, e.sync_id = Event.SENT, now, run.rec.row.id
                elif not left:
                    e.status, e.last_error, e.sync_id = Event.DISCARDED, why, run.rec.row.id
                e.save()
        if conflicts:
            TwoWayConflict.insert_many(conflicts).execute()
            run.rec.actions["two_way_conflicts"] += len(conflicts)
        if write:
            run.rec.actions["profiles_down"] += 1
        run.rec.save()

