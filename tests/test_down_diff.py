"""The decisions of the way down (agent/down/diff.py): pure, no database."""

import pytest

from agent.down.diff import COMPLETION, GRADE, Reported, decide, server_completions, server_grades

pytestmark = pytest.mark.pure  # no simulator, no database: pytest -m pure


def test_a_change_on_the_server_only_is_written_down_and_becomes_the_last_known():
    d = decide(COMPLETION, Reported(1, 50), seen=0, box_now=0, box_change=None)
    assert (d.write_down, d.drop_box, d.server_after, d.rule) == (1, False, 1, None)


def test_nothing_changed_on_the_server_writes_nothing():
    assert decide(GRADE, Reported(70, 5), seen=70, box_now=40, box_change=None).write_down is None
    # A completion never done on the server is no change, even never seen before.
    assert decide(COMPLETION, Reported(0, 0), seen=None, box_now=None, box_change=None).write_down is None


def test_a_value_already_on_the_box_is_not_written_again():
    d = decide(GRADE, Reported(70, 5), seen=None, box_now=70, box_change=None)
    assert (d.write_down, d.server_after) == (None, 70)
    # A passed completion (2) is done, as the box's 1 is.
    assert decide(COMPLETION, Reported(2, 5), seen=0, box_now=1, box_change=None).write_down is None


def test_a_box_change_equal_to_the_server_is_dropped_unsent():
    d = decide(GRADE, Reported(70, 5), seen=60, box_now=70, box_change=Reported(70, 9))
    assert (d.write_down, d.drop_box, d.server_after, d.rule) == (None, True, 70, None)


def test_a_box_change_to_push_leaves_the_servers_last_known_state_until_the_server_confirms_it():
    d = decide(GRADE, Reported(60, 5), seen=60, box_now=80, box_change=Reported(80, 9))
    assert (d.write_down, d.drop_box, d.server_after) == (None, False, 60)


def test_conflict_completion_done_wins_on_either_side():
    box_done = decide(COMPLETION, Reported(0, 0), seen=1, box_now=1, box_change=Reported(1, 10))
    assert (box_done.kept, box_done.write_down, box_done.server_after) == ("box", None, 1)  # seen, unchanged
    assert box_done.rule == "done wins over not done"
    server_done = decide(COMPLETION, Reported(1, 10), seen=0, box_now=0, box_change=Reported(0, 20))
    assert (server_done.kept, server_done.write_down, server_done.server_after) == ("server", 1, 1)


def test_conflict_grade_the_later_wins_and_a_tie_keeps_the_servers():
    later_box = decide(GRADE, Reported(90, 100), seen=10, box_now=50, box_change=Reported(50, 200))
    assert (later_box.kept, later_box.write_down, later_box.server_after) == ("box", None, 10)
    later_server = decide(GRADE, Reported(90, 300), seen=10, box_now=50, box_change=Reported(50, 200))
    assert (later_server.kept, later_server.write_down, later_server.rule) == ("server", 90, "the later change wins")
    tie = decide(GRADE, Reported(90, 200), seen=10, box_now=50, box_change=Reported(50, 200))
    assert (tie.kept, tie.write_down, tie.rule) == ("server", 90, "a tie keeps the server's")


def test_server_answers_are_read_into_values():
    assert server_completions([{"cmid": 4, "state": 2, "timecompleted": 7}]) == ({4: Reported(2, 7)}, [])
    grades = server_grades([{"userid": 3, "gradeitems": [{"cmid": 4, "graderaw": 55.5, "gradedategraded": 9},
                                                          {"cmid": 5, "graderaw": None}, {"graderaw": 1}]},
                            {"userid": 99, "gradeitems": [{"cmid": 4, "graderaw": 1}]}], {3: "student1"})
    assert grades == ({("student1", 4): Reported(55.5, 9)}, [])


def test_what_the_server_answers_is_checked_as_strictly_as_the_box():
    # A bad entry is left out and named; the good ones beside it are kept; nothing raises.
    found, problems = server_completions([{"cmid": "abc", "state": 1}, {"cmid": 4, "state": 7},
                                          {"cmid": 5, "state": True}, {"cmid": 6, "state": 1, "timecompleted": "x"},
                                          "junk", {"cmid": 8, "state": 1, "timecompleted": None}])
    assert found == {8: Reported(1, 0)} and len(problems) == 5
    assert problems[0] == "completion state {'cmid': 'abc', 'state': 1} is not Moodle's (cmid, state 0-3, " \
                          "timecompleted)"
    items = [{"cmid": 1, "graderaw": float("nan")}, {"cmid": 2, "graderaw": float("inf")}, {"cmid": 3, "graderaw": "9"},
             {"cmid": 4, "graderaw": True}, {"cmid": 5, "graderaw": 5, "gradedategraded": "soon"},
             {"cmid": "6", "graderaw": 6}, {"cmid": 7, "graderaw": 7}]
    found, problems = server_grades([{"userid": 3, "gradeitems": items}, {"userid": "3", "gradeitems": items},
                                     {"userid": 3, "gradeitems": "none"}], {3: "student1"})
    assert found == {("student1", 7): Reported(7.0, 0)}
    assert problems == ["grade nan of student1 in activity 1 is not a finite number",
                        "grade inf of student1 in activity 2 is not a finite number",
                        "grade '9' of student1 in activity 3 is not a finite number",
                        "grade True of student1 in activity 4 is not a finite number",
                        "grade of student1 in activity 5 has a gradedategraded 'soon' that is not a time"]
    assert server_grades(None, {}) == ({}, []) and server_completions({"statuses": 1}) == ({}, [])
