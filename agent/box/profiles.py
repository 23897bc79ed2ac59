"""Profiles follow (issue 19): a learner's first name, last name, e-mail
address or idnumber changed in the box's Moodle becomes a ``user`` event
that updates those fields on the server (agent/push/plan.py, ``update``).

The collection (agent/box/collect.py) hands each course's participants to
:func:`profile_events` inside the course's transaction: the last collected
profile of each learner (ProfileState.box) moves with the events, so a
collection cut off and run again queues nothing twice, and a learner in two
kept courses is compared once. A learner seen for the first time sets the
baseline: nothing is sent for it (a new account goes up whole, as a
newcomer). Usernames never change; deletions and suspensions never travel.
"""

from __future__ import annotations

from typing import Iterable

from ..kinds import PROFILE_FIELDS, profile_of
from ..store.db import ProfileState
from ..store.db import iso, utcnow
from ..store.queue import NewEvent
from .diff import Learner, event_key

def profile_events(box_name: str, learners: Iterable[Learner]) -> list[NewEvent]:
    """The box's profile changes since the last collection, as events; the
    new profiles are written to ProfileState (the caller's transaction)."""
    students = {u.username: profile_of(dict(u.profile)) for u in learners if u.role is not None}
    if not students:
        return []
    names = sorted(students)
    states = {}
    for start in range(0, len(names), 500):  # SQLite's variable limit on old builds
        states.update({s.username: s for s in ProfileState.select().where(
            ProfileState.username.in_(names[start:start + 500]))})
    now = iso(utcnow())
    events = []
    first = [{"username": u, "box": students[u]} for u in names if u not in states]
    for start in range(0, len(first), 200):  # seen for the first time: the baseline
        ProfileState.insert_many(first[start:start + 200]).execute()
    for username, new in sorted(students.items()):
        state = states.get(username)
        if state is None:
            continue
        if state.box is None:
            state.box = new
            state.save()
            continue
        old = profile_of(state.box)
        changed = [k for k in PROFILE_FIELDS if new[k] != old[k] and (new[k] or k == "idnumber")]
        if not changed:
            continue
        state.box_version += 1
        data = {**{k: v for k, v in new.items() if v or k == "idnumber"}, "update": changed}
        events.append(NewEvent(key=event_key(box_name, "", username, "", "profile", state.box_version,
                                             "|".join(new[k] for k in PROFILE_FIELDS)),
                               type="user", username=username, data=data, event_time=now))
        state.box = new
        state.save()
    return events
