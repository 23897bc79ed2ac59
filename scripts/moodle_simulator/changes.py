"""What people do in Moodle's pages (edit, add, delete; a restored backup), and reading the site back.

``Moodle`` is the site a simulator serves: ``sim.state`` in tests and the
target of the /__sim/ control endpoints.
"""

from __future__ import annotations

import math

from . import assign, badges, coursecompletion
from .config import (ADMIN_ID, GRADED_MODULES, GUEST_ID, MODULES, ROLES, SITE_COURSE, STUDENT_ROLE, TRACKING_AUTOMATIC,
                     TRACKING_MANUAL, TRACKING_NONE)
from .course import course_out
from .php import phpnum
from .accounts import seed_accounts
from .people import People
from .seed import BOX, SERVER, Layout, seed_test_data
from .state import Record, Site


class Moodle(People, Site):
    """The simulated site.  Every method here takes ``self.lock``."""

    def __init__(self, seed: bool = True, wwwroot: str = "http://127.0.0.1",
                 service_functions: list[tuple[str, str]] | None = None, participants: dict | None = None,
                 layout: Layout = SERVER, sync_account: bool = False, sync_without: tuple[str, ...] = (),
                 mobile_services: bool | None = None):
        super().__init__(wwwroot, service_functions, layout.name)
        self.layout = layout
        self.participants = {int(cid): int(n) for cid, n in (participants or {}).items()}
        self.sync_account = bool(sync_account)
        self.sync_without = tuple(sync_without)
        self.mobile_services = layout is BOX if mobile_services is None else bool(mobile_services)
        self.reset(seed=seed)

    def reset(self, seed: bool = True) -> None:
        """Back to the recorded test data and the ``participants`` (seed=False: only the site and the admin)."""
        with self.lock:
            self.clear()
            if seed:
                seed_test_data(self, self.layout)
            seed_accounts(self, self.layout is BOX, self.sync_account and seed, self.sync_without)
            if seed:
                for courseid, count in sorted(self.participants.items()):
                    self.add_participants(courseid, count, prefix=f"c{courseid}-participant")

    def add_participants(self, courseid: int, count: int, prefix: str = "participant") -> dict:
        """``count`` students enrolled in the course (prefix1, prefix2, ...; e-mail prefixN@example.invalid),
        kept as one rule, so 30,000 cost next to no memory."""
        with self.lock:
            if courseid not in self.courses or courseid == 1:
                raise ValueError(f"courseid: no course {courseid!r} to add participants to")
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise ValueError(f"count: must be a positive whole number, got {count!r}")
            ids = self.add_participant_block(courseid, count, prefix)
            return {"courseid": courseid, "prefix": prefix, "first_id": ids[0], "last_id": ids[-1]}

    # -- content changes (what a teacher does in the Moodle UI) -----------------------------
    def edit_activity(self, cmid, name=None, content=None, completion=None, visible=None):
        """Rename (inline) or edit an activity: bumps cacherev once, not course timemodified."""
        with self.lock:
            cm = self.cms[cmid]
            if name is not None:
                cm.name = name
                itemid = self.grade_item_keys.get((cm.course, cm.modname, cm.instance, 0))
                if itemid is not None:
                    self.grade_items[itemid].itemname = name
            if content is not None:
                if cm.modname == "url":
                    cm.externalurl = content
                else:
                    cm.content = content
            if completion is not None:
                cm.completion = int(completion)
                cm.completionusegrade = cm.modname in GRADED_MODULES and cm.completion == TRACKING_AUTOMATIC
                cm.completionview = cm.modname not in GRADED_MODULES and cm.completion == TRACKING_AUTOMATIC
            if visible is not None:
                cm.visible = 1 if visible else 0
            cm.timemodified = self.now()
            self.bump_cacherev(cm.course)
            return self._cm_summary(cm)

    def add_activity(self, courseid, modname, name, completion=TRACKING_MANUAL, section=1, grademax=100):
        """Add an activity (add_moduleinfo rebuilds the course cache three times)."""
        with self.lock:
            if modname not in MODULES:
                raise ValueError(f"unsupported module {modname!r} (use one of {sorted(MODULES)})")
            c = self.courses[courseid]
            secs = self.sections.setdefault(courseid, [])
            while len(secs) <= section:
                secs.append(Record(id=self.next_id("section"), section=len(secs),
                                 name="General" if not secs else "New section", sequence=[]))
            cmid = self.next_id("cm")
            inst = self.next_ids["instance"][modname]
            self.next_ids["instance"][modname] += 1
            # add_moduleinfo() only keeps completion settings when the course has completion enabled
            completion = int(completion) if c.enablecompletion else TRACKING_NONE
            cm = Record(id=cmid, course=courseid, modname=modname, instance=inst, contextid=self.next_id("context"),
                      name=name, completion=completion,
                      completionview=modname not in GRADED_MODULES and completion == TRACKING_AUTOMATIC,
                      completionusegrade=modname in GRADED_MODULES and completion == TRACKING_AUTOMATIC,
                      timemodified=self.now(), content=f"<p>{name}</p>", externalurl=None, visible=1,
                      section=section)
            self.cms[cmid] = cm
            secs[section].sequence.append(cmid)
            if modname in GRADED_MODULES:
                _, catid = self.ensure_course_item(courseid)
                self.add_grade_item(self.next_id("gradeitem"), courseid, modname, inst, 0, catid, name, cmid,
                                     grademax)
            self.bump_cacherev(c.id, times=3)
            return cmid

    def delete_activity(self, cmid):
        with self.lock:
            cm = self.cms.pop(cmid)
            for sec in self.sections.get(cm.course, []):
                if cmid in sec.sequence:
                    sec.sequence.remove(cmid)
            for key in [k for k in self.completions if k[0] == cmid]:
                del self.completions[key]
            if cmid in self.completion_criteria.get(cm.course, []):   # its criterion goes with it
                self.completion_criteria[cm.course].remove(cmid)
                for key in [k for k in self.criteria_completions if k[1] == cmid]:
                    del self.criteria_completions[key]
            if cm.modname == "assign":
                for gradeid in [i for i, r in self.assign_grades.items() if r.assignment == cm.instance]:
                    r = self.assign_grades.pop(gradeid)
                    self.assign_grade_keys.pop((r.assignment, r.userid, r.attemptnumber), None)
            itemid = self.grade_item_keys.pop((cm.course, cm.modname, cm.instance, 0), None)
            if itemid is not None:
                del self.grade_items[itemid]
                for key in [k for k in self.grades if k[0] == itemid]:
                    del self.grades[key]
            self.bump_cacherev(cm.course)

    COURSE_SETTINGS = ("fullname", "shortname", "summary", "idnumber", "visible", "startdate", "enddate",
                       "enablecompletion", "categoryid", "categoryname", "newsitems", "format")

    def edit_course_settings(self, courseid, **fields):
        """update_course(): sets timemodified and bumps cacherev."""
        with self.lock:
            c = self.courses[courseid]
            for k, v in fields.items():
                if k not in self.COURSE_SETTINGS:
                    raise ValueError(f"unknown course setting {k!r}")
                c[k] = v
            c.timemodified = self.now()
            self.bump_cacherev(courseid)
            return course_out(self, c)

    def add_course(self, shortname, fullname=None, idnumber="", summary="", categoryid=1,
                   enablecompletion=1):
        with self.lock:
            cid = self.next_id("course")
            for other in self.courses.values():
                if other.categoryid == categoryid and other.format != "site":
                    other.sortorder += 1
            now = self.now()
            self.courses[cid] = Record(
                id=cid, fullname=fullname or shortname, shortname=shortname, contextid=self.next_id("context"),
                categoryid=categoryid, categoryname=f"Category {categoryid}", sortorder=10000 + categoryid,
                summary=summary, showcompletionconditions=True, idnumber=idnumber, format="topics",
                newsitems=0, startdate=now - now % 86400, enddate=0, visible=1,
                enablecompletion=enablecompletion, timecreated=now, timemodified=now, cacherev=now,
                enrol_manual=True)
            self.sections[cid] = [Record(id=self.next_id("section"), section=0, name="General", sequence=[])]
            return cid

    def delete_course(self, courseid):
        with self.lock:
            self.courses.pop(courseid)
            for cmid in [cm.id for cm in self.course_cms(courseid)]:
                cm = self.cms.pop(cmid)
                for key in [k for k in self.completions if k[0] == cmid]:
                    del self.completions[key]
                del cm
            self.sections.pop(courseid, None)
            self.drop_course_enrolments(courseid)
            for itemid in [i for i, it in self.grade_items.items() if it.courseid == courseid]:
                it = self.grade_items.pop(itemid)
                self.grade_item_keys.pop((courseid, it.itemmodule, it.iteminstance, it.itemnumber), None)
                for key in [k for k in self.grades if k[0] == itemid]:
                    del self.grades[key]
            self.course_items.pop(courseid, None)
            self.completion_criteria.pop(courseid, None)
            coursecompletion.forget(self, lambda cid, uid: cid == courseid)
            badges.forget(self, lambda cid, uid: cid == courseid)
            for badgeid in [b.id for b in self.badges.values() if b.courseid == courseid]:
                del self.badges[badgeid]

    def _course_of(self, courseid: int) -> int:
        if courseid not in self.courses or courseid == SITE_COURSE["id"]:
            raise ValueError(f"courseid: no course {courseid!r}")
        return courseid

    def enrol_user(self, userid: int | None = None, courseid: int = 0, roleid: int = STUDENT_ROLE,
                   username: str | None = None, suspended: bool = False, timestart: int = 0,
                   timeend: int = 0) -> dict:
        """A manual enrolment with a role (again: the role is added, the status and dates replaced)."""
        with self.lock:
            uid = self._userid_of(userid, username)
            cid = self._course_of(courseid)
            if roleid not in ROLES:
                raise ValueError(f"roleid: one of {sorted(ROLES)}, got {roleid!r}")
            e = self.enrol(cid, uid, roleid, timestart, timeend, 1 if suspended else 0)
            return {"userid": uid, "courseid": cid, "roleids": list(e.roles), "status": e.status}

    def touch(self, userid: int | None = None, courseid: int = 0, username: str | None = None) -> dict:
        """The user was in the course just now (the site's clock): lastcourseaccess, and the site lastaccess."""
        with self.lock:
            uid = self._userid_of(userid, username)
            cid = self._course_of(courseid)
            return {"userid": uid, "courseid": cid, "lastcourseaccess": self.record_access(uid, cid)}

    def forget(self, userid=None, courseid=None, cmid=None, completions=True, grades=True, users=None,
               reuse_ids=False):
        """Drop completions/grades (and optionally users), like a server restored from a backup.

        Selectors combine with AND; none given means everything.  ``users``
        deletes those accounts with their enrolments; ``reuse_ids`` then lets
        new accounts get the freed ids again, as a restored sequence would.
        """
        with self.lock:
            dropped = {"completions": 0, "grades": 0, "users": 0}

            def match(cm_id, uid, cid):
                return ((userid is None or uid == userid) and (courseid is None or cid == courseid)
                        and (cmid is None or cm_id == cmid))
            if completions:
                for key in list(self.completions):
                    cm = self.cms.get(key[0])
                    if match(key[0], key[1], cm.course if cm else None):
                        del self.completions[key]
                        dropped["completions"] += 1
                # with the course completions and badges that followed them (not counted: the answer's keys stay)
                if cmid is None:
                    coursecompletion.forget(self, lambda cid, uid: match(None, uid, cid))
                    badges.forget(self, lambda cid, uid: match(None, uid, cid))
            if grades:
                for key in list(self.grades):
                    it = self.grade_items.get(key[0])
                    if it is not None and match(it.cmid, key[1], it.courseid):
                        del self.grades[key]
                        dropped["grades"] += 1
                assign.forget(self, match)      # the assignments' own grade tables too
            for uid in users or ():
                if uid in (ADMIN_ID, GUEST_ID) or self.delete_user(uid) is None:
                    continue
                for key in [k for k in self.completions if k[1] == uid]:
                    del self.completions[key]
                for key in [k for k in self.grades if k[1] == uid]:
                    del self.grades[key]
                assign.forget(self, lambda c, u, cid: u == uid)
                coursecompletion.forget(self, lambda cid, u: u == uid)
                badges.forget(self, lambda cid, u: u == uid)
                dropped["users"] += 1
            if reuse_ids:
                self.next_ids["user"] = max(self.user_ids()) + 1
            return dropped

    # -- course completion and badges (what a teacher sets in the course's pages) ----------------------
    def set_completion_criteria(self, courseid: int, cmids: list[int] | str | None = "all") -> dict:
        """The course's activity criteria: "all" (its activities with completion, the seed's default), a list
        of cmids, or None / [] for none (core_completion_get_course_completion_status: nocriteriaset)."""
        with self.lock:
            cid = self._course_of(courseid)
            chosen = coursecompletion.all_activities(self, cid) if cmids == "all" else cmids
            if chosen is not None and not isinstance(chosen, list):
                raise ValueError(f'cmids: "all", a list of cmids or null, got {cmids!r}')
            return {"courseid": cid, "cmids": coursecompletion.set_criteria(self, cid, chosen)}

    def set_course_badge(self, courseid: int, present: bool = True) -> dict:
        """Give the course a badge awarded on its completion (present), or take its badges away."""
        with self.lock:
            return badges.set_course_badge(self, self._course_of(courseid), bool(present))

    def get_course_completion(self, userid: int, courseid: int) -> int | None:
        """When the user completed the course (None: not completed)."""
        with self.lock:
            return self.course_completions.get((courseid, userid))

    def get_assign_grade(self, userid: int, cmid: int) -> dict | None:
        """The user's latest row in the assignment's own grade table (not the grade book)."""
        with self.lock:
            cm = self.cms.get(cmid)
            rows = [r for r in self.assign_grades.values()
                    if cm is not None and r.assignment == cm.instance and r.userid == userid]
            return dict(max(rows, key=lambda r: r.attemptnumber)) if rows else None

    # -- reading back (tests, GET /__sim/state) ------------------------------------------------
    def get_completion(self, userid, cmid):
        with self.lock:
            d = self.completions.get((cmid, userid))
            return dict(d) if d else None

    def get_grade(self, userid, cmid, itemnumber=0):
        with self.lock:
            cm = self.cms.get(cmid)
            if cm is None:
                return None
            itemid = self.grade_item_keys.get((cm.course, cm.modname, cm.instance, itemnumber))
            g = self.grades.get((itemid, userid)) if itemid else None
            return {"grade": g.finalgrade, "rawgrade": g.rawgrade, "timemodified": g.timemodified} if g else None

    def _cm_summary(self, cm):
        return {"cmid": cm.id, "courseid": cm.course, "modname": cm.modname, "instance": cm.instance,
                "name": cm.name, "completion": cm.completion, "section": cm.section,
                "timemodified": cm.timemodified, "visible": cm.visible}

    def dump(self, only=None, userid=None, courseid=None):
        """Everything as plain JSON data; ``only`` picks sections, userid/courseid filter rows."""
        full = self._dump(userid, courseid)

        def keep(section, row):
            uid = row["id"] if section == "users" else row.get("userid", userid)
            cid = row["id"] if section == "courses" else row.get("courseid", courseid)
            return (userid is None or uid == userid) and (courseid is None or cid == courseid)
        for section in ("users", "enrolments", "completions", "grades", "courses", "assign_grades",
                        "course_completions", "badges"):
            full[section] = [row for row in full[section] if keep(section, row)]
        if only:
            full = {k: v for k, v in full.items() if k in set(only) | {"clock"}}
        return full

    def _dump(self, userid=None, courseid=None):
        """Everything; only the users and enrolments are narrowed here (a big course has many)."""
        with self.lock:
            uids = self.user_ids() if userid is None else [userid]
            cids = sorted({*self.enrolments, *(b.courseid for b in self.blocks if b.courseid is not None)}
                          if courseid is None else [courseid])
            return {
                "clock": self.now(),
                "courses": [{"id": c.id, "shortname": c.shortname, "fullname": c.fullname,
                             "idnumber": c.idnumber, "summary": c.summary, "visible": c.visible,
                             "timemodified": c.timemodified, "cacherev": c.cacherev,
                             "activities": [self._cm_summary(cm) for cm in self.course_cms(c.id)]}
                            for c in (self.courses[k] for k in sorted(self.courses))],
                "users": [{"id": u.id, "username": u.username, "firstname": u.firstname, "lastname": u.lastname,
                           "email": u.email, "idnumber": u.idnumber, "auth": u.auth, "suspended": u.suspended}
                          for u in (self.user(k) for k in uids) if u is not None and not u.hidden],
                "enrolments": [{"courseid": cid, "userid": uid, "roleids": list(e.roles), "status": e.status,
                                "timestart": e.timestart, "timeend": e.timeend,
                                "lastcourseaccess": self.last_course_access(uid, cid)}
                               for cid in cids for uid, e in self.course_enrolments(cid)
                               if userid is None or uid == userid],
                "completions": [{"cmid": k[0], "courseid": self.cms[k[0]].course if k[0] in self.cms else None,
                                 "userid": k[1], "state": v["state"], "timecompleted": v["timemodified"],
                                 "overrideby": v["overrideby"]}
                                for k, v in sorted(self.completions.items())],
                "grades": [{"courseid": self.grade_items[k[0]].courseid, "cmid": self.grade_items[k[0]].cmid,
                            "itemid": k[0], "userid": k[1], "grade": phpnum(g.finalgrade),
                            "rawgrade": phpnum(g.rawgrade) if g.rawgrade is not None and math.isfinite(g.rawgrade)
                            else None, "timemodified": g.timemodified}
                           for k, g in sorted(self.grades.items())],
                "assign_grades": [{"id": r.id, "assignment": r.assignment,
                                   "cmid": cm.id if cm else None, "courseid": cm.course if cm else None,
                                   "userid": r.userid, "attemptnumber": r.attemptnumber, "grade": phpnum(r.grade),
                                   "grader": r.grader, "timecreated": r.timecreated, "timemodified": r.timemodified}
                                  for r, cm in ((r, self.assign_cm(r.assignment))
                                                for _, r in sorted(self.assign_grades.items()))],
                "course_completions": [{"courseid": k[0], "userid": k[1], "timecompleted": t}
                                       for k, t in sorted(self.course_completions.items())],
                "badges": [{"id": i.id, "badgeid": i.badgeid, "courseid": self.badges[i.badgeid].courseid,
                            "userid": i.userid, "dateissued": i.dateissued, "uniquehash": i.uniquehash}
                           for _, i in sorted(self.badge_issues.items()) if i.badgeid in self.badges],
            }

    # -- control endpoint /__sim/edit ------------------------------------------------------
    def apply_edit(self, spec: dict):
        spec = dict(spec)
        op = spec.pop("op", None)
        if op == "edit_activity":
            return self.edit_activity(**spec)
        if op == "add_activity":
            return {"cmid": self.add_activity(**spec)}
        if op == "delete_activity":
            self.delete_activity(**spec)
            return {"deleted": spec.get("cmid")}
        if op == "edit_course_settings":
            cid = spec.pop("courseid")
            return self.edit_course_settings(cid, **spec)
        if op == "delete_course":
            self.delete_course(**spec)
            return {"deleted": spec.get("courseid")}
        if op == "add_course":
            return {"courseid": self.add_course(**spec)}
        if op == "add_participants":
            return self.add_participants(**spec)
        if op == "add_user":
            return self.add_user(**spec)
        if op == "enrol_user":
            return self.enrol_user(**spec)
        if op in ("set_password", "define_role", "assign_role", "remove_capability", "add_service"):
            return getattr(self, op)(**spec)
        if op == "set_completion_criteria":
            return self.set_completion_criteria(**spec)
        if op == "set_course_badge":
            return self.set_course_badge(**spec)
        raise ValueError(f"unknown op {op!r}")
