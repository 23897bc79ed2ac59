"""What the box's Moodle sends, checked (agent/box/check.py, agent/box/diff.py's
grade_changes): the pure functions. The same cases end to end, through a
hostile simulator, are in tests/test_collect_hostile.py."""

from __future__ import annotations

import math

import pytest

from agent.box.check import Skipped, grade_range, grade_value, participant, participants, unique_usernames
from agent.box.diff import GRADE, Learner, grade_changes

GOOD = {"id": 23, "username": "student1", "firstname": "Ann", "lastname": "Lee", "email": "ann@example.org",
        "roles": [{"roleid": 5, "shortname": "student"}], "lastcourseaccess": 1700000000}


def test_a_sound_participant():
    u = participant(GOOD)
    assert u == Learner(23, "student1", {"firstname": "Ann", "lastname": "Lee", "email": "ann@example.org"},
                        ("student",), 1700000000)
    assert participant({"id": 24, "username": "s2"}) == Learner(24, "s2", {}, (), 0)  # slim fields


@pytest.mark.parametrize("change, problem", [
    ({"id": "abc"}, "participant 'abc' ('student1'): id is not a number: 'abc'"),
    ({"id": True}, "id is not a number: True"),
    ({"id": 0}, "id is not a number: 0"),
    ({"username": None}, "participant 23: username is missing"),
    ({"username": ""}, "username is ''"),
    ({"username": 7}, "username is 7"),
    ({"username": "a\u0085b"}, "username has control characters or is too long: 'a\\x85b'"),
    ({"username": "x" * 101}, "username has control characters or is too long"),
    ({"email": None}, "email is null"),
    ({"lastname": ["L"]}, "lastname is ['L']"),
    ({"firstname": "Ann\u001b[2J"}, "firstname has control characters: 'Ann\\x1b[2J'"),
    ({"roles": "student"}, "roles is not a list: 'student'"),
    ({"lastcourseaccess": "soon"}, "lastcourseaccess is not a time: 'soon'"),
    ({"lastcourseaccess": 1.5}, "lastcourseaccess is not a time: 1.5"),
])
def test_a_malformed_participant_is_skipped_naming_the_field_and_the_value(change, problem):
    found = participant({**GOOD, **change})
    assert isinstance(found, Skipped) and problem in found.problem, found


def test_a_long_value_is_named_short():
    found = participant({**GOOD, "firstname": "\u0007" * 500})
    assert isinstance(found, Skipped) and len(found.problem) < 150 and found.problem.endswith("...")


def test_a_page_keeps_the_sound_entries_and_the_ids_of_the_skipped():
    learners, problems, skipped = participants([GOOD, {**GOOD, "id": 25, "email": None}, "junk",
                                                {**GOOD, "id": "x"}, {**GOOD, "id": 26, "username": "s6"}])
    assert [u.userid for u in learners] == [23, 26]
    assert len(problems) == 3 and skipped == {25}


def test_a_username_held_by_two_ids_stays_with_the_one_it_was_collected_under():
    a, b, c = (Learner(i, name, {}, ("student",), 0) for i, name in ((23, "s1"), (25, "s1"), (26, "s6")))
    kept, problems = unique_usernames([a, b, c], {"s1": 23})
    assert kept == [a, c] and problems == ["participant 25 ('s1'): username 's1' is also participant 23's"]
    kept, problems = unique_usernames([a, b, c], {})  # never collected: nobody's for sure
    assert kept == [c] and len(problems) == 2
    kept, problems = unique_usernames([b], {"s1": 23})  # on another page
    assert kept == [] and len(problems) == 1


@pytest.mark.parametrize("raw", [math.nan, math.inf, -math.inf, True, False, "40", None, [1], {"v": 1}])
def test_a_grade_value_must_be_a_finite_number(raw):
    assert grade_value(raw) is None


def test_grade_values_and_ranges():
    assert grade_value(40) == 40.0 and grade_value(-5) == -5.0 and grade_value(1e308) == 1e308
    assert grade_range({"grademin": 0, "grademax": 100}) == (0, 100)
    assert grade_range({"grademin": 10, "grademax": 5}) is None and grade_range({}) is None


def report(userid, **items):
    return {"userid": userid, "gradeitems": [{"cmid": cmid, "graderaw": raw, "grademin": 0, "grademax": 100,
                                              "gradedategraded": 5} for cmid, raw in items.items()]}


def test_grade_changes_refuse_non_numbers_and_flag_out_of_range_and_removed():
    reports = [{"userid": 23, "gradeitems": [{"cmid": 103, "graderaw": math.nan}, {"cmid": 104, "graderaw": -5,
                                                                                     "grademin": 0, "grademax": 10},
                                             {"cmid": 105, "graderaw": None}, {"cmid": 106, "graderaw": 7,
                                                                                "grademin": 0, "grademax": 10}]},
               {"userid": "abc", "gradeitems": [{"cmid": 103, "graderaw": 1}]}]
    changes, refused = grade_changes(reports, {23: "s1"}, {("s1", 105): 8.0})
    assert refused == ["s1's grade for activity 103 is not a number: nan; it was not queued"]
    by_cmid = {c.box_cmid: c for c in changes}
    assert by_cmid[104].problem == "the grade -5 is outside the activity's range on the box's Moodle (0 to 10)"
    assert by_cmid[105].value is None and "removed on the box's Moodle" in (by_cmid[105].problem or "")
    assert by_cmid[106].problem is None and by_cmid[106].kind == GRADE and by_cmid[106].value == 7.0
    # A grade never collected and absent is no change at all.
    assert grade_changes([report(23)], {23: "s1"}, {}) == ([], [])
