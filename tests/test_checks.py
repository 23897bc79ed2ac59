"""What a sync reads before it pushes: look-ups and enrolment checks that
cost what the box's learners cost, travel inside the batches, and are
remembered for a week. Through the CLI against the simulator on loopback."""

from __future__ import annotations

import json
import sqlite3

import pytest

from agent.store.known import KEEP_DAYS, TRUST_DAYS
from moodle_simulator import start_simulator
from tests.helpers import TOKEN, Box, MoodleReader

C1, C2, C3 = 2, 3, 4
LOOKUP, PROFILES, ENROLLED = ("core_user_get_users_by_field", "core_user_get_course_user_profiles",
                              "core_enrol_get_enrolled_users")


def completions(course_id, users, cmid, done=True, prefix="c"):
    return [{"type": "completion", "id": f"{prefix}-{course_id}-{u}-{cmid}", "course_id": course_id, "user": u,
             "cmid": cmid, "completed": done} for u in users]


def sync(box, *args):
    result = box.cli("sync", "--json", *args)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


def sql(box, statement, *params):
    with sqlite3.connect(box.database) as conn:
        return conn.execute(statement, params).fetchall()


def age_facts(box, days):
    """Move every fact the box remembers ``days`` into the past."""
    for table in ("knownuser", "knownenrolment"):
        sql(box, f"UPDATE {table} SET confirmed_at = strftime('%Y-%m-%dT%H:%M:%SZ', confirmed_at, ?)",
            f"-{days} days")


def make_account(moodle, username, course_id):
    """An account made on the server (a teacher's doing), enrolled in the course: its id."""
    moodle.call("core_user_create_users", **{"users[0][username]": username, "users[0][firstname]": "New",
                                             "users[0][lastname]": "Account",
                                             "users[0][email]": f"{username}@example.org",
                                             "users[0][createpassword]": 1})
    uid = moodle.user_id(username)
    moodle.call("enrol_manual_enrol_users", **{"enrolments[0][roleid]": 5, "enrolments[0][userid]": uid,
                                               "enrolments[0][courseid]": course_id})
    return uid


@pytest.fixture
def box(tmp_path, simulator):
    return Box(tmp_path, simulator.url, batch_size=100)


@pytest.fixture
def moodle(simulator):
    return MoodleReader(simulator.url)


def test_the_check_reads_the_learners_of_the_box_not_the_course(tmp_path):
    students = [f"student{i}" for i in range(1, 6)]
    measured = {}
    for extra in (0, 3000):
        with start_simulator(token=TOKEN, participants={C1: extra} if extra else None) as sim:
            (tmp_path / f"p{extra}").mkdir()
            box = Box(tmp_path / f"p{extra}", sim.url)
            assert box.cli("courses", "add", "C1").returncode == 0
            box.enqueue(completions(C1, students, 1))
            sim.stats.reset()
            run = sync(box)
            stats = sim.stats.snapshot()
            assert run["status"] == "completed" and run["actions"]["completions"] == 5
            assert ENROLLED not in stats["calls"]
            assert stats["calls"][PROFILES] == 1 and stats["calls"][LOOKUP] == 1
            measured[extra] = run["bytes_received"]
    # 3,000 more participants in the course: not a byte more to read.
    assert measured[3000] == measured[0] < 20_000


def test_a_known_box_asks_nothing_and_sends_in_full_batches(box, simulator):
    students = [f"student{i}" for i in range(1, 6)]
    assert box.cli("courses", "add", "C1", "C2").returncode == 0
    box.enqueue(completions(C1, students, 1) + completions(C2, students, 4))
    first = sync(box)
    assert first["actions"]["completions"] == 10
    assert len(sql(box, "SELECT * FROM knownuser")) == 5 and len(sql(box, "SELECT * FROM knownenrolment")) == 10

    box.enqueue(completions(C1, students, 2) + completions(C2, students, 5))
    simulator.stats.reset()
    second = sync(box)
    stats = simulator.stats.snapshot()
    assert second["actions"]["completions"] == 10 and second["conflicts"] == 0
    assert LOOKUP not in stats["calls"] and PROFILES not in stats["calls"]
    # Site info, course check, and both courses' completions in one batch.
    assert (stats["requests"], stats["batch_sizes"]) == (3, {"10": 1})


def test_look_ups_ride_in_the_batches_and_a_course_does_not_wait_for_another(box, simulator, moodle):
    students = [f"student{i}" for i in range(1, 6)]
    assert box.cli("courses", "add", "C1", "C2").returncode == 0
    box.enqueue(completions(C1, students, 1))
    sync(box)  # the box now knows student1..5 and their enrolments in C1
    newkid = make_account(moodle, "newkid", C2)
    box.enqueue(completions(C1, students, 2) + completions(C2, ["student1", "newkid"], 4))
    simulator.stats.reset()
    run = sync(box)
    stats = simulator.stats.snapshot()
    assert run["actions"]["completions"] == 7 and run["conflicts"] == 0
    assert moodle.completion(C2, newkid, 4) == 1 and moodle.completion(C1, 3, 2) == 1
    # After site info and the course check, a batch of newkid's look-up,
    # student1's check in C2 and C1's five completions; a batch of newkid's
    # check in C2 and student1's C2 completion; newkid's completion. No
    # look-up or check went in a request of its own.
    assert stats["requests"] == 5
    assert stats["batch_sizes"] == {"2": 1, "7": 1}
    assert (stats["calls"][LOOKUP], stats["calls"][PROFILES]) == (1, 2)


def test_a_sync_with_nothing_queued_makes_two_requests(box, simulator):
    assert box.cli("courses", "add", "C1", "C2", "C3").returncode == 0
    simulator.stats.reset()
    run = sync(box)
    assert run["status"] == "completed"
    assert simulator.stats.snapshot()["requests"] == 2  # site info, course check


def test_facts_older_than_their_age_are_asked_again(box, simulator):
    assert box.cli("courses", "add", "C1").returncode == 0
    box.enqueue(completions(C1, ["student1"], 1))
    sync(box)
    age_facts(box, TRUST_DAYS - 1)
    box.enqueue(completions(C1, ["student1"], 2))
    simulator.stats.reset()
    sync(box)
    calls = simulator.stats.snapshot()["calls"]
    assert LOOKUP not in calls and PROFILES not in calls  # six days old: trusted
    age_facts(box, 2)
    box.enqueue(completions(C1, ["student1"], 1, done=False, prefix="undo"))
    simulator.stats.reset()
    run = sync(box)
    calls = simulator.stats.snapshot()["calls"]
    # Eight days old: checked again. The check's profile names the account,
    # so the old id is confirmed with the enrolment, without a look-up.
    assert run["actions"]["completions"] == 1
    assert calls[PROFILES] == 1 and LOOKUP not in calls
    fresh = "strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-1 hour')"
    assert sql(box, f"SELECT user_id, confirmed_at >= {fresh} FROM knownuser") == [(3, 1)]
    assert sql(box, f"SELECT user_id, confirmed_at >= {fresh} FROM knownenrolment") == [(3, 1)]


def test_an_old_id_of_an_account_made_again_is_looked_up_before_anything_is_sent(box, simulator, moodle):
    assert box.cli("courses", "add", "C1").returncode == 0
    box.enqueue(completions(C1, ["student1"], 1))
    sync(box)
    age_facts(box, TRUST_DAYS + 1)
    simulator.state.forget(users=[3])
    again = make_account(moodle, "student1", C1)
    box.enqueue(completions(C1, ["student1"], 2))
    simulator.stats.reset()
    run = sync(box)
    calls = simulator.stats.snapshot()["calls"]
    assert (run["actions"]["completions"], run["conflicts"]) == (1, 0)
    assert (calls[PROFILES], calls[LOOKUP]) == (2, 1)  # no profile for id 3: looked up, checked
    assert moodle.completion(C1, again, 2) == 1
    assert sql(box, "SELECT user_id FROM knownuser") == [(again,)]


def test_facts_of_learners_gone_from_the_box_are_deleted(box):
    assert box.cli("courses", "add", "C1").returncode == 0
    box.enqueue(completions(C1, ["student1"], 1))
    sync(box)
    age_facts(box, KEEP_DAYS + 1)
    box.enqueue(completions(C1, ["student2"], 1))
    sync(box)
    assert sql(box, "SELECT username FROM knownuser") == [("student2",)]
    assert sql(box, "SELECT user_id FROM knownenrolment") == [(4,)]


def test_force_asks_everything_again(box, simulator):
    assert box.cli("courses", "add", "C1").returncode == 0
    box.enqueue(completions(C1, ["student1"], 1))
    sync(box)
    box.enqueue(completions(C1, ["student1"], 2))
    simulator.stats.reset()
    sync(box, "--force")
    assert simulator.stats.snapshot()["calls"][LOOKUP] == 1


def test_an_account_made_again_under_a_new_id_is_caught_by_verify(box, simulator, moodle):
    """Moodle takes a completion for a user id that no longer exists (recording
    20): within the facts' age the box sends to the old id; verify looks the
    user up afresh, queues the event again, and the next sync sends it to the
    new account."""
    assert box.cli("courses", "add", "C1").returncode == 0
    box.enqueue(completions(C1, ["student1"], 1))
    sync(box)
    simulator.state.forget(users=[3])
    again = make_account(moodle, "student1", C1)
    assert again != 3
    box.enqueue(completions(C1, ["student1"], 2))
    run = sync(box)
    assert run["actions"]["completions"] == 1  # to id 3, which the server took without a word
    assert simulator.state.get_completion(again, 2) is None

    checked = box.json("verify")
    assert checked["actions"]["requeued"] == 2
    assert sql(box, "SELECT user_id FROM knownuser WHERE username = 'student1'") == [(again,)]
    run = sync(box)
    assert run["actions"]["completions"] == 2 and run["conflicts"] == 0
    assert moodle.completion(C1, again, 1) == 1 and moodle.completion(C1, again, 2) == 1


def test_a_remembered_account_gone_from_the_server_is_looked_up_again(box, simulator):
    assert box.cli("courses", "add", "C1").returncode == 0
    box.enqueue(completions(C1, ["student1", "student2"], 1))
    sync(box)
    simulator.state.forget(users=[3])
    sql(box, "DELETE FROM knownenrolment")  # the enrolments are checked again; the ids are still trusted
    box.enqueue(completions(C1, ["student1", "student2"], 2))
    simulator.stats.reset()
    run = sync(box)
    calls = simulator.stats.snapshot()["calls"]
    # The check answers no profile for id 3: looked up, not found, a conflict.
    assert (run["actions"]["completions"], run["conflicts"]) == (1, 1)
    assert (calls[PROFILES], calls[LOOKUP]) == (1, 1)
    (conflict,) = box.json("conflicts")
    assert conflict["user"] == "student1" and "unknown user" in conflict["reason"]
    assert sql(box, "SELECT username FROM knownuser") == [("student2",)]


def test_a_learner_not_enrolled_is_a_conflict_and_not_remembered(box):
    assert box.cli("courses", "add", "C3").returncode == 0
    box.enqueue(completions(C3, ["student1"], 7))
    run = sync(box)
    assert run["conflicts"] == 1 and "not enrolled" in box.json("conflicts")[0]["reason"]
    assert sql(box, "SELECT * FROM knownenrolment") == []


def test_a_refused_check_makes_its_events_conflicts_with_the_reason(box, simulator):
    assert box.cli("courses", "add", "C1").returncode == 0
    simulator.faults.set(fail_function={PROFILES: "nopermissions"})
    box.enqueue(completions(C1, ["student1"], 1) + completions(C1, ["student2"], 2))
    run = sync(box)
    assert (run["status"], run["events_sent"], run["conflicts"]) == ("completed_with_warnings", 0, 2)
    reasons = {c["user"]: c["reason"] for c in box.json("conflicts")}
    assert "could not ask the server for the enrolment of 'student1' in course 2" in reasons["student1"]
    assert "core_user_get_course_user_profiles" in reasons["student1"] and "nopermissions" in reasons["student1"]


def test_a_service_set_up_for_an_older_agent_checks_with_the_participants(tmp_path):
    with start_simulator(token=TOKEN, without_functions=[PROFILES]) as sim:
        box = Box(tmp_path, sim.url)
        assert box.cli("courses", "add", "C1", "C3").returncode == 0
        box.enqueue(completions(C1, ["student1", "student2"], 1) + completions(C3, ["student1"], 7))
        run = sync(box)
        assert (run["actions"]["completions"], run["conflicts"]) == (2, 1)
        assert sim.stats.snapshot()["calls"][ENROLLED] == 2
        check = json.loads(box.cli("check", "--json").stdout)
        assert check["missing_functions"] == [PROFILES]


def test_new_accounts_are_enrolled_without_a_check_and_remembered(box, simulator, moodle):
    assert box.cli("courses", "add", "C1").returncode == 0
    box.enqueue([{"type": "user", "user": f"kid{i}", "firstname": "K", "lastname": str(i),
                  "email": f"kid{i}@example.org"} for i in range(3)]
                + [{"type": "enrolment", "course_id": C1, "user": f"kid{i}"} for i in range(3)]
                + completions(C1, [f"kid{i}" for i in range(3)], 1))
    simulator.stats.reset()
    run = sync(box)
    stats = simulator.stats.snapshot()
    assert run["actions"] == {"users_created": 3, "users_updated": 0, "enrolments": 3, "completions": 3,
                              "grades": 0, "courses_refreshed": 0}
    assert PROFILES not in stats["calls"] and stats["calls"][LOOKUP] == 1
    # The look-up (nothing to carry it yet); then a batch each: the
    # creations, the enrolments, the completions.
    assert stats["requests"] == 6 and stats["batch_sizes"] == {"3": 3}
    ids = dict(sql(box, "SELECT username, user_id FROM knownuser"))
    assert ids == {f"kid{i}": moodle.user_id(f"kid{i}") for i in range(3)}
    assert sorted(sql(box, "SELECT course_id, user_id FROM knownenrolment")) == sorted((C1, u) for u in ids.values())


def test_an_upgraded_database_gets_the_tables(tmp_path):
    from agent.store.schema import SCHEMA_VERSION, close_db, open_db

    path = tmp_path / "agent.db"
    open_db(path)
    close_db()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE knownuser")
        conn.execute("DROP TABLE knownenrolment")
        conn.execute("PRAGMA user_version = 4")
    open_db(path)
    close_db()
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"knownuser", "knownenrolment"} <= tables
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_the_older_check_reads_a_course_once_and_an_old_id_is_looked_up(tmp_path):
    with start_simulator(token=TOKEN, without_functions=[PROFILES]) as sim:
        box = Box(tmp_path, sim.url)
        assert box.cli("courses", "add", "C1").returncode == 0
        box.enqueue(completions(C1, ["student1"], 1))
        sync(box)
        age_facts(box, TRUST_DAYS + 1)
        box.enqueue(completions(C1, ["student1", "student2", "student3"], 2))
        sim.stats.reset()
        run = sync(box)
        calls = sim.stats.snapshot()["calls"]
        assert run["actions"]["completions"] == 3
        assert (calls[ENROLLED], calls[LOOKUP]) == (1, 1)


def test_an_enrolment_event_is_checked_even_when_the_box_remembers_it(box, simulator):
    assert box.cli("courses", "add", "C1").returncode == 0
    box.enqueue(completions(C1, ["student1"], 1))
    sync(box)
    box.enqueue([{"type": "enrolment", "course_id": C1, "user": "student1"}] + completions(C1, ["student1"], 2))
    simulator.stats.reset()
    run = sync(box)
    calls = simulator.stats.snapshot()["calls"]
    assert (run["events_sent"], run["actions"]["enrolments"]) == (2, 0)  # enrolled already: settled, not made
    assert calls[PROFILES] == 1 and "enrol_manual_enrol_users" not in calls
