"""mod_assign: the assignment's own grade table (assign_grades) and its grading web service functions.

An assignment keeps its grades in assign_grades (one row per user and
attempt: grade, grader, times) and pushes them to the grade book; the grade
book's change completes the activity's "receive a grade" rule.  So
mod_assign_save_grades writes both, at once (recordings 94, 96), and
mod_assign_get_grades reads the assignment's table (95).  The grade book's
own function, core_grades_update_grades, writes only the grade book, never
this table (grades.py): a learner graded that way has no row here (issue 22).

assign::update_grade() refuses a grade outside 0..max grade without an
error: the call answers null, and the row that get_user_grade(create) made
keeps grade -1 (no grade).  Simple grading only: no marking workflow, no
advanced grading, no team submissions, attempts reopened "never" (addattempt
changes nothing).  mod_assign_save_grades takes the assign instance id, not
the cmid: core_course_get_contents gives each module's ``instance``.
"""

from __future__ import annotations

from .access import require_capability, validate_module_context
from .errors import MoodleException, missing_record
from .grades import write_grade
from .params import DEFAULT, OPTIONAL, Multiple, Single, Value, external, opt
from .state import Record, Site

NO_GRADE = -1.0

# The feedback plugins' parameters (assignfeedback_comments, assignfeedback_file) and the advanced grading
# methods' fillings (gradingform_guide, gradingform_rubric), as assign::save_grades_parameters() builds them.
PLUGINDATA = Single({
    "assignfeedbackcomments_editor": Single({"text": Value("raw"), "format": Value("int")}, OPTIONAL),
    "files_filemanager": opt("int"),
}, DEFAULT, [])
_FILLING = {"criterionid": Value("int"), "levelid": opt("int"), "remark": opt("text"),
            "remarkformat": opt("int"), "score": opt("float")}
_CRITERIA = Single({"criteria": Multiple(Single({
    "criterionid": Value("int"), "fillings": Multiple(Single(_FILLING), OPTIONAL)}), OPTIONAL)}, OPTIONAL)
ADVANCEDGRADINGDATA = Single({"guide": _CRITERIA, "rubric": _CRITERIA}, DEFAULT, [])


def validate_assign(site: Site, assignmentid: int, userid: int) -> Record:
    """mod_assign_external::validate_assign(): the instance (MUST_EXIST), then the module's context."""
    cm = site.assign_cm(assignmentid)
    if cm is None:
        raise missing_record("assign", "SELECT id FROM {assign} WHERE id = ?", [assignmentid])
    validate_module_context(site, cm, userid)
    return cm


def _latest_attempt(site: Site, instance: int, userid: int) -> int:
    return max((a for (i, u, a) in site.assign_grade_keys if i == instance and u == userid), default=0)


def save_grade(site: Site, cm: Record, userid: int, data: dict, grader: int) -> None:
    """assign::save_grade() -> apply_grade_to_user() -> update_grade() for one learner."""
    require_capability(site, "mod/assign:grade", grader, cm.course)
    now = site.now()
    attempt = data["attemptnumber"] if data["attemptnumber"] >= 0 else _latest_attempt(site, cm.instance, userid)
    key = (cm.instance, userid, attempt)
    gradeid = site.assign_grade_keys.get(key)
    if gradeid is None:     # get_user_grade($userid, true): a new row, no grade yet
        gradeid = site.next_id("assigngrade")
        site.assign_grade_keys[key] = gradeid
        site.assign_grades[gradeid] = Record(id=gradeid, assignment=cm.instance, userid=userid,
                                             attemptnumber=attempt, timecreated=now, timemodified=now,
                                             grader=grader, grade=NO_GRADE)
    row = site.assign_grades[gradeid]
    itemid = site.grade_item_keys.get((cm.course, "assign", cm.instance, 0))
    item = site.grade_items.get(itemid) if itemid is not None else None
    grademax = item.grademax if item is not None else 100.0
    grade = data["grade"]
    if grade is None or grade == NO_GRADE:
        value = NO_GRADE
    elif not 0 <= grade <= grademax:
        return              # update_grade() returns false: nothing more is written, and no error
    else:
        value = float(grade)
    row.update(grade=value, grader=grader, timemodified=now)
    if item is not None:    # assign_grade_item_update(): the grade book follows, with the feedback comment
        comment = (data["plugindata"].get("assignfeedbackcomments_editor") or {}).get("text") or None
        write_grade(site, item, cm, userid, None if value < 0 else value, feedback=comment)


def save_grades(site: Site, p: dict, userid: int) -> None:
    cm = validate_assign(site, p["assignmentid"], userid)
    for g in p["grades"]:
        save_grade(site, cm, g["userid"], g, userid)


def save_single_grade(site: Site, p: dict, userid: int) -> None:
    cm = validate_assign(site, p["assignmentid"], userid)
    save_grade(site, cm, p["userid"], p, userid)


def get_grades(site: Site, p: dict, userid: int) -> dict:
    """mod_assign_external::get_grades(): each assignment's latest-attempt rows, by assignment and row id."""
    requested = list(p["assignmentids"])
    warnings = []
    for cm in sorted((c for c in site.cms.values() if c.modname == "assign" and c.instance in requested),
                     key=lambda c: c.id):
        try:
            validate_module_context(site, cm, userid)
            require_capability(site, "mod/assign:grade", userid, cm.course)
        except MoodleException:
            requested = [a for a in requested if a != cm.instance]
            warnings.append({"item": "assignment", "itemid": cm.instance, "warningcode": "1",
                             "message": "No access rights in module context"})
    wanted = set(requested)
    rows = sorted((r for r in site.assign_grades.values()
                   if r.assignment in wanted and r.timemodified >= p["since"]
                   and r.attemptnumber == _latest_attempt(site, r.assignment, r.userid)),
                  key=lambda r: (r.assignment, r.id))
    assignments: list[dict] = []
    for r in rows:
        if not assignments or assignments[-1]["assignmentid"] != r.assignment:
            assignments.append({"assignmentid": r.assignment, "grades": []})
            requested = [a for a in requested if a != r.assignment]
        assignments[-1]["grades"].append({
            "id": r.id, "userid": r.userid, "attemptnumber": r.attemptnumber, "timecreated": r.timecreated,
            "timemodified": r.timemodified, "grader": r.grader,
            "grade": f"{r.grade:.5f}"})        # (string) of PostgreSQL's numeric(10,5)
    for a in requested:
        warnings.append({"item": "assignment", "itemid": a, "warningcode": "3", "message": "No grades found"})
    return {"assignments": assignments, "warnings": warnings}


def forget(site: Site, match) -> int:
    """Drop the rows that ``match(cmid, userid, courseid)`` (a restored backup)."""
    gone = []
    for gradeid, row in site.assign_grades.items():
        cm = site.assign_cm(row.assignment)
        if match(cm.id if cm else None, row.userid, cm.course if cm else None):
            gone.append(gradeid)
    for gradeid in gone:
        row = site.assign_grades.pop(gradeid)
        site.assign_grade_keys.pop((row.assignment, row.userid, row.attemptnumber), None)
    return len(gone)


_GRADE = {
    "grade": Value("float"),
    "attemptnumber": Value("int"),
    "addattempt": Value("bool"),
    "workflowstate": Value("alpha"),
    "plugindata": PLUGINDATA,
    "advancedgradingdata": ADVANCEDGRADINGDATA,
}
FUNCTIONS = {
    "mod_assign_save_grades": external(save_grades, {
        "assignmentid": Value("int"),
        "applytoall": Value("bool"),
        "grades": Multiple(Single({"userid": Value("int"), **_GRADE})),
    }, has_returns=False, any_user=True),
    "mod_assign_save_grade": external(save_single_grade, {
        "assignmentid": Value("int"),
        "userid": Value("int"),
        **{k: v for k, v in _GRADE.items() if k not in ("plugindata", "advancedgradingdata")},
        "applytoall": Value("bool"),
        "plugindata": PLUGINDATA,
        "advancedgradingdata": ADVANCEDGRADINGDATA,
    }, has_returns=False, any_user=True),
    "mod_assign_get_grades": external(get_grades, {
        "assignmentids": Multiple(Value("int")),
        "since": Value("int", DEFAULT, 0),
    }, any_user=True),
}
