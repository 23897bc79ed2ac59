"""Learners' accounts that work on both sides (issue 19), end to end: two
Moodle simulators on loopback, the box's (``box=True``: C1 is 12 there,
student1 is user 23) and the school's, the real CLI in subprocesses, and
Moodle's own login/token.php on both to prove who can log in where."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import time

import pytest
import requests

from tests.helpers import BOX_C1, BOX_TOKEN, C1, TOKEN, Box, HeldOpen, MoodleReader, box_section, conflicts_log

SERVICE = "moodle_mobile_app"


@pytest.fixture
def server():
    from moodle_simulator import start_simulator

    sim = start_simulator(token=TOKEN, mobile_services=True)  # so that a learner can log in through the app's service
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def boxsim():
    from moodle_simulator import start_simulator

    sim = start_simulator(token=BOX_TOKEN, box=True)
    try:
        yield sim
    finally:
        sim.stop()


HELD: list[HeldOpen] = []


@pytest.fixture(autouse=True)
def _close_held():
    yield
    while HELD:
        HELD.pop().close()


def make_box(tmp_path, server, boxsim, direction: str = "up", extra: str = "") -> Box:
    """A box keeping C1 and C2, its database held open by another process for
    the whole test (tests/helpers.py HeldOpen: the daemon's and the page's
    connections), so the WAL outlives each CLI and is read as the agent left it."""
    box = Box(tmp_path, server.url, extra=box_section(tmp_path, boxsim) + f"\n[sync]\ndirection = {direction}\n{extra}")
    assert box.cli("courses", "add", "C1", "C2").returncode == 0
    box.held = HeldOpen(box.database)  # type: ignore[attr-defined]
    HELD.append(box.held)  # type: ignore[attr-defined]
    return box


def login(sim, username: str, password: str) -> dict:
    """Moodle's login/token.php: a token, or {"error", "errorcode": "invalidlogin"}."""
    answer = requests.post(f"{sim.url}/login/token.php",
                           data={"username": username, "password": password, "service": SERVICE}, timeout=10)
    return answer.json()


def can_log_in(sim, username: str, password: str) -> bool:
    answer = login(sim, username, password)
    assert "token" in answer or answer.get("errorcode") == "invalidlogin", answer
    return "token" in answer


def sync(box) -> dict:
    result = box.cli("sync", "--json")
    run = json.loads(result.stdout)
    assert result.returncode == 0 and run["status"] == "completed", (run.get("errors"), run.get("status"), result.stderr[-3000:])
    return run


def learners(box) -> dict[str, dict]:
    result = box.cli("learners", "list", "--json")
    assert result.returncode == 0, result.stderr
    return {r["username"]: r for r in json.loads(result.stdout)}


def add(box, username: str, *more: str, password: str | None = "Pupil#2026x") -> "subprocess.CompletedProcess":
    how = ("--password-stdin",) if password is not None else ("--generate",)
    return box.cli("learners", "add", username, "--firstname", "Ada", "--lastname", "Lovelace", "--course", "C1",
                   *more, *how, input=(password + "\n") if password is not None else None)


def printed_password(result) -> str:
    return re.search(r"^password: (\S+)$", result.stdout, re.M).group(1)


def on_disk(box, secret: str) -> bool:
    """Is the secret anywhere in the database file or its WAL, as bytes?"""
    return box.held.holds(secret)


def erased(box, secret: str) -> bool:
    """The secret is in neither the database file nor its WAL, and the WAL is
    there to be read (held open: SQLite's own closing did not fold it away)."""
    box.held.assert_erased(secret)
    return True


# -- adding ------------------------------------------------------------------


def test_an_added_learner_logs_in_on_the_box_at_once_and_on_the_server_after_one_sync(tmp_path, server, boxsim):
    box = make_box(tmp_path, server, boxsim)
    result = add(box, "ada", "--email", "ada@example.org", "--idnumber", "A-1", "--course", "C2")
    assert result.returncode == 0, result.stderr
    assert "password: Pupil#2026x" in result.stdout
    assert can_log_in(boxsim, "ada", "Pupil#2026x")
    on_box = MoodleReader(boxsim.url, BOX_TOKEN)
    assert "ada" in on_box.enrolled(BOX_C1) and "ada" in on_box.enrolled(BOX_C1 + 1)
    assert not can_log_in(server, "ada", "Pupil#2026x")
    row = learners(box)["ada"]
    assert row["account"] == "waiting" and row["password_queued"] and not row["needs_password"]

    run = sync(box)
    assert run["actions"]["users_created"] == 1, run
    assert can_log_in(server, "ada", "Pupil#2026x")
    on_server = MoodleReader(server.url, TOKEN)
    assert on_server.users("ada")[0]["idnumber"] == "A-1" and on_server.users("ada")[0]["email"] == "ada@example.org"
    assert on_server.enrolled(C1)["ada"] == [5] and "ada" in on_server.enrolled(C1 + 1)
    assert erased(box, "Pupil#2026x")
    assert learners(box)["ada"]["account"] == "both"
    assert sync(box)["events_sent"] == 0  # the collection's own events for ada change nothing


def test_add_refuses_clearly_with_exit_2_and_makes_nothing(tmp_path, server, boxsim):
    box = make_box(tmp_path, server, boxsim)
    before = dict(boxsim.stats.snapshot()["calls"])
    cases = [(("Bad Name",), "username: 'Bad Name' is not a valid Moodle username"),
             (("zed", "--course", "C9"), "course: 'C9' is not a course kept on this box"),
             (("zed", "--email", "nope"), "email: 'nope' is not an e-mail address")]
    for args, message in cases:
        result = box.cli("learners", "add", *args[:1], "--firstname", "Z", "--lastname", "Z", "--course", "C1",
                         *args[1:], "--generate")
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
    taken = add(box, "student1")
    assert taken.returncode == 2 and "'student1' already exists on the box's Moodle" in taken.stderr
    weak = add(box, "weakling", password="abc")
    assert weak.returncode == 2
    assert ("the box's Moodle refused the password (its password policy): Passwords must be at least 8 characters "
            "long.") in weak.stderr, weak.stderr
    # Only the weak password reached core_user_create_users: the other refusals were made before any call.
    assert boxsim.stats.snapshot()["calls"]["core_user_create_users"] == before.get("core_user_create_users", 0) + 1
    assert "weakling" not in learners(box)
    with sqlite3.connect(box.database) as db:
        assert db.execute("SELECT COUNT(*) FROM event").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM pendingaccount").fetchone()[0] == 0
    assert not MoodleReader(boxsim.url, BOX_TOKEN).users("weakling")


def test_a_generated_password_is_short_readable_and_meets_moodles_default_policy():
    from moodle_simulator.accounts import password_policy_text

    from agent.learners import generate_password

    seen = {generate_password() for _ in range(500)}
    assert len(seen) == 500
    for p in seen:
        assert 8 <= len(p) <= 10 and password_policy_text(p) == "", p
        assert not set(p) & set("0O1lI|`'\" "), p


# -- brought down from the server, then a password --------------------------


def test_a_learner_brought_down_needs_a_password_then_logs_in_on_both_with_it(tmp_path, server, boxsim):
    box = make_box(tmp_path, server, boxsim, "both")
    sync(box)
    newcomer = requests.post(f"{server.url}/__sim/edit", json={"op": "add_user", "username": "noor",
                                                               "firstname": "Noor", "lastname": "Server"},
                             timeout=10).json()
    requests.post(f"{server.url}/__sim/edit", json={"op": "enrol_user", "username": "noor", "courseid": C1},
                  timeout=10).raise_for_status()
    run = sync(box)
    assert run["actions"]["accounts_down"] == 1, run
    sync(box)  # the collection now knows noor on the box
    row = learners(box)["noor"]
    assert row["needs_password"] and row["account"] == "both" and row["made_by_agent"] == "down"

    result = box.cli("learners", "password", "noor", "--generate")
    assert result.returncode == 0, result.stderr
    password = printed_password(result)
    assert can_log_in(boxsim, "noor", password)
    assert not learners(box)["noor"]["needs_password"]
    assert not can_log_in(server, "noor", password)
    run = sync(box)
    assert run["actions"]["users_updated"] == 1, run
    assert can_log_in(server, "noor", password)
    on_server = MoodleReader(server.url, TOKEN).users("noor")[0]
    assert (on_server["firstname"], on_server["lastname"]) == ("Noor", "Server")  # only the password was sent
    assert erased(box, password) and newcomer["username"] == "noor"


def test_password_box_only_stays_on_the_box_and_refusals_exit_2(tmp_path, server, boxsim):
    box = make_box(tmp_path, server, boxsim)
    sync(box)
    result = box.cli("learners", "password", "student2", "--password-stdin", "--box-only", input="Only#Box2026\n")
    assert result.returncode == 0, result.stderr
    assert can_log_in(boxsim, "student2", "Only#Box2026") and erased(box, "Only#Box2026")
    run = sync(box)
    assert not can_log_in(server, "student2", "Only#Box2026") and run["actions"].get("users_updated", 0) == 0
    unknown = box.cli("learners", "password", "nobody", "--generate")
    assert unknown.returncode == 2 and "'nobody' is not a learner of the courses kept on this box" in unknown.stderr
    weak = box.cli("learners", "password", "student2", "--password-stdin", input="abc\n")
    assert weak.returncode == 2
    assert "the box's Moodle refused the password: Invalid response value detected (invalidresponse)" in weak.stderr
    assert can_log_in(boxsim, "student2", "Only#Box2026")  # the policy kept the old one


# -- profiles ----------------------------------------------------------------


def rename(sim, token: str, userid: int, **fields: str) -> None:
    answer = MoodleReader(sim.url, token).call("core_user_update_users",
                                               **{f"users[0][{k}]": v for k, v in {"id": userid, **fields}.items()})
    assert answer == {"warnings": []}, answer


def test_a_name_changed_on_the_box_reaches_the_server_and_one_changed_on_the_server_comes_down(
        tmp_path, server, boxsim):
    box = make_box(tmp_path, server, boxsim, "both")
    sync(box)
    rename(boxsim, BOX_TOKEN, 23, firstname="Boxname")  # student1
    sync(box)
    assert MoodleReader(server.url, TOKEN).users("student1")[0]["firstname"] == "Boxname"
    rename(server, TOKEN, 4, lastname="Servername")  # student2
    run = sync(box)
    assert run["actions"]["profiles_down"] == 1, run
    assert MoodleReader(boxsim.url, BOX_TOKEN).users("student2")[0]["lastname"] == "Servername"
    again = sync(box)  # no echo either way
    assert again["events_sent"] == 0 and again["actions"]["profiles_down"] == 0, again
    assert MoodleReader(server.url, TOKEN).users("student1")[0]["firstname"] == "Boxname"
    assert conflicts_log(box) == []


def test_the_boxs_moodle_rejecting_its_token_at_the_profiles_is_said_once_and_the_push_goes_on(
        tmp_path, server, boxsim):
    box = make_box(tmp_path, server, boxsim, "both")
    sync(box)
    rename(server, TOKEN, 3, lastname="Serverone")  # student1
    rename(server, TOKEN, 4, lastname="Servertwo")  # student2
    rename(boxsim, BOX_TOKEN, 23, firstname="Boxname")  # student1's, to push
    boxsim.faults.set(fail_function={"core_user_update_users": "invalidtoken"})
    result = box.cli("sync", "--json")
    boxsim.faults.clear()
    run = json.loads(result.stdout)
    assert run["status"] == "completed_with_errors", (run, result.stderr[-3000:])
    assert run["errors"] == ["direction down: the box's Moodle rejected its token ([box] token_file)"], run
    assert MoodleReader(server.url, TOKEN).users("student1")[0]["firstname"] == "Boxname"  # pushed all the same
    assert sync(box)["actions"]["profiles_down"] == 2  # brought down once the box's Moodle takes its token


def test_a_name_changed_on_both_sides_the_later_wins_and_is_logged(tmp_path, server, boxsim):
    box = make_box(tmp_path, server, boxsim, "both")
    sync(box)
    # Since the last sync: the server's change first, then the box's: the box's wins.
    rename(server, TOKEN, 3, firstname="Serverfirst")
    time.sleep(1.1)
    rename(boxsim, BOX_TOKEN, 23, firstname="Boxlater")
    sync(box)
    assert MoodleReader(server.url, TOKEN).users("student1")[0]["firstname"] == "Boxlater"
    assert MoodleReader(boxsim.url, BOX_TOKEN).users("student1")[0]["firstname"] == "Boxlater"
    log = conflicts_log(box)
    assert [(c["username"], c["kind"], c["box_text"], c["server_text"], c["kept"], c["rule"]) for c in log] == [
        ("student1", "firstname", "Boxlater", "Serverfirst", "box", "the later change wins")]
    from tests.helpers import page_of as page
    shown = re.search(r'data-field="two_way_conflicts">.*?<li data-kept="box">(.*?)</li>', page(box), re.S).group(1)
    assert "student1" in shown and "first name" in shown and "box Boxlater, server Serverfirst" in shown, shown

    # The box's change waits (collected, direction down: not pushed) while the
    # server is read; then the server changes: the server's is the later.
    rename(boxsim, BOX_TOKEN, 24, firstname="Boxearly")
    box.write_config(server.url, extra=box_section(tmp_path, boxsim) + "\n[sync]\ndirection = down\n")
    sync(box)
    time.sleep(1.1)
    rename(server, TOKEN, 4, firstname="Serverlater")
    box.write_config(server.url, extra=box_section(tmp_path, boxsim) + "\n[sync]\ndirection = both\n")
    sync(box)
    assert MoodleReader(server.url, TOKEN).users("student2")[0]["firstname"] == "Serverlater"
    assert MoodleReader(boxsim.url, BOX_TOKEN).users("student2")[0]["firstname"] == "Serverlater"
    last = conflicts_log(box)[-1]
    assert (last["username"], last["kind"], last["box_text"], last["server_text"], last["kept"]) == (
        "student2", "firstname", "Boxearly", "Serverlater", "server")


# -- kills -------------------------------------------------------------------


def calls(sim, function: str) -> int:
    return sim.stats.snapshot()["calls"].get(function, 0)


def kill_when_called(proc, sim, function: str, before: int) -> None:
    """SIGKILL once the simulator has done the call (it answers 2 s later)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and calls(sim, function) == before and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    sim.faults.set(call_cost_ms=0)


def pending(box) -> list[tuple]:
    with sqlite3.connect(box.database) as db:
        return db.execute("SELECT username, action FROM pendingaccount").fetchall()


@pytest.mark.parametrize("killed_after", ["core_user_get_users_by_field", "core_user_create_users",
                                          "enrol_manual_enrol_users"])
def test_a_kill_in_the_middle_of_learners_add_is_finished_by_the_next_collection(
        tmp_path, server, boxsim, killed_after):
    box = make_box(tmp_path, server, boxsim)
    password = "Killed#Add2026"
    before = calls(boxsim, killed_after)
    boxsim.faults.set(call_cost_ms=2000)
    proc = box.popen("learners", "add", "kim", "--firstname", "Kim", "--lastname", "Kill", "--course", "C1",
                     "--password-stdin", stdin=subprocess.PIPE)
    proc.stdin.write(password + "\n")
    proc.stdin.flush()
    kill_when_called(proc, boxsim, killed_after, before)
    if killed_after == "core_user_get_users_by_field":  # the check that the username is free: nothing begun
        assert pending(box) == [] and not MoodleReader(boxsim.url, BOX_TOKEN).users("kim")
        assert box.cli("collect").returncode == 0 and "kim" not in learners(box)
        return
    assert pending(box) == [("kim", "add")]  # what was started is remembered, with its password

    assert box.cli("collect").returncode == 0
    assert pending(box) == []
    assert can_log_in(boxsim, "kim", password)
    assert "kim" in MoodleReader(boxsim.url, BOX_TOKEN).enrolled(BOX_C1)
    assert len(MoodleReader(boxsim.url, BOX_TOKEN).users("kim")) == 1
    sync(box)
    assert can_log_in(server, "kim", password) and "kim" in MoodleReader(server.url, TOKEN).enrolled(C1)
    assert erased(box, password)


def test_a_kill_in_the_middle_of_the_sync_carrying_a_password_loses_nothing_and_leaves_no_password(
        tmp_path, server, boxsim):
    box = make_box(tmp_path, server, boxsim)
    password = "Killed#Sync2026"
    assert add(box, "kai", password=password).returncode == 0
    assert on_disk(box, password)  # kept until the server confirmed it
    before = calls(server, "core_user_create_users")
    server.faults.set(call_cost_ms=2000)
    proc = box.popen("sync")
    kill_when_called(proc, server, "core_user_create_users", before)
    assert can_log_in(server, "kai", password)  # made on the server, not confirmed on the box
    assert on_disk(box, password)

    run = sync(box)
    assert run["actions"].get("users_created", 0) == 0 and run["actions"]["users_updated"] == 1, run
    assert len(MoodleReader(server.url, TOKEN).users("kai")) == 1 and can_log_in(server, "kai", password)
    assert "kai" in MoodleReader(server.url, TOKEN).enrolled(C1)
    assert erased(box, password)


# -- the page's forms ----------------------------------------------------------


def test_the_pages_forms_need_the_login_the_csrf_token_and_an_unused_form(tmp_path, server, boxsim):
    from agent.auth import hash_password
    from agent.config import load_config
    from agent.store import settings
    from agent.store.schema import close_db
    from tests.helpers import csrf_of

    box = make_box(tmp_path, server, boxsim)
    sync(box)
    app = __import__("webui").create_app(load_config(box.config))
    try:
        settings.put(password_hash=hash_password("correct horse battery"))
        client = app.test_client()
        forms = {"/learners/add": {"username": "zoe", "firstname": "Zoe", "lastname": "Z", "course": str(C1)},
                 "/learners/password": {"username": "student3"}}
        token = csrf_of(client)
        for url, form in forms.items():
            assert client.post(url, data={**form, "csrf_token": token}).status_code == 401
        assert client.get("/learners").status_code == 302  # to the login
        assert client.post("/login", data={"password": "correct horse battery", "csrf_token": token}).status_code == 303
        screen = client.get("/learners").get_data(as_text=True)
        once = re.search(r'name="once" value="([^"]+)"', screen).group(1)
        token = re.search(r'name="csrf_token" value="([^"]+)"', screen).group(1)
        for url, form in forms.items():
            assert client.post(url, data={**form, "once": once, "csrf_token": "forged"}).status_code == 403
        assert not MoodleReader(boxsim.url, BOX_TOKEN).users("zoe")

        made = client.post("/learners/add", data={**forms["/learners/add"], "once": once, "csrf_token": token})
        assert made.status_code == 200 and made.headers["Cache-Control"] == "no-store"
        password = re.search(r'class="login-card-password">([^<]+)<', made.get_data(as_text=True)).group(1)
        assert can_log_in(boxsim, "zoe", password)
        again = client.post("/learners/add", data={**forms["/learners/add"], "once": once, "csrf_token": token})
        assert again.status_code == 409 and password not in again.get_data(as_text=True)
        assert "This form was already sent" in again.get_data(as_text=True)
        assert password not in client.get("/learners").get_data(as_text=True)
        assert on_disk(box, password)  # for the server, until it confirmed it
        # The cards in French and German.
        for code, words in (("fr", ("Cartes de connexion", "Identifiant", "Mot de passe", "Imprimer les cartes")),
                            ("de", ("Anmeldekarten", "Anmeldename", "Passwort", "Karten drucken"))):
            client.get(f"/lang/{code}?next=/learners")
            screen = client.get("/learners").get_data(as_text=True)
            once = re.search(r'name="once" value="([^"]+)"', screen).group(1)
            answer = client.post("/learners/password", data={"username": "student3", "once": once,
                                                             "csrf_token": token}).get_data(as_text=True)
            assert all(w in answer for w in words), (code, answer)
            assert f'<html lang="{code}"' in answer
    finally:
        close_db()
    sync(box)
    assert can_log_in(server, "zoe", password) and erased(box, password)


def test_check_names_what_the_boxs_service_lacks_for_the_learners(tmp_path, server):
    from moodle_simulator import start_simulator

    lacking = start_simulator(token=BOX_TOKEN, box=True, without_functions=["core_user_create_users"])
    try:
        box = Box(tmp_path, server.url, extra=box_section(tmp_path, lacking))
        result = box.cli("check", "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["box"]["missing_functions"] == ["core_user_create_users"]
    finally:
        lacking.stop()


def test_a_kill_in_the_middle_of_learners_password_is_finished_by_the_next_collection(tmp_path, server, boxsim):
    box = make_box(tmp_path, server, boxsim)
    sync(box)
    password = "Killed#Pass2026"
    before = calls(boxsim, "core_user_update_users")
    boxsim.faults.set(call_cost_ms=2000)
    proc = box.popen("learners", "password", "student4", "--password-stdin", stdin=subprocess.PIPE)
    proc.stdin.write(password + "\n")
    proc.stdin.flush()
    kill_when_called(proc, boxsim, "core_user_update_users", before)
    assert pending(box) == [("student4", "password")]
    assert box.cli("collect").returncode == 0 and pending(box) == []
    assert can_log_in(boxsim, "student4", password)
    sync(box)
    assert can_log_in(server, "student4", password) and erased(box, password)
