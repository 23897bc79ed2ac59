"""The pure parts of the box's Moodle: mapping its activities to the server's
(agent/mapping.py), the accounts it hands over, and what changed since the last
collection (agent/box/diff.py). No database, no server."""

import pytest

from agent.box.check import participant as learner
from agent.box.diff import (GRADE, Learner, completion_changes, event_key, grade_changes, grade_idnumbers,
                            needs_recheck, to_read)
from agent.mapping import ActivityInfo, describe_activity, map_activities
from agent.push.plan import Queued, plan_users

pytestmark = pytest.mark.pure  # no simulator, no database: pytest -m pure

SERVER = [ActivityInfo(1, 1, "page", "C1 Page"), ActivityInfo(2, 1, "url", "C1 URL"),
          ActivityInfo(3, 2, "assign", "C1 Assignment", "A1")]
BOX = [ActivityInfo(101, 1, "page", "C1 Page"), ActivityInfo(102, 1, "url", "C1 URL"),
       ActivityInfo(103, 2, "assign", "C1 Assignment", "A1")]


# -- activities -------------------------------------------------------------------

def test_the_same_course_restored_maps_every_activity_whatever_the_ids():
    mapping = map_activities(BOX, SERVER)
    assert mapping.mapped == {101: 1, 102: 2, 103: 3} and mapping.unmapped == {}


def test_idnumber_wins_where_both_sides_have_one_and_a_different_one_is_another_activity():
    renamed = [ActivityInfo(103, 2, "assign", "Renamed on the box", "A1")]
    assert map_activities(renamed, SERVER).mapped == {103: 3}
    other = [ActivityInfo(103, 2, "assign", "C1 Assignment", "B7")]
    mapping = map_activities(other, SERVER)
    assert mapping.mapped == {} and "same section, type and name" in mapping.unmapped[103]
    # An idnumber on one side only: the section, type and name decide.
    assert map_activities([ActivityInfo(101, 1, "page", "C1 Page", "P1")], SERVER).mapped == {101: 1}


def test_an_activity_added_on_the_box_maps_to_nothing_and_is_named_in_words():
    added = ActivityInfo(109, 1, "page", "Box-only page")
    mapping = map_activities([*BOX, added], SERVER)
    assert mapping.mapped == {101: 1, 102: 2, 103: 3}
    assert mapping.unmapped == {109: "no activity on the server has the same section, type and name"}
    assert describe_activity(added) == "'Box-only page' (page, section 1)"
    # The same name in another section or of another type is another activity.
    assert map_activities([ActivityInfo(101, 2, "page", "C1 Page")], SERVER).mapped == {}
    assert map_activities([ActivityInfo(101, 1, "url", "C1 Page")], SERVER).mapped == {}


def test_only_a_unique_match_counts_both_ways():
    twice = [*SERVER, ActivityInfo(9, 1, "page", "C1 Page")]
    mapping = map_activities(BOX, twice)
    assert 101 not in mapping.mapped and mapping.unmapped[101] == "2 activities on the server have the same " \
                                                                  "section, type and name"
    both = [ActivityInfo(101, 1, "page", "C1 Page"), ActivityInfo(111, 1, "page", "C1 Page")]
    mapping = map_activities(both, SERVER)
    assert mapping.mapped == {}
    assert mapping.unmapped == dict.fromkeys([101, 111], "2 activities of the box match the same server activity")


# -- accounts from the box --------------------------------------------------------------

def test_an_account_from_the_box_is_made_only_if_missing_and_never_updated():
    rows = [Queued(1, "user", "student1", data={"firstname": "S", "lastname": "One", "email": "s1@x.org",
                                                "only_if_missing": True}),
            Queued(2, "user", "boxkid", data={"firstname": "B", "lastname": "Kid", "email": "b@x.org",
                                              "only_if_missing": True})]
    plan = plan_users(rows, {"student1": 3}, {}, can_update=True)
    assert plan.done == [1]
    [create] = plan.calls
    assert create.args["users"] == [{"username": "boxkid", "auth": "manual", "firstname": "B", "lastname": "Kid",
                                     "email": "b@x.org", "createpassword": 1}]
    # Without the right to update, an existing account is still no conflict.
    assert plan_users(rows[:1], {"student1": 3}, {}, can_update=False).conflicts == {}


# -- what changed on the box ------------------------------------------------------------------

def status(cmid, state, when=0, overrideby=None):
    return {"cmid": cmid, "state": state, "timecompleted": when, "overrideby": overrideby}


def test_completion_changes_new_done_undone_and_unchanged():
    previous = {("kid", 101): 1.0, ("kid", 102): 1.0, ("kid", 104): 0.0}
    statuses = [status(101, 1, 50), status(102, 0, 60), status(103, 1, 70), status(104, 0, 10), status(105, 0)]
    changes = completion_changes("kid", statuses, previous)
    assert [(c.box_cmid, c.value, c.time) for c in changes] == [(102, 0.0, 60), (103, 1.0, 70)]
    # A teacher's override is a change of its own, with who overrode in its version.
    [override] = completion_changes("kid", [status(101, 0, 80, overrideby=2)], previous)
    assert override.version == "80/2"


def test_grade_changes_of_every_learner_in_one_report():
    usergrades = [
        {"userid": 23, "gradeitems": [{"cmid": 103, "graderaw": 80, "gradedategraded": 5, "idnumber": "A1"},
                                      {"cmid": None, "graderaw": 80}]},  # the course total
        {"userid": 24, "gradeitems": [{"cmid": 103, "graderaw": None}]},
        {"userid": 25, "gradeitems": [{"cmid": 103, "graderaw": 55.5, "gradedategraded": 9}]},
        {"userid": 99, "gradeitems": [{"cmid": 103, "graderaw": 10}]},  # not a participant read
    ]
    names = {23: "s1", 24: "s2", 25: "s3"}
    changes, refused = grade_changes(usergrades, names, {("s3", 103): 55.5})
    assert refused == []
    assert [(c.kind, c.username, c.box_cmid, c.value, c.version) for c in changes] == [(GRADE, "s1", 103, 80.0, "5")]
    assert grade_idnumbers(usergrades) == {103: "A1"}


def test_incremental_reads_only_learners_new_or_whose_access_moved():
    users = [learner({"id": i, "username": f"s{i}", "firstname": "S", "lastname": str(i), "email": f"s{i}@x.org",
                      "roles": [{"roleid": 5, "shortname": "student"}], "lastcourseaccess": access})
             for i, access in ((1, 100), (2, 200), (3, 0), (4, 50))]
    teacher = Learner(9, "t", {}, ("editingteacher",), 500)
    last = {1: 100, 2: 150, 9: 0}
    # 3 is new but never entered the course: nothing of theirs to read (a full collection reads them).
    assert [u.userid for u in to_read([*users, teacher], last, full=False)] == [2, 4]
    assert [u.userid for u in to_read([*users, teacher], last, full=True)] == [1, 2, 3, 4]
    assert [u.userid for u in to_read(users, {1: 100, 2: 200, 3: 0, 4: 50}, full=False, recheck={1})] == [1]
    assert users[0].role == "student" and teacher.role is None
    assert users[0].profile == {"firstname": "S", "lastname": "1", "email": "s1@x.org"}


def test_an_access_under_a_minute_old_is_read_again_next_time():
    # Moodle moves lastcourseaccess at most once a minute: work done in the
    # rest of that minute would not move it.
    assert needs_recheck(1000, box_now=1059) and not needs_recheck(1000, box_now=1060)
    assert not needs_recheck(0, box_now=5) and needs_recheck(1000, box_now=None)


def test_event_ids_depend_on_the_box_course_learner_activity_and_state_only():
    key = event_key("box-1", "C1", "kid", 101, "completion", "1", "50/")
    assert key == event_key("box-1", "C1", "kid", 101, "completion", "1", "50/")
    assert key.startswith("box-") and len(key) == 36
    others = {event_key("box-2", "C1", "kid", 101, "completion", "1", "50/"),
              event_key("box-1", "C2", "kid", 101, "completion", "1", "50/"),
              event_key("box-1", "C1", "kid2", 101, "completion", "1", "50/"),
              event_key("box-1", "C1", "kid", 102, "completion", "1", "50/"),
              event_key("box-1", "C1", "kid", 101, "completion", "0", "50/"),
              event_key("box-1", "C1", "kid", 101, "completion", "1", "51/")}
    assert key not in others and len(others) == 6
