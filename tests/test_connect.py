"""``moodle-sync-agent connect`` and ``check``'s judgement of the rights (issue 20), end to end:
the real CLI in a subprocess against the Moodle simulator on loopback, whose non-admin sync
account ``syncagent`` holds exactly the rights of the role presets in packaging/moodle/."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
from pathlib import Path

import pytest
import requests

from tests.helpers import ADMIN_TOKEN, BOX_ADMIN_TOKEN, NEVER_CALLED, Box, MoodleReader, sim_accounts

C1 = 2
BOX_C1, OFFSET_CM = 12, 100




@pytest.fixture
def server():
    from moodle_simulator import start_simulator

    sim = start_simulator(token=ADMIN_TOKEN, sync_account=True, without_functions=NEVER_CALLED)
    try:
        yield sim
    finally:
        sim.stop()


def new_box(tmp_path: Path, url: str, extra: str = "") -> Box:
    """A box whose token file does not exist yet: connect makes it."""
    box = Box(tmp_path, url, extra=extra)
    box.token_file = tmp_path / "token"
    box.token_file.unlink()
    return box


def connect(box: Box, side: str, url: str, user: str, password: str):
    return box.cli("connect", side, url, "--user", user, input=password + "\n")


def test_connect_server_with_the_sync_account_writes_a_0600_token_and_check_passes_without_warning(tmp_path, server):
    acc = sim_accounts()
    box = new_box(tmp_path, server.url)
    result = connect(box, "server", server.url, acc.SYNC_USERNAME, acc.SYNC_PASSWORD)
    assert result.returncode == 0, result.stderr
    token = box.token_file.read_text()
    assert re.fullmatch(r"[0-9a-f]{32}\n", token) and token.strip() != ADMIN_TOKEN
    assert stat.S_IMODE(box.token_file.stat().st_mode) == 0o600
    # The writer's, or the agent's user's where root writes it and the package made that user.
    from agent.connect import _agent_ids

    assert box.token_file.stat().st_uid == (_agent_ids() or (os.geteuid(),))[0]
    # The token is the sync account's: Moodle says so.
    info = MoodleReader(server.url, token.strip()).call("core_webservice_get_site_info")
    assert (info["username"], info["userissiteadmin"]) == ("syncagent", False)
    out = result.stdout
    assert f"is in {box.token_file}" in out
    assert "server: account syncagent, not a site administrator" in out
    assert "server: functions: all present" in out
    assert "warning" not in out and "off:" not in out and not result.stderr
    check = json.loads(box.cli("check", "--json").stdout)
    assert check["rights"] == {"username": "syncagent", "site_admin": False, "missing_functions": [],
                               "unused_functions": [], "off": [], "off_functions": [], "warnings": []}
    # Nothing but the token file changed: no leftover temporary file beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.ini", "data", "token"]


def test_check_warns_of_the_functions_the_agent_never_calls_and_still_exits_0(tmp_path):
    # The simulator's default service: the sync's functions and NEVER_CALLED besides.
    from moodle_simulator import start_simulator

    acc = sim_accounts()
    with start_simulator(token=ADMIN_TOKEN, sync_account=True) as sim:
        box = new_box(tmp_path, sim.url)
        assert connect(box, "server", sim.url, acc.SYNC_USERNAME, acc.SYNC_PASSWORD).returncode == 0
        result = box.cli("check", "--json")
        assert result.returncode == 0, result.stderr
        rights = json.loads(result.stdout)["rights"]
        assert rights["unused_functions"] == sorted(NEVER_CALLED) and rights["missing_functions"] == []
        [warning] = rights["warnings"]
        assert warning.startswith("the service gives the token functions the agent never calls: "
                                  + ", ".join(sorted(NEVER_CALLED)) + ": remove them from the service "), warning
        shown = box.cli("check")
        assert shown.returncode == 0, shown.stderr
        assert all(name in shown.stdout for name in NEVER_CALLED), shown.stdout
        assert "never calls" in shown.stdout


def test_connect_with_an_administrators_account_works_but_check_warns(tmp_path, server):
    acc = sim_accounts()
    box = new_box(tmp_path, server.url)
    result = connect(box, "server", server.url, "admin", acc.ADMIN_PASSWORD)
    assert result.returncode == 0, result.stderr
    assert box.token_file.read_text().strip() == ADMIN_TOKEN
    assert "server: account admin, a site administrator" in result.stdout
    [warning] = [line for line in result.stdout.splitlines() if "warning:" in line]
    assert "the token belongs to admin, a site administrator" in warning
    assert "connect server URL --user NAME" in warning and "Manage tokens" in warning
    check = json.loads(box.cli("check", "--json").stdout)
    assert check["rights"]["site_admin"] is True and len(check["rights"]["warnings"]) == 1


def test_a_wrong_password_exits_2_with_moodles_refusal_in_words_and_writes_nothing(tmp_path, server):
    box = new_box(tmp_path, server.url)
    result = connect(box, "server", server.url, "syncagent", "Not#The2Password")
    assert result.returncode == 2
    assert "refused the login of 'syncagent': wrong username or password" in result.stderr
    assert "(Moodle: invalidlogin)" in result.stderr
    assert not box.token_file.exists() and result.stdout == ""


def test_a_missing_service_and_an_account_without_createtoken_are_said_in_words(tmp_path, server):
    acc = sim_accounts()
    box = new_box(tmp_path, server.url)
    box.write_config(server.url, extra="")
    text = box.config.read_text().replace("timeout = 5\n", "timeout = 5\nservice = no_such_service\n")
    box.config.write_text(text)
    result = connect(box, "server", server.url, "syncagent", acc.SYNC_PASSWORD)
    assert result.returncode == 2
    assert "no enabled web service with the short name 'no_such_service'" in result.stderr
    assert "(Moodle: servicenotavailable)" in result.stderr
    # A learner may log in but not create a token for the service (recording 84).
    box.config.write_text(text.replace("service = no_such_service\n", ""))
    result = connect(box, "server", server.url, "student1", acc.LEARNER_PASSWORD)
    assert result.returncode == 2
    assert "'student1' may not create a token for the service 'moodle_sync_agent'" in result.stderr
    assert "(Moodle: cannotcreatetoken)" in result.stderr
    assert not box.token_file.exists()


def test_connect_refuses_another_address_than_the_configured_one(tmp_path, server):
    box = new_box(tmp_path, server.url)
    result = connect(box, "server", "https://elsewhere.example.org", "syncagent", "x")
    assert result.returncode == 2
    assert "is not the address in" in result.stderr and f"url = {server.url}" in result.stderr
    result = connect(box, "box", "http://127.0.0.1", "syncagent", "x")
    assert result.returncode == 2 and "[box] url is not set" in result.stderr


def test_connect_replaces_an_existing_token_file_atomically(tmp_path, server):
    acc = sim_accounts()
    box = new_box(tmp_path, server.url)
    box.token_file.write_text("0" * 32 + "\n")
    box.token_file.chmod(0o644)
    assert connect(box, "server", server.url, "syncagent", acc.SYNC_PASSWORD).returncode == 0
    assert stat.S_IMODE(box.token_file.stat().st_mode) == 0o600
    assert box.token_file.read_text().strip() not in ("0" * 32, ADMIN_TOKEN)


def all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def test_the_password_is_in_no_file_log_output_or_history_row(tmp_path, server):
    acc = sim_accounts()
    box = new_box(tmp_path, server.url)
    outputs = []
    for user, password in (("syncagent", "Wrong#Pass1word"), ("syncagent", acc.SYNC_PASSWORD)):
        result = box.cli("-v", "connect", "server", server.url, "--user", user, input=password + "\n")
        outputs += [result.stdout, result.stderr]
    assert box.cli("courses", "add", "C1").returncode == 0
    assert box.cli("sync").returncode == 0
    outputs.append(box.cli("history", "--json").stdout)
    for password in ("Wrong#Pass1word", acc.SYNC_PASSWORD):
        assert all(password not in text for text in outputs)
        assert password.encode() not in all_bytes(tmp_path)
        with sqlite3.connect(box.database) as conn:
            for table, in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
                rows = conn.execute(f"SELECT * FROM {table}").fetchall()
                assert password not in repr(rows), table


# -- least rights, end to end -------------------------------------------------------------------

@pytest.fixture
def boxsim():
    from moodle_simulator import start_simulator

    # The agent never asks the box's Moodle for a learner's course profile: its service goes without it
    # (core_user_update_users it needs: the Learners screen's passwords, profiles brought down).
    sim = start_simulator(token=BOX_ADMIN_TOKEN, box=True, sync_account=True,
                          without_functions=NEVER_CALLED + ["core_user_get_course_user_profiles"])
    try:
        yield sim
    finally:
        sim.stop()


def run_json(box: Box, *args: str):
    result = box.cli(*args, "--json")
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else None, result.stderr


def test_the_core_scenario_a_collection_and_a_two_way_sync_pass_with_the_non_admin_accounts(
        tmp_path, server, boxsim):
    acc = sim_accounts()
    box = new_box(tmp_path, server.url, extra=f"[box]\nurl = {boxsim.url}\ntoken_file = {tmp_path / 'box-token'}\n"
                                               "timeout = 5\n\n[sync]\ndirection = both\n")
    result = connect(box, "server", server.url, acc.SYNC_USERNAME, acc.SYNC_PASSWORD)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "not checked: " in result.stdout and "box-token" in result.stdout  # connect box next
    assert "server: account syncagent, not a site administrator" in result.stdout
    result = connect(box, "box", boxsim.url, acc.SYNC_USERNAME, acc.SYNC_PASSWORD)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "warning" not in result.stdout and "off:" not in result.stdout, result.stdout
    assert "box's Moodle: account syncagent, not a site administrator" in result.stdout
    tokens = {box.token_file.read_text().strip(), (tmp_path / "box-token").read_text().strip()}
    assert len(tokens) == 2 and not tokens & {ADMIN_TOKEN, BOX_ADMIN_TOKEN}
    moodle, box_moodle = MoodleReader(server.url, ADMIN_TOKEN), MoodleReader(boxsim.url, BOX_ADMIN_TOKEN)

    # The core scenario (tests/test_sync.py's every event type) with the sync account's token.
    assert box.cli("courses", "add", "C1", "3").returncode == 0
    assert box.enqueue([
        {"type": "user", "id": "u1", "user": "kid1", "firstname": "Kid", "lastname": "One",
         "email": "kid1@example.org", "idnumber": "K001", "password": "Kid1#pass-word"},
        {"type": "user", "id": "u3", "user": "student2", "firstname": "Student2", "lastname": "Renamed",
         "email": "student2@example.invalid"},
        {"type": "enrolment", "id": "n1", "course_id": C1, "user": "kid1"},
        {"type": "completion", "id": "c1", "course_id": C1, "user": "kid1", "cmid": 1, "completed": True},
        {"type": "grade", "id": "g1", "course_id": C1, "user": "kid1", "cmid": 3, "grade": 87.5},
    ]).returncode == 0
    code, run, err = run_json(box, "sync")
    assert code == 0 and run["status"] == "completed", (run, err)
    assert (run["actions"]["users_created"], run["actions"]["users_updated"], run["actions"]["enrolments"],
            run["actions"]["completions"], run["actions"]["grades"]) == (1, 1, 1, 1, 1)
    kid1 = moodle.user_id("kid1")
    assert moodle.users("student2")[0]["lastname"] == "Renamed"
    assert moodle.enrolled(C1)["kid1"] == [5]
    assert moodle.completion(C1, kid1, 1) == 1 and moodle.grade(C1, kid1, 3)[0] == 87.5

    # The collection: a learner's completion on the box's Moodle is read with the box's sync account.
    # The learner works in the Moodle app: its token by login for the mobile service.
    app_token = requests.post(f"{boxsim.url}/login/token.php", timeout=10, data={
        "username": "student1", "password": acc.LEARNER_PASSWORD, "service": "moodle_mobile_app"}).json()["token"]
    learner = MoodleReader(boxsim.url, app_token)
    assert learner.call("core_completion_update_activity_completion_status_manually",
                        cmid=2 + OFFSET_CM, completed=1)["status"] is True
    code, run, err = run_json(box, "collect")
    assert code == 0 and run["status"] == "completed" and run["actions"]["completions"] == 1, (run, err)

    # Two ways: the box's completion goes up, the server's comes down into the box's Moodle.
    student1, student2 = moodle.user_id("student1"), moodle.user_id("student2")
    moodle.call("core_completion_override_activity_completion_status", userid=student2, cmid=1, newstate=1)
    code, run, err = run_json(box, "sync")
    assert code == 0 and run["status"] == "completed" and run["errors"] == [], (run, err)
    assert moodle.completion(C1, student1, 2) == 1
    assert box_moodle.completion(BOX_C1, box_moodle.user_id("student2"), 1 + OFFSET_CM) == 1


def test_a_sync_without_the_optional_right_does_the_rest_and_names_what_it_skipped(tmp_path):
    from moodle_simulator import start_simulator

    acc = sim_accounts()
    with start_simulator(token=ADMIN_TOKEN, sync_account=True, without_functions=NEVER_CALLED,
                         sync_without=["moodle/user:update"]) as sim:
        box = new_box(tmp_path, sim.url)
        result = connect(box, "server", sim.url, acc.SYNC_USERNAME, acc.SYNC_PASSWORD)
        assert result.returncode == 0 and "warning" not in result.stdout, result.stdout
        assert box.cli("courses", "add", "C1").returncode == 0
        assert box.enqueue([
            {"type": "user", "user": "student1", "firstname": "Renamed", "lastname": "One",
             "email": "student1@example.invalid"},
            {"type": "completion", "course_id": C1, "user": "student3", "cmid": 1, "completed": True},
        ]).returncode == 0
        code, run, err = run_json(box, "sync")
        assert code == 1 and run["status"] == "completed_with_errors", json.dumps(run, indent=1)
        assert run["actions"]["completions"] == 1 and run["actions"]["users_updated"] == 0
        off = ("off: updates of accounts that already exist on the server (names, e-mail addresses and passwords "
               "changed on the box): the account lacks moodle/user:update; it needs the optional right "
               "moodle/user:update (README: \"A stolen box\")")
        assert run["errors"] == [f"skipped: {off}"]
        [conflict] = json.loads(box.cli("conflicts", "--json").stdout)
        assert conflict["user"] == "student1" and conflict["reason"] == f"skipped: {off}"
        assert MoodleReader(sim.url, ADMIN_TOKEN).users("student1")[0]["firstname"] != "Renamed"
        # check says it in one line, and warns of nothing.
        text = box.cli("check").stdout
        assert [line for line in text.splitlines() if "off:" in line] == [f"server: {off}"]
        assert "warning" not in text


def test_the_readmes_capability_table_is_the_presets_table():
    """README.md carries packaging/moodle/README.md's table (checked against the presets by
    tests/test_role_presets.py) word for word."""
    root = Path(__file__).resolve().parents[1]

    def rows(path: Path) -> list[str]:
        lines = path.read_text().splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("| capability |"))
        end = next(i for i in range(start, len(lines) + 1) if i == len(lines) or not lines[i].startswith("|"))
        return lines[start:end]

    presets = rows(root / "packaging" / "moodle" / "README.md")
    assert len(presets) > 10 and rows(root / "README.md") == presets


def test_a_sync_whose_service_lacks_the_optional_function_names_what_it_skipped(tmp_path):
    from moodle_simulator import start_simulator

    acc = sim_accounts()
    with start_simulator(token=ADMIN_TOKEN, sync_account=True,
                         without_functions=NEVER_CALLED + ["core_user_update_users"]) as sim:
        box = new_box(tmp_path, sim.url)
        result = connect(box, "server", sim.url, acc.SYNC_USERNAME, acc.SYNC_PASSWORD)
        off = ("off: updates of accounts that already exist on the server (names, e-mail addresses and passwords "
               "changed on the box): the service lacks core_user_update_users; it needs the optional right "
               "moodle/user:update (README: \"A stolen box\")")
        assert result.returncode == 0 and f"server: {off}" in result.stdout and "warning" not in result.stdout
        assert box.cli("courses", "add", "C1").returncode == 0
        assert box.enqueue([
            {"type": "user", "user": f"student{i}", "firstname": "Renamed", "lastname": str(i),
             "email": f"student{i}@example.invalid"} for i in (1, 2)] + [
            {"type": "completion", "course_id": C1, "user": "student3", "cmid": 1, "completed": True},
        ]).returncode == 0
        code, run, err = run_json(box, "sync")
        assert run["actions"]["completions"] == 1 and run["conflicts"] == 2, json.dumps(run, indent=1)
        assert run["errors"] == [f"skipped: {off}"]


# -- the page's advanced settings ----------------------------------------------------------------

PAGE_PASSWORD = "correct horse battery"


class Page:
    """The page of a box, logged in as its admin (Flask's test client, the real database)."""

    def __init__(self, box: Box):
        from agent.auth import hash_password
        from agent.config import load_config
        from agent.store import settings
        from webui import create_app

        self.app = create_app(load_config(box.config))
        settings.put(password_hash=hash_password(PAGE_PASSWORD))
        self.client = self.app.test_client()
        self.csrf = self.token(self.client.get("/login").get_data(as_text=True))
        assert self.client.post("/login", data={"password": PAGE_PASSWORD, "csrf_token": self.csrf}).status_code == 303
        self.csrf = self.token(self.get())

    @staticmethod
    def token(html: str) -> str:
        return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)

    def get(self) -> str:
        return self.client.get("/").get_data(as_text=True)

    def connect(self, user: str, password: str, admin_password: str = PAGE_PASSWORD, side: str = "server",
                csrf: bool = True):
        data = {"side": side, "username": user, "moodle_password": password, "admin_password": admin_password}
        if csrf:
            data["csrf_token"] = self.csrf
        return self.client.post("/settings/connect", data=data, headers={"X-Requested-With": "fetch"})


@pytest.fixture
def page_box(tmp_path, server):
    box = Box(tmp_path, server.url, token=ADMIN_TOKEN)
    box.token_file = tmp_path / "token"
    page = Page(box)
    yield box, page
    from agent.store.schema import close_db
    close_db()


def test_the_page_connects_the_sync_account_and_shows_site_account_and_rights(page_box):
    acc = sim_accounts()
    box, page = page_box
    html = page.get()
    assert 'id="connect-user"' in html and 'name="admin_password"' in html
    answer = page.connect(acc.SYNC_USERNAME, acc.SYNC_PASSWORD)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.json["message"] == "Connected to Moodle Reference Server: account syncagent, not a site administrator."
    token = box.token_file.read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{32}", token) and token != ADMIN_TOKEN
    assert stat.S_IMODE(box.token_file.stat().st_mode) == 0o600
    html = page.get()
    assert re.search(r'id="server-account" data-site-admin="no">Moodle Reference Server:\s+account syncagent, '
                     r'not a site administrator', html)
    assert 'data-rights="server"' not in html
    everything = html + answer.get_data(as_text=True)
    assert acc.SYNC_PASSWORD not in everything and acc.SYNC_PASSWORD.encode() not in all_bytes(box.dir)


def test_the_page_warns_of_an_administrators_token_in_the_pages_language(page_box):
    acc = sim_accounts()
    box, page = page_box
    answer = page.connect("admin", acc.ADMIN_PASSWORD)
    assert "account admin, a site administrator" in answer.json["message"]
    assert "The token belongs to a site administrator" in answer.json["message"]
    html = page.client.get("/", headers={"Accept-Language": "fr"}).get_data(as_text=True)
    assert 'data-site-admin="yes"' in html
    [warning] = re.findall(r'data-rights="server">.*?<span>(.*?)</span>', html, re.S)
    assert warning.startswith("Le jeton appartient à un administrateur du site")


def test_the_page_refuses_without_the_admin_password_or_the_form_token_and_says_moodles_refusal(page_box):
    acc = sim_accounts()
    box, page = page_box
    answer = page.connect(acc.SYNC_USERNAME, acc.SYNC_PASSWORD, admin_password="wrong")
    assert answer.status_code == 401 and answer.json["field"] == "connect-admin-password"
    assert page.connect(acc.SYNC_USERNAME, acc.SYNC_PASSWORD, csrf=False).status_code == 403
    stranger = page.app.test_client()  # not logged in, with a form token of its own
    csrf = page.token(stranger.get("/login").get_data(as_text=True))
    answer = stranger.post("/settings/connect", headers={"X-Requested-With": "fetch"}, data={
        "side": "server", "username": "syncagent", "moodle_password": acc.SYNC_PASSWORD,
        "admin_password": PAGE_PASSWORD, "csrf_token": csrf})
    assert answer.status_code == 401
    answer = page.connect(acc.SYNC_USERNAME, "Not#The2Password")
    assert answer.status_code == 400
    assert answer.json["error"].startswith("Moodle refused the login of syncagent: wrong username or password")
    assert "Not#The2Password" not in answer.get_data(as_text=True)
    assert box.token_file.read_text().strip() == ADMIN_TOKEN  # nothing changed


def test_the_page_says_in_one_line_that_an_optional_feature_is_off(tmp_path):
    from moodle_simulator import start_simulator

    acc = sim_accounts()
    with start_simulator(token=ADMIN_TOKEN, sync_account=True,
                         without_functions=NEVER_CALLED + ["core_user_update_users"]) as sim:
        box = Box(tmp_path, sim.url, token=ADMIN_TOKEN)
        box.token_file = tmp_path / "token"
        page = Page(box)
        try:
            answer = page.connect(acc.SYNC_USERNAME, acc.SYNC_PASSWORD)
            assert answer.json["message"].endswith("They need the optional right moodle/user:update "
                                                   "(README: “A stolen box”).")
            lines = re.findall(r'data-rights="server">.*?<span>(.*?)</span>', page.get(), re.S)
            assert lines == ["Off: updates of accounts that already exist on the server (names, e-mail addresses, "
                             "passwords changed on the box). They need the optional right moodle/user:update "
                             "(README: “A stolen box”)."]
        finally:
            from agent.store.schema import close_db
            close_db()


# -- the token file ------------------------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changes owners: run as root")


@needs_root
def test_run_as_root_the_token_file_goes_to_the_agents_user(tmp_path, monkeypatch):
    import pwd

    from agent import connect as connect_module

    monkeypatch.setattr(connect_module, "AGENT_USER", "nobody")  # the package's user is not on this machine
    path = tmp_path / "token"
    connect_module.write_token(path, "a" * 32)
    st = path.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (pwd.getpwnam("nobody").pw_uid, 0o600)
    assert path.read_text() == "a" * 32 + "\n"
    assert [p.name for p in tmp_path.iterdir()] == ["token"]


@needs_root
def test_the_agents_user_rewrites_its_token_file_in_a_directory_it_cannot_write():
    """The package's layout: /etc/moodle-sync-agent is root's, the token file the service user's
    (the command line run by root drops to that user; the page runs as it)."""
    import pwd
    import shutil
    import tempfile

    from agent.connect import write_token

    nobody = pwd.getpwnam("nobody")
    directory = Path(tempfile.mkdtemp())  # root's, 0755 (not under pytest's 0700 directory)
    try:
        directory.chmod(0o755)
        path = directory / "token"
        path.write_text("0" * 32 + "\n")
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
        path.chmod(0o640)
        os.setegid(nobody.pw_gid)
        os.seteuid(nobody.pw_uid)
        try:
            with pytest.raises(PermissionError):
                (directory / "probe").write_text("")  # really not writable for this user
            write_token(path, "b" * 32)
        finally:
            os.seteuid(0)
            os.setegid(0)
        assert path.read_text() == "b" * 32 + "\n"
        assert (path.stat().st_uid, stat.S_IMODE(path.stat().st_mode)) == (nobody.pw_uid, 0o600)
        assert [p.name for p in directory.iterdir()] == ["token"]
    finally:
        shutil.rmtree(directory)
