"""A hostile box's Moodle: answers carrying bad values for one learner or one activity (fault switches).

The box is a machine in a classroom; its Moodle (or whatever answers in its
place) may send what no stock Moodle sends.  Two switches, each a target or
a list of targets, change only the targeted entries; the rest of the answer
stays valid:

- ``hostile_grade``: ``{"cmid": 103, "userid": 26, "value": NaN}``: that
  learner's grade for that activity becomes ``value`` in
  gradereport_user_get_grade_items (``graderaw``) and mod_assign_get_grades
  (``grade``).  JSON has no NaN or Infinity, but PHP's json_encode is not the
  only thing that can answer: a float NaN, Infinity or -Infinity is written
  as the bare words ``NaN``/``Infinity``/``-Infinity`` (Python's json reads
  them back; POST /__sim/faults takes them the same way).  Other values as
  given: -5, 1e308, true, "abc", null.
- ``hostile_user``: ``{"userid": 26, "fields": {"id": "abc"}}``: that
  learner's entry in core_enrol_get_enrolled_users,
  core_user_get_users_by_field and core_user_get_course_user_profiles gets
  these fields (added or replaced): ``{"id": "abc"}``, null fields
  (``{"email": null, "fullname": null}``), another learner's username (a
  duplicate), control characters in names (``{"firstname": "Ann\\u0007\\u001b[2J"}``).
"""

from __future__ import annotations

from typing import Any

from .state import Site

GRADE_FUNCTIONS = {"gradereport_user_get_grade_items", "mod_assign_get_grades"}
USER_FUNCTIONS = {"core_enrol_get_enrolled_users", "core_user_get_users_by_field",
                  "core_user_get_course_user_profiles"}


def _targets(switch: Any, keys: tuple[str, ...]) -> list[dict]:
    targets = switch if isinstance(switch, list) else [switch] if switch else []
    for t in targets:
        if not isinstance(t, dict) or any(k not in t for k in keys):
            raise ValueError(f"a hostile target needs {', '.join(keys)}: got {t!r}")
    return targets


def check(name: str, switch: Any) -> None:
    """Refuse a malformed switch when it is set, not when a request meets it."""
    if name == "hostile_grade":
        _targets(switch, ("cmid", "userid", "value"))
    elif name == "hostile_user":
        for t in _targets(switch, ("userid", "fields")):
            if not isinstance(t["fields"], dict):
                raise ValueError(f"hostile_user: fields must be an object, got {t['fields']!r}")


def corrupt(site: Site, fname: str, answer: Any, grade_switch: Any, user_switch: Any) -> int:
    """Change the targeted entries of ``answer`` in place; how many were changed."""
    changed = 0
    if fname in GRADE_FUNCTIONS and grade_switch and isinstance(answer, dict):
        for t in _targets(grade_switch, ("cmid", "userid", "value")):
            if fname == "gradereport_user_get_grade_items":
                for report in answer.get("usergrades", []):
                    if report.get("userid") == t["userid"]:
                        for item in report.get("gradeitems", []):
                            if item.get("cmid") == t["cmid"]:
                                item["graderaw"] = t["value"]
                                changed += 1
            else:
                cm = site.cms.get(t["cmid"])
                for assignment in answer.get("assignments", []):
                    if cm is not None and cm.modname == "assign" and assignment.get("assignmentid") == cm.instance:
                        for grade in assignment.get("grades", []):
                            if grade.get("userid") == t["userid"]:
                                grade["grade"] = t["value"]
                                changed += 1
    if fname in USER_FUNCTIONS and user_switch and isinstance(answer, list):
        for t in _targets(user_switch, ("userid", "fields")):
            for entry in answer:
                if isinstance(entry, dict) and entry.get("id") == t["userid"]:
                    entry.update(t["fields"])
                    changed += 1
    return changed
