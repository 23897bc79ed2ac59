"""Learners' accounts that work on both sides (issue 19): the page's and the
CLI's operations on the box's own Moodle ([box]).

Moodle's web services never give a password back, so the agent cannot copy
one it did not see. It sees the passwords set through it: a learner added
here, or a password set here, is written into the box's Moodle at once (the
learner can log in there in the same minute) and queued, with the password,
as a ``user`` event for the server's next sync (agent/push/plan.py creates
or updates the account there with it; the password is erased once the
server confirmed it).

Each operation is made safe against a kill at any point: the password and
what to do are stored first (PendingAccount), then the box's Moodle is
written, then, in one transaction, the server's events are queued and the
pending row deleted. A kill in between leaves the row: :func:`finish_pending`
(the next collection, or the next learners command) does the rest, and the
box's calls are safe to repeat (the account is looked up before it is made;
an enrolment or a password set again changes nothing).
"""

from __future__ import annotations

import html
import logging
import re
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable

from .config import Config
from .kinds import COURSES_BY_FIELD, CREATE_USERS, ENROL, LOOKUP, PROFILE_FIELDS, UPDATE_USERS, profile_of
from .roles import STUDENT_ROLE_ID
from .moodle import MoodleClient, MoodleError, TokenRejected
from .moodle.clients import connect_to
from .store.db import BoxAccount, PendingAccount, erase_wal
from .store.db import BoxCourse, Course, Event, KnownUser, Participant, Secret, ServerSeen, database, first_column, \
    iso, utcnow
from .store.queue import EMAIL_RE, USERNAME_RE, NewEvent, enqueue
from .text import warnings_words

log = logging.getLogger(__name__)

# What the box's token needs for the Learners screen and `learners` (moodle-sync-agent check lists what it lacks).
BOX_FUNCTIONS = [LOOKUP, CREATE_USERS, UPDATE_USERS, ENROL]

# Generated passwords: short, read aloud and typed by pupils, so no 0/O, 1/l/I;
# they meet Moodle's default policy (8+ characters, a digit, a lower and an
# upper case letter, a non-alphanumeric).
UPPER, LOWER, DIGITS, SPECIAL = "ABCDEFGHJKLMNPQRSTUVWXYZ", "abcdefghjkmnpqrstuvwxyz", "23456789", "#-*+"


class LearnerError(ValueError):
    """A learner operation refused: bad input, or the box's Moodle said no. ``field`` names the input."""

    def __init__(self, problem: str, field: str | None = None):
        self.problem, self.field = problem, field
        super().__init__(f"{field}: {problem}" if field else problem)


def generate_password() -> str:
    """Like "Kemp-48xa": an upper case letter, three lower case, a sign, two digits, two lower case."""
    pick = secrets.choice
    return (pick(UPPER) + "".join(pick(LOWER) for _ in range(3)) + pick(SPECIAL)
            + "".join(pick(DIGITS) for _ in range(2)) + "".join(pick(LOWER) for _ in range(2)))


def refusal(exc: MoodleError) -> str:
    """The box's Moodle's refusal, as it said it. Its password policy answers
    core_user_create_users with the policy's own text as the error code (one
    <div> per broken rule, recording 93), and core_user_update_users with
    invalidresponse (recording 90), which names no rule."""
    if exc.errorcode.startswith("<div>"):
        rules = [html.unescape(r).strip() for r in re.split(r"</?div>", exc.errorcode) if r.strip()]
        return "the box's Moodle refused the password (its password policy): " + " ".join(rules)
    if exc.errorcode == "invalidresponse" and exc.function == UPDATE_USERS:
        return (f"the box's Moodle refused the password: {exc.message} ({exc.errorcode}); Moodle answers so "
                "when a password breaks its password policy")
    return f"the box's Moodle refused {exc.function}: {exc.message} ({exc.errorcode})"


# -- the box's Moodle ------------------------------------------------------------


def box_client(config: Config) -> MoodleClient:
    if config.box is None:
        raise LearnerError(f"{config.path}: [box] url is not set: there is no box's Moodle to write into")
    return connect_to(config.box, config)


def call(box: MoodleClient, function: str, args: dict[str, Any]) -> Any:
    try:
        return box.call(function, args)
    except TokenRejected:
        raise LearnerError("the box's Moodle rejected its token ([box] token_file)") from None
    except MoodleError as exc:
        raise LearnerError(refusal(exc)) from None


def box_user(box: MoodleClient, username: str) -> dict[str, Any] | None:
    found = call(box, LOOKUP, {"field": "username", "values": [username]})
    return next((u for u in found or [] if isinstance(u, dict) and u.get("username") == username), None)


# -- listing ---------------------------------------------------------------------


def list_learners(config: Config) -> list[dict[str, Any]]:
    """The learners of the courses kept on the box (as last collected), and
    the accounts the agent made there: where each account exists (box,
    server, both, or waiting for the next sync) and whether it needs a
    password to log in on the box. Only the box's database is read."""
    shortnames = {c.id: c.shortname for c in Course.select(Course.id, Course.shortname)}
    box_courses = {b.id: b.course_id for b in BoxCourse.select(BoxCourse.id, BoxCourse.course_id)}
    rows: dict[str, dict[str, Any]] = {}
    for p in Participant.select().order_by(Participant.username):
        if "student" not in (p.roles or []):
            continue
        row = rows.setdefault(p.username, {"username": p.username, "courses": [], **profile_of(p.profile)})
        course = shortnames.get(box_courses.get(p.box_course_id, 0))
        if course and course not in row["courses"]:
            row["courses"].append(course)
    # An account marked before the way down made it is listed once its box id is known.
    made = {a.username: a for a in BoxAccount.select().where(BoxAccount.box_userid != 0)}
    for username in set(made) - set(rows):  # not collected yet: as the agent queued them
        rows[username] = {"username": username, "courses": [], **profile_of({})}
        for e in Event.select(Event.type, Event.data, Event.course_id).where(Event.username == username,
                                                                             Event.type.in_(["user", "enrolment"])):
            if e.type == "user" and e.data.get("firstname"):
                rows[username].update(profile_of(e.data))
            elif e.type == "enrolment" and shortnames.get(e.course_id or 0) not in (None, *rows[username]["courses"]):
                rows[username]["courses"].append(shortnames[e.course_id or 0])
    for pending in PendingAccount.select(PendingAccount.username, PendingAccount.data):
        rows.setdefault(pending.username, {"username": pending.username, "courses": [],
                                           **profile_of(pending.data.get("profile", {}))})
    on_server = set(first_column(KnownUser.select(KnownUser.username).where(KnownUser.site == config.moodle.url)))
    seen: list[Any] = list(ServerSeen.select(ServerSeen.username, ServerSeen.course_id).where(
        ServerSeen.kind == "enrolment").tuples())
    for username, course_id in seen:  # learners of the server's courses (direction down or both)
        on_server.add(username)
        row = rows.setdefault(username, {"username": username, "courses": [], **profile_of({}), "server_only": True})
        if row.get("server_only") and shortnames.get(course_id) and shortnames[course_id] not in row["courses"]:
            row["courses"].append(shortnames[course_id])
    waiting = set(first_column(Event.select(Event.username).where(Event.status == Event.QUEUED,
                                                                  Event.type == "user")))
    pending_names = set(first_column(PendingAccount.select(PendingAccount.username)))
    for username, row in rows.items():
        a = made.get(username)
        if username in pending_names:
            where = "pending"
        elif row.pop("server_only", False):
            where = "server"
        elif username in on_server:
            where = "both"
        elif username in waiting:
            where = "waiting"
        else:
            where = "box"
        row.update(account=where, made_by_agent=a.origin if a else None,
                   needs_password=bool(a and a.origin == "down" and not a.password_set),
                   password_queued=username in waiting and _password_queued(username))
    return sorted(rows.values(), key=lambda r: r["username"])


def _password_queued(username: str) -> bool:
    return Secret.select().join(Event).where(Event.username == username, Event.status == Event.QUEUED).exists()


def kept_course(text: str) -> Course:
    """A course kept on the box, by its server id or short name."""
    course = Course.get_or_none(Course.id == int(text)) if text.isdigit() else None
    course = course or Course.get_or_none(Course.shortname == text)
    if course is None:
        raise LearnerError(f"{text!r} is not a course kept on this box (moodle-sync-agent courses list)", "course")
    return course


# -- adding ----------------------------------------------------------------------


@dataclass
class NewLearner:
    username: str
    firstname: str
    lastname: str
    email: str = ""
    idnumber: str = ""
    courses: list[str] = field(default_factory=list)  # server ids or short names of kept courses

    def check(self) -> None:
        if not self.username or len(self.username) > 100 or not USERNAME_RE.fullmatch(self.username):
            raise LearnerError(f"{self.username!r} is not a valid Moodle username (lowercase letters, digits, "
                               "_ . @ -, at most 100 characters)", "username")
        for name in ("firstname", "lastname"):
            value = getattr(self, name)
            if not value.strip() or len(value) > 100:
                raise LearnerError("must not be empty (at most 100 characters)", name)
        if self.email and (len(self.email) > 100 or not EMAIL_RE.fullmatch(self.email)):
            raise LearnerError(f"{self.email!r} is not an e-mail address", "email")
        if len(self.idnumber) > 255:
            raise LearnerError("is longer than 255 characters", "idnumber")
        if not self.courses:
            raise LearnerError("name at least one course kept on the box to enrol the learner in", "course")

    def profile(self) -> dict[str, str]:
        # Moodle requires an e-mail address, unique on the site; without one
        # the account gets an address that can never receive mail (.invalid).
        return {"firstname": self.firstname.strip(), "lastname": self.lastname.strip(),
                "email": self.email or f"{self.username}@no-email.invalid", "idnumber": self.idnumber}


def check_password(password: str | None) -> str:
    if not password:
        raise LearnerError("is empty", "password")
    if len(password) > 255 or any(ord(c) < 32 for c in password):
        raise LearnerError("must be one line of at most 255 characters", "password")
    return password


def add_learner(config: Config, learner: NewLearner, password: str) -> dict[str, Any]:
    """Make the account and the enrolments on the box's Moodle now; queue them, with the password, for the server."""
    learner.check()
    check_password(password)
    courses = [kept_course(c) for c in learner.courses]
    box = box_client(config)
    finish_left(config, box)
    if Participant.select().where(Participant.username == learner.username).exists() or \
            BoxAccount.get_or_none(BoxAccount.username == learner.username) or box_user(box, learner.username):
        raise LearnerError(f"{learner.username!r} already exists on the box's Moodle: pick another username, "
                           "or set this learner's password", "username")
    if KnownUser.select().where(KnownUser.site == config.moodle.url, KnownUser.username == learner.username).exists():
        raise LearnerError(f"{learner.username!r} is an account of the server already: pick another username",
                           "username")
    with database.obj.atomic("IMMEDIATE"):
        if PendingAccount.get_or_none(PendingAccount.username == learner.username):
            raise LearnerError(f"{learner.username!r} is being added already", "username")
        PendingAccount.create(username=learner.username, action="add", password=password, created_at=iso(utcnow()),
                              data={"profile": learner.profile(), "courses": [c.id for c in courses],
                                    "also_server": True})
    pending = PendingAccount.get_by_id(learner.username)
    try:
        return finish(config, box, pending, first=True)
    finally:
        erase_wal()


def finish(config: Config, box: MoodleClient, pending: PendingAccount, first: bool = False) -> dict[str, Any]:
    """Do (or finish) one pending add or password. The first attempt's
    refusal by the box's Moodle drops it: nothing is half-made."""
    try:
        if pending.action == "add":
            return _finish_add(config, box, pending, first)
        return _finish_password(config, box, pending)
    except LearnerError:
        if first or pending.action == "password":
            drop(pending.username)
        raise


def _finish_add(config: Config, box: MoodleClient, pending: PendingAccount, first: bool) -> dict[str, Any]:
    data, username = pending.data, pending.username
    courses = [Course.get_by_id(c) for c in data["courses"] if Course.get_or_none(Course.id == c)]
    box_ids = [box_course_id(config, box, c) for c in courses]  # before anything is made
    existing = None if first else box_user(box, username)
    if existing is None:
        created = call(box, CREATE_USERS, {"users": [
            {"username": username, "auth": "manual", "password": pending.password, **data["profile"]}]})
        userid = int(created[0]["id"])
    else:  # made before a kill: the password is set again, which changes nothing
        userid = int(existing["id"])
        update_password(box, userid, pending.password)
    if box_ids:
        call(box, ENROL, {"enrolments": [
            {"roleid": STUDENT_ROLE_ID, "userid": userid, "courseid": b} for b in box_ids]})
    events = [user_event(config, username, data["profile"], pending.password, fields=None)]
    # (The collection queues the same enrolments again once it sees the learner: checked, and settled without a call.)
    events += [NewEvent(key=f"learner-{uuid.uuid4().hex}", type="enrolment", username=username, course_id=c.id,
                        data={"role": "student"}) for c in courses]
    with database.obj.atomic("IMMEDIATE"):
        enqueue(events, config=config)
        BoxAccount.insert(username=username, box_userid=userid, origin="page", password_set=True,
                          made_at=iso(utcnow())).on_conflict_replace().execute()
        PendingAccount.delete().where(PendingAccount.username == username).execute()
    return {"username": username, "box_userid": userid, "courses": [c.shortname for c in courses],
            "password": pending.password, "also_server": True}


def box_course_id(config: Config, box: MoodleClient, course: Course) -> int:
    """The kept course's id on the box's Moodle: as collected, else found by its short name."""
    known = BoxCourse.get_or_none(BoxCourse.course_id == course.id)
    if known is not None:
        return int(known.id)
    found = call(box, COURSES_BY_FIELD, {"field": "shortname", "value": course.shortname})
    for c in (found or {}).get("courses") or []:
        if c.get("shortname") == course.shortname:
            return int(c["id"])
    raise LearnerError(f"course {course.shortname} is not on the box's Moodle", "course")


def user_event(config: Config, username: str, profile: dict[str, str], password: str | None,
               fields: list[str] | None) -> NewEvent:
    """A ``user`` event for the server: created there with the profile if
    missing, else updated: ``fields`` the profile fields to update (None:
    all of them; [] only the password). Its own id: never a duplicate of a
    collected one, which would take its password away."""
    data: dict[str, Any] = {k: v for k, v in profile.items() if k in PROFILE_FIELDS and (v or k == "idnumber")}
    if fields is not None:
        data["update"] = list(fields)
    return NewEvent(key=f"learner-{uuid.uuid4().hex}", type="user", username=username, data=data,
                    password=password)


# -- setting a password ----------------------------------------------------------


def update_password(box: MoodleClient, userid: int, password: str) -> None:
    answer = call(box, UPDATE_USERS, {"users": [{"id": userid, "password": password}]})
    words = warnings_words(answer)
    if words is not None:
        raise LearnerError(f"the box's Moodle refused the password: {words}", "password")


def default_also_server(username: str) -> bool:
    """"Also on the server" is the default for the accounts the agent made."""
    return BoxAccount.get_or_none(BoxAccount.username == username) is not None


def set_password(config: Config, username: str, password: str, also_server: bool) -> dict[str, Any]:
    """Set a learner's password on the box's Moodle now; with ``also_server``, queue it for the server."""
    check_password(password)
    box = box_client(config)
    finish_left(config, box)
    known = (Participant.select().where(Participant.username == username).exists()
             or BoxAccount.get_or_none(BoxAccount.username == username) is not None)
    if not known:
        raise LearnerError(f"{username!r} is not a learner of the courses kept on this box "
                           "(moodle-sync-agent learners list)", "username")
    with database.obj.atomic("IMMEDIATE"):
        PendingAccount.delete().where(PendingAccount.username == username).execute()
        PendingAccount.create(username=username, action="password", password=password, created_at=iso(utcnow()),
                              data={"also_server": also_server})
    try:
        return finish(config, box, PendingAccount.get_by_id(username), first=True)
    finally:
        erase_wal()


def _finish_password(config: Config, box: MoodleClient, pending: PendingAccount) -> dict[str, Any]:
    username = pending.username
    found = box_user(box, username)
    if found is None:
        raise LearnerError(f"{username!r} has no account on the box's Moodle", "username")
    update_password(box, int(found["id"]), pending.password)
    profile = profile_of(found)
    also_server = bool(pending.data.get("also_server"))
    with database.obj.atomic("IMMEDIATE"):
        if also_server:
            enqueue([user_event(config, username, profile, pending.password, fields=[])], config=config)
        BoxAccount.update(password_set=True).where(BoxAccount.username == username).execute()
        PendingAccount.delete().where(PendingAccount.username == username).execute()
    return {"username": username, "box_userid": int(found["id"]), "password": pending.password,
            "also_server": also_server}


# -- after a kill ----------------------------------------------------------------


def finish_left(config: Config, box: MoodleClient) -> None:
    """Before an operation: finish what a kill left. A refusal of that is
    about another learner: it is logged, not raised."""
    problems: list[str] = []
    finish_pending(config, box, problems)
    for problem in problems:
        log.warning("%s", problem)


def is_pending(username: str) -> bool:
    return PendingAccount.get_or_none(PendingAccount.username == username) is not None


def drop(username: str) -> None:
    with database.obj.atomic():
        PendingAccount.delete().where(PendingAccount.username == username).execute()


def finish_pending(config: Config, box: MoodleClient, errors: list[str] | None = None) -> int:
    """Finish what a killed add or password left; returns how many were
    finished. A refusal now drops the row, named in ``errors`` (the
    collection's) or raised."""
    done = 0
    rows: Iterable[PendingAccount] = list(PendingAccount.select().order_by(PendingAccount.created_at))
    for pending in rows:
        try:
            finish(config, box, pending)
            done += 1
        except LearnerError as exc:
            drop(pending.username)
            if errors is None:
                raise
            errors.append(f"learner {pending.username}: what was left of a {pending.action} was dropped: {exc}")
    if rows:
        erase_wal()
    return done


def mark_made_down(usernames: list[str]) -> None:
    """Accounts the way down is about to make on the box's Moodle with
    createpassword (agent/down/pull.py): no password works there until one
    is set here. Marked before Moodle makes them, without their box id yet
    (0, and not listed), so that a kill just after it did leaves them
    marked; :func:`made_down_ids` fills the id in."""
    now = iso(utcnow())
    with database.obj.atomic():
        for username in usernames:
            BoxAccount.insert(username=username, box_userid=0, origin="down", password_set=False,
                              made_at=now).on_conflict_ignore().execute()


def made_down_ids(ids: dict[str, int]) -> None:
    """The box's ids of accounts marked by :func:`mark_made_down`, as Moodle
    answered their making or, after a kill, the look-up found them."""
    with database.obj.atomic():
        for username, userid in ids.items():
            BoxAccount.update(box_userid=userid).where(BoxAccount.username == username,
                                                       BoxAccount.origin == "down",
                                                       BoxAccount.box_userid == 0).execute()
