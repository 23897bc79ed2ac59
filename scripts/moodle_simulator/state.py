"""The site's records, their indexes and its clock: what Moodle keeps in its database.

The web service functions (course.py, user.py, enrol.py, ...) read and write
these records; changes.py adds what people do in Moodle's pages.  Users and
enrolments are read through the methods here (user, user_id,
course_enrolments, ...), never through the dicts, because participant
blocks (participants.py) keep most of a big course's users as a rule: what
those methods return for a block's user is a throwaway copy, so code that
changes a user or an enrolment gets it from user_for_update() or enrol().
"""

from __future__ import annotations

import heapq
import re
import threading
import time
from typing import Any, Callable, Iterator

from .config import ADMIN_ID, GUEST_ID, SERVER_SITE, SERVICE_FUNCTIONS, SITE_COURSE, STUDENT_ROLE, THEMEREV, SiteName
from .errors import missing_record
from .participants import ParticipantBlock
from .php import php_str


class Record(dict):
    """A database row: a dict with attribute access."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    __setattr__ = dict.__setitem__


class Site:
    """In-memory Moodle site.  Callers hold ``self.lock`` while they read or write records."""

    def __init__(self, wwwroot: str = "http://127.0.0.1", service_functions: list[tuple[str, str]] | None = None,
                 name: SiteName = SERVER_SITE):
        self.lock = threading.RLock()
        self.wwwroot = wwwroot
        self.name = name
        self._frozen_time: int | None = None
        self.clock_offset: Callable[[], float] = lambda: 0   # SimServer links it to the clock_offset_s fault
        self.service = dict(service_functions if service_functions is not None else SERVICE_FUNCTIONS)
        # External services by short name (accounts.py): the tokens' custom service holds self.service;
        # moodle_mobile_app is enabled when mobile web services are on (the box, 80_), else disabled (83_).
        self.mobile_services = False
        self.services: dict[str, Record] = {}
        self.acting_service: dict | None = None    # the functions of the running call's token's service
        self.admin_token: str | None = None         # the token given at start: the admin's, for self.service
        self.clear()

    # -- clock -------------------------------------------------------------
    def now(self) -> int:
        if self._frozen_time is not None:
            return self._frozen_time
        return int(time.time() + (self.clock_offset() or 0))

    def set_clock(self, timestamp: float | None = None) -> None:
        """Freeze the site clock at ``timestamp`` (None: follow the real clock)."""
        with self.lock:
            self._frozen_time = None if timestamp is None else int(timestamp)

    # -- records -------------------------------------------------------------
    def clear(self) -> None:
        """An empty site: only the site course, the guest and the admin."""
        with self.lock:
            self.courses: dict[int, Record] = {}
            self.sections: dict[int, list[Record]] = {}   # courseid -> section records, by number
            self.cms: dict[int, Record] = {}
            self.users: dict[int, Record] = {}
            self.users_by_username: dict[str, int] = {}
            self.users_by_idnumber: dict[str, set[int]] = {}
            self.users_by_email: dict[str, set[int]] = {}   # lower-case email -> ids
            self.enrolments: dict[int, dict[int, Record]] = {}   # courseid -> {userid: enrolment}
            self.user_courses: dict[int, set[int]] = {}          # userid -> courseids
            self.blocks: list[ParticipantBlock] = []
            self.completions: dict[tuple[int, int], dict] = {}   # (cmid, userid) -> state, time, overrideby
            self.grade_items: dict[int, Record] = {}
            self.grade_item_keys: dict[tuple, int] = {}   # (courseid, itemmodule, iteminstance, itemnumber)
            self.course_items: dict[int, int] = {}        # courseid -> itemid of the course total
            self.grades: dict[tuple[int, int], Record] = {}   # (itemid, userid) -> grade
            self.course_access: dict[tuple[int, int], int] = {}   # (userid, courseid) -> user_lastaccess time
            self.tokens: dict[str, tuple[int, str]] = {}          # login/token.php's tokens -> (userid, service)
            self.roles: dict[str, Record] = {}                    # rights.py: preset roles by short name
            self.role_assignments: set[tuple[int, str, str, int]] = set()   # (userid, role, level, instance)
            # mod_assign's own grade table (assign_grades), apart from the grade book: id -> row
            # {id, assignment (instance id), userid, attemptnumber, timecreated, timemodified, grader, grade}
            self.assign_grades: dict[int, Record] = {}
            self.assign_grade_keys: dict[tuple[int, int, int], int] = {}   # (assignment, userid, attempt) -> id
            # Course completion: the activity criteria of a course (cmids, all required), the criteria each
            # learner has met (course_completion_crit_compl) and the completed courses (course_completions).
            self.completion_criteria: dict[int, list[int]] = {}           # courseid -> cmids
            self.criteria_completions: dict[tuple[int, int, int], int] = {}   # (courseid, cmid, userid) -> time
            self.course_completions: dict[tuple[int, int], int] = {}      # (courseid, userid) -> timecompleted
            self.badges: dict[int, Record] = {}                            # course badges, by id
            self.badge_issues: dict[int, Record] = {}                      # badge_issued rows, by id
            self.next_ids: dict[str, Any] = {
                "user": 3, "course": 2, "cm": 1, "section": 1, "context": 3, "gradeitem": 1,
                "gradecategory": 1, "instance": {"page": 1, "url": 1, "assign": 1},
                "assigngrade": 1, "badge": 1, "badgeissued": 1}
            self.courses[SITE_COURSE["id"]] = Record(SITE_COURSE, fullname=self.name.fullname,
                                                     shortname=self.name.shortname, summary=self.name.summary,
                                                     enrol_manual=False)
            self.add_user_record(GUEST_ID, "guest", "Guest user", " ", "root@localhost", "", hidden=True)
            self.add_user_record(ADMIN_ID, "admin", "Admin", "User", "admin@example.invalid", "")

    @staticmethod
    def _user_record(uid: int, username: str, firstname: str, lastname: str, email: str, idnumber: str,
                     hidden: bool = False, **extra: Any) -> Record:
        u = Record(id=uid, username=username, firstname=firstname, lastname=lastname, email=email,
                   idnumber=idnumber, auth="manual", suspended=False, confirmed=True, lang="en", theme="",
                   timezone="99", mailformat=1, department="", hidden=hidden, password=None,
                   city="", country="", description="", institution="", calendartype="gregorian",
                   firstaccess=0, lastaccess=0)
        u.update(extra)
        return u

    def add_user_record(self, uid: int, username: str, firstname: str, lastname: str, email: str,
                        idnumber: str, hidden: bool = False, **extra: Any) -> Record:
        u = self._user_record(uid, username, firstname, lastname, email, idnumber, hidden, **extra)
        self.users[uid] = u
        self.index_user(u)
        return u

    def index_user(self, u: Record) -> None:
        self.users_by_username[u.username] = u.id
        self.users_by_idnumber.setdefault(php_str(u.idnumber), set()).add(u.id)
        self.users_by_email.setdefault(u.email.lower(), set()).add(u.id)

    def unindex_user(self, u: Record) -> None:
        if self.users_by_username.get(u.username) == u.id:
            del self.users_by_username[u.username]
        for index, key in ((self.users_by_idnumber, php_str(u.idnumber)), (self.users_by_email, u.email.lower())):
            ids = index.get(key)
            if ids is not None:
                ids.discard(u.id)
                if not ids:
                    del index[key]

    def enrol(self, courseid: int, userid: int, roleid: int, timestart: int = 0, timeend: int = 0,
              status: int = 0) -> Record:
        self.user_for_update(userid)
        enrol = self.enrolments.setdefault(courseid, {})
        e = enrol.get(userid)
        if e is None:
            e = Record(userid=userid, courseid=courseid, roles=[], status=status,
                       timestart=timestart, timeend=timeend, timecreated=self.now())
            enrol[userid] = e
            self.user_courses.setdefault(userid, set()).add(courseid)
        else:
            e.status, e.timestart, e.timeend = status, timestart, timeend
        if roleid not in e.roles:
            e.roles.append(roleid)
        return e

    def add_grade_item(self, itemid: int, courseid: int, itemmodule: str, iteminstance: int, itemnumber: int,
                       categoryid: int, itemname: str | None, cmid: int | None, grademax: float = 100.0) -> Record:
        item = Record(id=itemid, courseid=courseid, itemtype="mod", itemmodule=itemmodule,
                      iteminstance=iteminstance, itemnumber=itemnumber, categoryid=categoryid,
                      itemname=itemname, idnumber="", grademax=float(grademax), grademin=0.0, cmid=cmid)
        self.grade_items[itemid] = item
        self.grade_item_keys[(courseid, itemmodule, iteminstance, itemnumber)] = itemid
        return item

    def add_course_item(self, itemid: int, courseid: int, categoryid: int) -> None:
        self.grade_items[itemid] = Record(id=itemid, courseid=courseid, itemtype="course", itemmodule=None,
                                          iteminstance=categoryid, itemnumber=None, categoryid=None,
                                          itemname=None, idnumber=None, grademax=100.0, grademin=0.0,
                                          cmid=None)
        self.course_items[courseid] = itemid

    def ensure_course_item(self, courseid: int) -> tuple[int, int]:
        """The course's total grade item and its category, made on first use."""
        if courseid in self.course_items:
            itemid = self.course_items[courseid]
            return itemid, self.grade_items[itemid].iteminstance
        catid = self.next_id("gradecategory")
        itemid = self.next_id("gradeitem")
        self.add_course_item(itemid, courseid, catid)
        return itemid, catid

    def next_id(self, kind: str) -> int:
        v = self.next_ids[kind]
        self.next_ids[kind] = v + 1
        return v

    def bump_cacherev(self, courseid: int, times: int = 1) -> None:
        """increment_revision_number(): now if old < now, now if old > now + 1h, else old + 1."""
        c = self.courses[courseid]
        for _ in range(times):
            now = self.now()
            old = c.cacherev
            c.cacherev = now if (old is None or old < now or old > now + 3600) else old + 1

    def record_access(self, userid: int, courseid: int) -> int:
        """user_accesstime_log(): the user was in the course now (the site course: only the site lastaccess)."""
        now = self.now()
        u = self.user_for_update(userid)
        if u is not None:
            u.lastaccess = now
            u.firstaccess = u.firstaccess or now
        if courseid != SITE_COURSE["id"]:
            self.course_access[(userid, courseid)] = now
        return now

    def last_course_access(self, userid: int, courseid: int) -> int:
        return self.course_access.get((userid, courseid), 0)

    # -- look-ups --------------------------------------------------------------
    @staticmethod
    def _record_or_fail(records: dict, key: int, table: str, sql: str) -> Record:
        """Moodle's get_record(..., MUST_EXIST), with the query its error quotes."""
        record = records.get(key)
        if record is None:
            raise missing_record(table, sql, [key])
        return record

    def course_or_fail(self, courseid: int) -> Record:
        return self._record_or_fail(self.courses, courseid, "course", "SELECT * FROM {course} WHERE id = ?")

    def user_or_fail(self, userid: int) -> Record:
        user = self.user(userid)
        if user is None:
            raise missing_record("user", "SELECT * FROM {user} WHERE id = ?", [userid])
        return user

    def cm_or_fail(self, cmid: int) -> Record:
        return self._record_or_fail(self.cms, cmid, "course_modules",
                                    "SELECT id,course FROM {course_modules} WHERE id = ?")

    def assign_cm(self, instance: int) -> Record | None:
        """The course module of an assign instance (mod_assign_* take instance ids, not cmids)."""
        return next((cm for cm in self.cms.values() if cm.modname == "assign" and cm.instance == instance), None)

    def course_cms(self, courseid: int) -> Iterator[Record]:
        for sec in self.sections.get(courseid, []):
            for cmid in sec.sequence:
                yield self.cms[cmid]

    def is_active_enrolment(self, e: Record, now: int | None = None) -> bool:
        now = self.now() if now is None else now
        return (e.status == 0 and (not e.timestart or e.timestart <= now)
                and (not e.timeend or e.timeend > now))

    def is_tracked(self, courseid: int, userid: int) -> bool:
        """A learner whose completion the course tracks: an active student, not suspended."""
        e = self.enrolment(courseid, userid)
        u = self.user(userid)
        return bool(e and u and not u.suspended and STUDENT_ROLE in e.roles and self.is_active_enrolment(e))

    def picture_url(self, size: str) -> str:
        return f"{self.wwwroot}/theme/image.php/boost/core/{THEMEREV}/u/{size}"

    # -- users and enrolments, participant blocks included ---------------------------------
    def _block_of(self, uid: int) -> ParticipantBlock | None:
        return next((b for b in self.blocks if b.holds(uid)), None)

    def _block_enrolment(self, block: ParticipantBlock, uid: int) -> Record:
        return Record(userid=uid, courseid=block.courseid, roles=[block.roleid], status=0, timestart=0,
                      timeend=0, timecreated=block.timecreated)

    def add_participant_block(self, courseid: int, count: int, prefix: str, roleid: int = STUDENT_ROLE) -> range:
        """``count`` new users named prefix1, prefix2, ..., enrolled in the course; their ids."""
        if not re.fullmatch(r"[a-z]([a-z0-9._-]*[a-z._-])?", prefix):   # a digit last would blur the numbers
            raise ValueError(f"prefix: lower-case letters, digits, '.', '_' or '-', not ending in a digit; "
                             f"got {prefix!r}")
        if any(b.prefix == prefix for b in self.blocks) or any(
                name.startswith(prefix) for name in self.users_by_username):
            raise ValueError(f"prefix: {prefix!r} is already used by other users")
        first = self.next_ids["user"]
        self.next_ids["user"] = first + count
        self.blocks.append(ParticipantBlock(courseid, first, count, prefix, roleid, self.now()))
        return range(first, first + count)

    def user(self, uid: int) -> Record | None:
        """The user record (a throwaway copy for a block's participant: read it, do not change it)."""
        u = self.users.get(uid)
        block = self._block_of(uid) if u is None else None
        return self._user_record(uid, idnumber="", **block.user_fields(uid)) if block else u

    def user_for_update(self, uid: int) -> Record | None:
        """The user record to change: a block's participant becomes an ordinary record first."""
        block = self._block_of(uid)
        if block is not None:
            self.add_user_record(uid, idnumber="", **block.user_fields(uid))
            if block.courseid is not None:
                self.enrolments.setdefault(block.courseid, {})[uid] = self._block_enrolment(block, uid)
                self.user_courses.setdefault(uid, set()).add(block.courseid)
            block.moved.add(uid)
        return self.users.get(uid)

    def user_id(self, username: str) -> int | None:
        uid = self.users_by_username.get(username)
        if uid is None:
            uid = next((i for i in (b.uid_of_username(username) for b in self.blocks) if i is not None), None)
        return uid

    def user_ids_with_email(self, email: str) -> list[int]:
        """Ids of the users with this address, compared case-insensitively."""
        key = email.lower()
        ids = list(self.users_by_email.get(key, ()))
        ids += [uid for uid in (b.uid_of_email(key) for b in self.blocks) if uid is not None]
        return ids

    def user_ids_with_idnumber(self, idnumber: str) -> set[int]:
        return self.users_by_idnumber.get(idnumber, set())   # a block's participants have none

    def user_ids(self) -> list[int]:
        return sorted([*self.users, *(uid for b in self.blocks for uid in b.ids())])

    def user_course_ids(self, uid: int) -> set[int]:
        block = self._block_of(uid)
        if block is not None:
            return {block.courseid} if block.courseid is not None else set()
        return self.user_courses.get(uid, set())

    def enrolment(self, courseid: int, uid: int) -> Record | None:
        block = self._block_of(uid)
        if block is not None:
            return self._block_enrolment(block, uid) if block.courseid == courseid else None
        return self.enrolments.get(courseid, {}).get(uid)

    def course_enrolments(self, courseid: int, roleid: int | None = None) -> Iterator[tuple[int, Record]]:
        """(userid, enrolment) of everyone enrolled in the course (with that role), by user id."""
        stored = sorted((uid, e) for uid, e in self.enrolments.get(courseid, {}).items()
                        if roleid is None or roleid in e.roles)
        blocks = [b for b in self.blocks if b.courseid == courseid and roleid in (None, b.roleid)]
        if not blocks:
            return iter(stored)
        from_blocks = ((uid, self._block_enrolment(b, uid)) for b in blocks for uid in b.ids())
        return heapq.merge(stored, from_blocks, key=lambda row: row[0])

    def enrolled_ids_page(self, courseid: int, keep: Callable[[Record], bool], start: int = 0,
                          count: int = 0) -> list[int]:
        """Ids of the course's users whose enrolment ``keep`` accepts, by id, from the ``start``-th on
        (``count`` of them, 0: all).  A block's participants are counted as runs of ids, not one by one,
        so a page at the end of a course of 200,000 costs what the first page costs."""
        runs = [(uid, uid + 1) for uid, e in self.enrolments.get(courseid, {}).items() if keep(e)]
        for b in self.blocks:
            if b.courseid != courseid or not keep(self._block_enrolment(b, b.first_id)):
                continue
            lo, end = b.first_id, b.first_id + b.count
            for cut in [*sorted(b.moved), end]:      # moved ids are ordinary records now (or gone)
                if cut > lo:
                    runs.append((lo, cut))
                lo = max(lo, cut + 1)
        runs.sort()
        out: list[int] = []
        for lo, hi in runs:
            if start >= hi - lo:
                start -= hi - lo
                continue
            lo, start = lo + start, 0
            take = hi - lo if not count else min(hi - lo, count - len(out))
            out.extend(range(lo, lo + take))
            if count and len(out) >= count:
                break
        return out

    def enrolled_count(self, courseid: int) -> int:
        return len(self.enrolments.get(courseid, {})) + sum(b.size() for b in self.blocks if b.courseid == courseid)

    def delete_user(self, uid: int) -> Record | None:
        """Remove a user with its enrolments (not its completions and grades)."""
        u = self.user_for_update(uid)
        if u is None:
            return None
        del self.users[uid]
        self.unindex_user(u)
        for cid in self.user_courses.pop(uid, set()):
            self.enrolments.get(cid, {}).pop(uid, None)
        for key in [k for k in self.course_access if k[0] == uid]:
            del self.course_access[key]
        return u

    def drop_course_enrolments(self, courseid: int) -> None:
        for uid in self.enrolments.pop(courseid, {}):
            self.user_courses.get(uid, set()).discard(courseid)
        for key in [k for k in self.course_access if k[1] == courseid]:
            del self.course_access[key]
        for block in self.blocks:
            if block.courseid == courseid:
                block.courseid = None
