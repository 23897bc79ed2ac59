"""The planner alone: queued events and what the run knows of the server in,
calls, conflicts and settled events out. No database, no server."""

import pytest

from agent.push.plan import Queued, grade_problem, plan_enrolments, plan_learning, plan_users

pytestmark = pytest.mark.pure  # no simulator, no database: pytest -m pure

KNOWN = {"student1": 3, "student2": 4}


def completion(i, user="student1", cmid=1, done=True):
    return Queued(i, "completion", user, 2, cmid, {"completed": done})


def grade(i, user="student1", cmid=3, value=80.0, **extra):
    return Queued(i, "grade", user, 2, cmid, {"grade": value, **extra})


def learning(rows, known=KNOWN, enrolled=(3, 4), activities=None, force=False, batch_size=100):
    activities = {1: "page", 2: "url", 3: "assign"} if activities is None else activities
    return plan_learning(rows, 2, "C1", known, set(enrolled), activities, force, batch_size)


def test_users_create_the_missing_and_update_the_known():
    rows = [Queued(1, "user", "kid", data={"firstname": "K", "lastname": "I", "email": "k@x.org"}),
            Queued(2, "user", "student1", data={"email": "s1@x.org"})]
    plan = plan_users(rows, KNOWN, {1: "Secret#1"}, can_update=True)
    create, update = plan.calls
    assert create.function == "core_user_create_users" and create.creates_user == "kid"
    assert create.args["users"][0] == {"username": "kid", "auth": "manual", "firstname": "K", "lastname": "I",
                                       "email": "k@x.org", "password": "Secret#1"}
    assert update.function == "core_user_update_users" and update.args["users"][0] == {"id": 3, "email": "s1@x.org"}
    assert (plan.conflicts, plan.done, plan.planned) == ({}, [], 2)


def test_a_new_account_without_password_gets_createpassword():
    plan = plan_users([Queued(1, "user", "kid", data={})], {}, {}, can_update=True)
    assert plan.calls[0].args["users"][0]["createpassword"] == 1


def test_a_second_event_for_a_new_account_waits_for_the_next_chunk():
    rows = [Queued(1, "user", "kid"), Queued(2, "user", "other"), Queued(3, "user", "kid"), Queued(4, "user", "x")]
    plan = plan_users(rows, {}, {}, can_update=True)
    assert [c.events for c in plan.calls] == [[1], [2]] and plan.planned == 2


def test_an_update_without_the_function_is_a_conflict():
    plan = plan_users([Queued(5, "user", "student1")], KNOWN, {}, can_update=False)
    assert plan.calls == [] and "core_user_update_users" in plan.conflicts[5]


def test_enrolments_skip_the_enrolled_and_repeats():
    rows = [Queued(1, "enrolment", "student1", 2, data={"role": "student"}),
            Queued(2, "enrolment", "student2", 2, data={"role": "teacher"}),
            Queued(3, "enrolment", "student2", 2, data={"role": "teacher"}),
            Queued(4, "enrolment", "ghost", 2, data={"role": "student"})]
    plan = plan_enrolments(rows, 2, KNOWN, {3})
    assert plan.done == [1, 3]
    assert [c.args for c in plan.calls] == [{"enrolments": [{"roleid": 4, "userid": 4, "courseid": 2}]}]
    assert plan.calls[0].enrols == 4
    assert list(plan.conflicts) == [4] and "unknown user 'ghost'" in plan.conflicts[4]


def test_completions_become_overrides_with_the_state():
    plan = learning([completion(1), completion(2, "student2", cmid=2, done=False)])
    assert [c.args for c in plan.calls] == [{"userid": 3, "cmid": 1, "newstate": 1},
                                            {"userid": 4, "cmid": 2, "newstate": 0}]
    assert all(c.function == "core_completion_override_activity_completion_status" for c in plan.calls)


def test_who_cannot_take_an_event_is_a_conflict_with_the_reason():
    plan = learning([completion(1, "ghost"), completion(2, "student2"), completion(3, cmid=99)], enrolled=(3,))
    assert plan.calls == []
    assert plan.conflicts == {1: "unknown user 'ghost' on the server",
                              2: "user 'student2' is not enrolled in course C1",
                              3: "activity 99 does not exist in course C1"}


def test_force_sends_a_completion_for_an_unknown_activity_but_never_a_grade():
    plan = learning([completion(1, cmid=99), grade(2, cmid=99)], force=True)
    assert [c.args["cmid"] for c in plan.calls] == [99]
    assert "grade item is unknown" in plan.conflicts[2]


def test_grades_of_an_activity_share_a_call_and_the_last_one_wins():
    plan = learning([grade(1, value=50), grade(2, "student2", value=60), grade(3, value=70, feedback="Good")])
    (call,) = plan.calls
    assert call.args["component"] == "mod_assign" and call.args["activityid"] == 3
    assert call.args["grades"] == [{"studentid": 4, "grade": 60}, {"studentid": 3, "grade": 70, "str_feedback": "Good"}]
    assert (call.events, call.count) == ([1, 2, 3], 2)


def test_batch_size_caps_the_grades_of_one_call():
    plan = learning([grade(i, value=i) for i in range(1, 6)], batch_size=2)
    assert [c.events for c in plan.calls] == [[1, 2], [3, 4], [5]]


def test_grade_answers_other_than_zero_are_problems():
    (call,) = learning([grade(1)]).calls
    assert grade_problem(call, 0) is None and grade_problem(call, "0") is None
    assert "locked" in grade_problem(call, 4)
    assert grade_problem(learning([completion(1)]).calls[0], None) is None


# -- what an event waits for before it can be planned (wants) ------------------

from agent.push.plan import READY, WAIT, Busy, Knowledge, wants  # noqa: E402


def enrolment(i, user="student1", course=2):
    return Queued(i, "enrolment", user, course, data={"role": "student"})


def test_an_account_event_waits_for_a_look_up_in_this_run_even_when_the_id_is_remembered():
    known = Knowledge(ids={"student1": 3})
    assert wants(Queued(1, "user", "student1"), known, Busy()) == ("lookup", "student1")
    known.looked_up.add("student1")
    assert wants(Queued(1, "user", "student1"), known, Busy()) == READY
    assert wants(Queued(1, "user", "student1"), known, Busy(creating={"student1"})) == WAIT


def test_a_remembered_learner_enrolled_is_ready_without_asking():
    known = Knowledge(ids={"student1": 3}, enrolled={2: {3}})
    assert wants(completion(1), known, Busy()) == READY
    # An enrolment event is checked in the run, whatever the box remembers.
    assert wants(enrolment(2), known, Busy()) == ("check", (2, 3))
    known.checked.add((2, 3))
    assert wants(enrolment(2), known, Busy()) == READY  # plan_enrolments settles it as done


def test_an_unknown_id_is_looked_up_unless_its_account_event_is_not_settled():
    assert wants(completion(1, "kid"), Knowledge(), Busy()) == ("lookup", "kid")
    assert wants(completion(1, "kid"), Knowledge(), Busy(users={"kid"})) == WAIT
    # Looked up and not found: the plan makes it a conflict.
    assert wants(completion(1, "kid"), Knowledge(looked_up={"kid"}), Busy()) == READY


def test_an_enrolment_not_known_is_checked_and_a_new_account_needs_no_check():
    known = Knowledge(ids={"student1": 3, "kid": 9}, new={9})
    assert wants(completion(1), known, Busy()) == ("check", (2, 3))
    assert wants(enrolment(2), known, Busy()) == ("check", (2, 3))
    assert wants(enrolment(3, "kid"), known, Busy()) == READY
    # The kid's completion waits for its enrolment, queued or on its way.
    assert wants(completion(4, "kid"), known, Busy(enrolling={(2, "kid")})) == WAIT
    assert wants(completion(4, "kid"), known, Busy()) == READY  # none: the plan says not enrolled
    assert wants(enrolment(5, "kid"), known, Busy(enrol_calls={(2, "kid")})) == WAIT


def test_a_checked_enrolment_is_known_either_way():
    known = Knowledge(ids={"student1": 3}, checked={(2, 3)})
    assert known.is_enrolled(2, 3) is False and known.is_enrolled(4, 3) is None
    assert wants(completion(1), known, Busy()) == READY
    known.enrolled[2] = {3}
    assert known.is_enrolled(2, 3) is True


def test_an_id_past_its_age_is_asked_about_with_the_check_and_never_used():
    known = Knowledge(stale={"student1": 3})
    assert wants(completion(1), known, Busy()) == ("check", (2, 3))
    assert wants(Queued(2, "user", "student1"), known, Busy()) == ("lookup", "student1")
    known.looked_up.add("student1")  # looked up after all, and not found
    assert wants(completion(1), known, Busy()) == READY


# -- assignment grades through the assignment (issue 22) ----------------------------------------------

def test_an_assignments_grades_go_through_mod_assign_save_grades_batched_by_its_instance():
    rows = [grade(1, value=50.0), grade(2, "student2", value=60.0, feedback="Well done"), grade(3, value=70.0),
            grade(4, "student2", cmid=5, value=9.0)]
    plan = plan_learning(rows, 2, "C1", KNOWN, {3, 4}, {3: "assign", 5: "quiz"}, False, 100,
                         instances={3: 17, 5: 4}, functions={"mod_assign_save_grades"})
    assign, quiz = plan.calls
    assert assign.function == "mod_assign_save_grades" and assign.events == [1, 2, 3] and assign.count == 2
    assert assign.args == {"assignmentid": 17, "applytoall": 0, "grades": [
        {"userid": 4, "grade": 60.0, "attemptnumber": -1, "addattempt": 0, "workflowstate": "",
         "plugindata": {"assignfeedbackcomments_editor": {"text": "Well done", "format": 1}}},
        {"userid": 3, "grade": 70.0, "attemptnumber": -1, "addattempt": 0, "workflowstate": ""}]}  # the later wins
    assert quiz.function == "core_grades_update_grades" and quiz.args["component"] == "mod_quiz"
    assert grade_problem(assign, None) is None   # its success is Moodle's null


def test_an_assignments_grades_fall_back_to_the_gradebook_without_the_function_or_the_instance():
    rows = [grade(1), grade(2, "student2")]
    for instances, functions in (({3: 17}, set()), ({}, {"mod_assign_save_grades"})):
        plan = plan_learning(rows, 2, "C1", KNOWN, {3, 4}, {3: "assign"}, False, 100,
                             instances=instances, functions=functions)
        assert [c.function for c in plan.calls] == ["core_grades_update_grades"]


def test_an_assignments_calls_hold_at_most_batch_size_learners():
    rows = [grade(i, f"s{i}") for i in range(5)]
    plan = plan_learning(rows, 2, "C1", {f"s{i}": 10 + i for i in range(5)}, set(range(10, 15)), {3: "assign"},
                         False, 2, instances={3: 17}, functions={"mod_assign_save_grades"})
    assert [len(c.args["grades"]) for c in plan.calls] == [2, 2, 1]


@pytest.mark.parametrize("function, key", [("core_grades_update_grades", "studentid"),
                                           ("mod_assign_save_grades", "userid")])
def test_a_grades_call_refused_as_a_whole_splits_into_one_call_per_student(function, key):
    """Which grade the server refused is not said: each is sent again on its own (issue 21)."""
    from agent.push.plan import Call

    call = Call(function, {"grades": [{key: 7, "grade": 1}, {key: 8, "grade": 2}]}, [1, 2, 3], "grades",
                count=2, students=[7, 8, 8])
    parts = call.split()
    assert [(p.function, p.args["grades"], p.events) for p in parts] == [
        (function, [{key: 7, "grade": 1}], [1]), (function, [{key: 8, "grade": 2}], [2, 3])]
    assert not parts[0].split() and not Call("core_completion_override_activity_completion_status", {}, [1],
                                             "completions").split()
