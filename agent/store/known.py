"""What the box remembers of the server between runs: the account id of each
username, and the enrolments the server confirmed, each with when.

A box syncs daily, mostly for the same learners; looking them up and
checking their enrolments every day would cost more than the sync's own
work (the figures are in docs/performance.md). A fact is trusted for
TRUST_DAYS after the server confirmed it: it looked the username up, it
created the account or the enrolment for this agent, or it answered an
enrolment check. Older facts are asked again.

Why the age matters: Moodle silently accepts a completion override for a
user id that does not exist (recording 20). An account deleted on the server
and created again under the same username gets a new id; until the old
id's fact ages out, the box sends that learner's completions to the old id.
TRUST_DAYS bounds that window to a week of daily syncs, and `verify` (which
always looks the users up afresh, and stores what it found here) puts what
went to the old id back in the queue. A learner unenrolled on the server is
likewise still taken as enrolled for up to TRUST_DAYS; Moodle keeps what
the box sends for them (recording 19), and it shows again if they are
enrolled again.

The facts are kept per server address: pointed at another server, the box
knows nothing there.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterable

from .db import KnownEnrolment, KnownUser, iso, utcnow

TRUST_DAYS = 7
# An older account id is not trusted, but still worth asking about: the
# enrolment check answers the account's username with its profile, so it
# confirms the id and the enrolment at once, without a look-up first. Past
# this, the learner has left the box: the fact is deleted.
KEEP_DAYS = 60


def _since(now: datetime | None = None, days: int = TRUST_DAYS) -> str:
    return iso((now or utcnow()) - timedelta(days=days)) or ""


def users(site: str, now: datetime | None = None) -> tuple[dict[str, int], dict[str, int]]:
    """Username -> account id: the facts within their age, and the older ones."""
    since = _since(now)
    rows: list[Any] = list(KnownUser.select(KnownUser.username, KnownUser.user_id, KnownUser.confirmed_at)
                           .where(KnownUser.site == site).tuples())
    trusted = {str(username): int(uid) for username, uid, at in rows if at >= since}
    return trusted, {str(username): int(uid) for username, uid, at in rows if at < since}


def trusted_enrolments(site: str, now: datetime | None = None) -> dict[int, set[int]]:
    """Course id -> the user ids confirmed enrolled there, within the age."""
    out: dict[int, set[int]] = {}
    rows: list[Any] = list(KnownEnrolment.select(KnownEnrolment.course_id, KnownEnrolment.user_id)
            .where(KnownEnrolment.site == site, KnownEnrolment.confirmed_at >= _since(now)).tuples())
    for course_id, uid in rows:
        out.setdefault(int(course_id), set()).add(int(uid))
    return out


def _insert(model: type[KnownUser] | type[KnownEnrolment], rows: list[dict]) -> None:
    # A few hundred rows a statement: SQLite caps the variables of one statement.
    for start in range(0, len(rows), 200):
        model.insert_many(rows[start:start + 200]).on_conflict_replace().execute()


def confirm_users(site: str, ids: dict[str, int]) -> None:
    now = iso(utcnow())
    _insert(KnownUser, [{"site": site, "username": u, "user_id": uid, "confirmed_at": now}
                        for u, uid in ids.items()])


def forget_users(site: str, usernames: Iterable[str]) -> None:
    names = list(usernames)
    if names:
        KnownUser.delete().where(KnownUser.site == site, KnownUser.username.in_(names)).execute()


def forget_user_ids(site: str, ids: Iterable[int]) -> None:
    uids = list(ids)
    if uids:
        KnownUser.delete().where(KnownUser.site == site, KnownUser.user_id.in_(uids)).execute()


def confirm_enrolments(site: str, pairs: Iterable[tuple[int, int]]) -> None:
    now = iso(utcnow())
    _insert(KnownEnrolment, [{"site": site, "course_id": c, "user_id": uid, "confirmed_at": now}
                             for c, uid in pairs])


def forget_enrolments(site: str, pairs: Iterable[tuple[int, int]]) -> None:
    for course_id, uid in pairs:
        KnownEnrolment.delete().where(KnownEnrolment.site == site, KnownEnrolment.course_id == course_id,
                                      KnownEnrolment.user_id == uid).execute()


def forget_old(site: str, now: datetime | None = None) -> None:
    """Delete the facts of learners gone from the box, and of another server;
    only when there are some (a read costs less than a write on an SD card)."""
    since = _since(now, KEEP_DAYS)
    for model in (KnownUser, KnownEnrolment):
        old = (model.site != site) | (model.confirmed_at < since)
        if model.select().where(old).exists():
            model.delete().where(old).execute()
