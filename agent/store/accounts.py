"""What the box remembers of learners' accounts (issue 19): the accounts the
agent made on the box's Moodle, the account writes under way there, and each
learner's profile as last seen on both sides.

The tables are created by open_db (agent/store/db.py) with the others.
"""

from __future__ import annotations

import peewee as pw

from .db import BaseModel, JSONField


class PendingAccount(BaseModel):
    """A learner's account or password being written into the box's Moodle
    (agent/learners.py): stored before the first call, deleted in the
    transaction that queues what the server gets. A kill in between leaves
    it here; the next collection or learners command finishes it. Its
    password is erased with it (secure_delete, then the WAL checkpointed)."""

    username = pw.CharField(max_length=100, primary_key=True)
    action = pw.CharField(max_length=16)  # "add" or "password"
    data = JSONField()  # the profile, the server's course ids, also_server
    password = pw.CharField(max_length=255)
    created_at = pw.CharField()


class BoxAccount(BaseModel):
    """An account the agent made on the box's Moodle: added by a teacher
    (origin "page": with a password) or brought down from the server
    (origin "down": made with Moodle's createpassword, whose e-mail never
    leaves an offline box: it needs a password set on the page)."""

    username = pw.CharField(max_length=100, primary_key=True)
    box_userid = pw.IntegerField()
    origin = pw.CharField(max_length=8)
    password_set = pw.BooleanField(default=False)
    made_at = pw.CharField()


class ProfileState(BaseModel):
    """A learner's profile (firstname, lastname, email, idnumber) as last
    collected from the box's Moodle, and as last read from the server, with
    when: what the next collection and the next sync down compare with."""

    username = pw.CharField(max_length=100, primary_key=True)
    box = JSONField(null=True)
    box_version = pw.IntegerField(default=0)  # how many box changes were queued: in the events' ids
    server = JSONField(null=True)
    server_seen_at = pw.CharField(null=True)  # ISO 8601 UTC: the last sync that read it


ACCOUNT_MODELS = [PendingAccount, BoxAccount, ProfileState]
