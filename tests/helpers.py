"""Test helpers: a box (config + database on disk, driven through the real
CLI in a subprocess) and a reader that checks the server's state the way one
would check a real Moodle: through its web service read functions."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from agent.store.db import Course, iso, utcnow
from agent.roles import ROLES
from agent.service.schedule import Clock

ROOT = Path(__file__).resolve().parents[1]
# A Moodle token as Moodle makes them (32 hexadecimal characters): token files
# hold nothing else. The simulators the tests start take it (conftest.simulator).
TOKEN = "70c3e5a1b2d94f6e8a7c0b1d2e3f4a5b"


class Box:
    def __init__(self, tmp_path: Path, url: str, token: str = TOKEN, batch_size: int = 50,
                 timeout: float = 5, extra: str = ""):
        self.dir = tmp_path
        self.token = token
        (tmp_path / "token").write_text(token + "\n")
        (tmp_path / "token").chmod(0o600)  # as a box keeps it: `check` warns about one others can read
        self.database = tmp_path / "data" / "agent.db"
        self.config = tmp_path / "agent.ini"
        self.write_config(url, batch_size=batch_size, timeout=timeout, extra=extra)

    def write_config(self, url: str, batch_size: int = 50, timeout: float = 5, extra: str = "") -> None:
        self.config.write_text(
            f"[moodle]\nurl = {url}\ntoken_file = {self.dir / 'token'}\ntimeout = {timeout}\n\n"
            f"[agent]\ndatabase = {self.database}\nbatch_size = {batch_size}\nbox_name = test-box\n\n"
            f"{extra}\n")

    def keep_courses(self, *ids: int) -> None:
        """Courses kept on this box without asking a server (see keep_courses)."""
        from agent.store.db import database
        from agent.store.schema import open_db

        previous = database.obj
        db = open_db(self.database)
        try:
            keep_courses(*ids)
        finally:
            db.close()
            database.initialize(previous)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env["MOODLE_SYNC_AGENT_CONFIG"] = str(self.config)
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "agent", *args]

    def cli(self, *args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), input=input, capture_output=True, text=True,
                              env=self.env(), timeout=timeout, cwd=self.dir)

    def popen(self, *args: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), env=self.env(), cwd=self.dir, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)

    def json(self, *args: str) -> Any:
        result = self.cli(*args, "--json") if args[0] != "conflicts" else self.cli("conflicts", "--json", *args[1:])
        assert result.returncode in (0, 1, 3), result.stderr
        return json.loads(result.stdout)

    def enqueue(self, events: list[dict] | str) -> subprocess.CompletedProcess:
        text = events if isinstance(events, str) else json.dumps(events)
        return self.cli("enqueue", "-", input=text)

    def status(self) -> dict:
        return self.json("status")

    def history(self, limit: int = 5) -> list[dict]:
        return self.json("history", "--limit", str(limit))


def keep_courses(*ids: int) -> None:
    """Courses the box keeps, written straight into the open database: events
    for them can be queued without a server (the simulator's C1..C3 are ids 2..4)."""
    for cid in ids:
        Course.insert(id=cid, shortname=f"C{cid - 1}", fullname=f"Course {cid - 1}", timemodified=0, cacherev=0,
                      fetched_at=iso(utcnow()), contents=[]).on_conflict_ignore().execute()


class MoodleReader:
    """Reads the server's state through Moodle's own read functions."""

    def __init__(self, url: str, token: str = TOKEN):
        self.url = url.rstrip("/") + "/webservice/rest/server.php"
        self.token = token

    def call(self, function: str, **fields: Any) -> Any:
        data = {"wstoken": self.token, "wsfunction": function, "moodlewsrestformat": "json"}
        for key, value in fields.items():
            if isinstance(value, list):
                for i, v in enumerate(value):
                    data[f"{key}[{i}]"] = v
            else:
                data[key] = value
        answer = requests.post(self.url, data=data, timeout=10).json()
        assert not (isinstance(answer, dict) and "exception" in answer), answer
        return answer

    def users(self, *usernames: str) -> list[dict]:
        return self.call("core_user_get_users_by_field", field="username", values=list(usernames))

    def user_id(self, username: str) -> int:
        found = self.users(username)
        assert len(found) == 1, f"{username}: {found}"
        return found[0]["id"]

    def enrolled(self, course_id: int) -> dict[str, list[int]]:
        return {u["username"]: [r["roleid"] for r in u.get("roles", [])]
                for u in self.call("core_enrol_get_enrolled_users", courseid=course_id)}

    def completion(self, course_id: int, user_id: int, cmid: int) -> int:
        statuses = self.call("core_completion_get_activities_completion_status",
                             courseid=course_id, userid=user_id)["statuses"]
        return {s["cmid"]: s["state"] for s in statuses}[cmid]

    def grade(self, course_id: int, user_id: int, cmid: int) -> tuple[float | None, str]:
        report = self.call("gradereport_user_get_grade_items", courseid=course_id, userid=user_id)
        for item in report["usergrades"][0]["gradeitems"]:
            if item.get("cmid") == cmid:
                return item["graderaw"], item.get("feedback") or ""
        raise AssertionError(f"no grade item for cmid {cmid}")


class FakeClock:
    """Injected time for the daemon: ``advance`` moves the wall and the
    monotonic clock together, ``jump`` steps only the wall clock (a time
    server correcting it)."""

    def __init__(self, start: datetime):
        self.now, self.mono = start, 1000.0
        self.clock = Clock(wall=lambda: self.now, mono=lambda: self.mono)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds

    def jump(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def drive(daemon, fake: FakeClock, until: datetime, step_s: float = 60) -> None:
    """Run the daemon's step at ``step_s`` intervals of fake time up to ``until``,
    letting each sync it starts finish."""
    while fake.now < until:
        daemon.step()
        daemon.wait_idle()
        fake.advance(step_s)


def server_view(sim) -> dict:
    """The simulator's users, enrolments, completions and grades, keyed by
    username, to compare with :func:`expected_view`."""
    state = sim.state.dump()
    name = {u["id"]: u["username"] for u in state["users"]}
    return {
        "usernames": sorted(name.values()),
        "users": {u["username"]: (u["firstname"], u["lastname"], u["email"]) for u in state["users"]},
        "enrolled": {(e["courseid"], name[e["userid"]]): e["roleids"] for e in state["enrolments"]},
        "completions": {(name[c["userid"]], c["cmid"]): c["state"] for c in state["completions"]},
        "grades": {(name[g["userid"]], g["cmid"]): g["rawgrade"] for g in state["grades"]},
    }


def expected_view(seed: dict, events: list[dict]) -> dict:
    """The server view ``seed`` after every event applied exactly once, in
    queue order (the last completion or grade of an activity is its state)."""
    want = {key: dict(value) if isinstance(value, dict) else list(value) for key, value in seed.items()}
    for e in events:
        if e["type"] == "user":
            want["users"][e["user"]] = (e["firstname"], e["lastname"], e["email"])
            want["usernames"] = sorted(set(want["usernames"]) | {e["user"]})
        elif e["type"] == "enrolment":
            want["enrolled"].setdefault((e["course_id"], e["user"]), [ROLES[e.get("role", "student")]])
        elif e["type"] == "completion":
            want["completions"][(e["user"], e["cmid"])] = 1 if e["completed"] else 0
        else:
            want["grades"][(e["user"], e["cmid"])] = float(e["grade"])
            # The simulator's assignments complete on a grade (as C1/C2's do on the recorded site).
            want["completions"][(e["user"], e["cmid"])] = 1
    return want


# -- the simulators' control side and the CLI's JSON -----------------------------

def control(sim, name, payload=None):
    """A simulator's test-only control endpoint (/__sim/...)."""
    answer = requests.post(f"{sim.url}/__sim/{name}", json=payload or {}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json() if answer.content else None


def stats(sim):
    return requests.get(f"{sim.url}/__sim/stats", timeout=10).json()


def calls(sim) -> dict[str, int]:
    return dict(sim.stats.snapshot()["calls"])


def run_json(box, *args):
    """A CLI command with --json: its exit code, its answer, its stderr."""
    result = box.cli(*args, "--json")
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else None, result.stderr


def sync(box, *args):
    result = box.cli("sync", "--json", *args)
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else None, result.stderr


# -- the box's own Moodle (the ``boxsim`` fixture) ------------------------------------

BOX_TOKEN = "b0a0d4e1c2f3a4b5c6d7e8f9a0b1c2d3"  # the box's Moodle's admin token
C1, C2 = 2, 3  # the server's course ids
BOX_C1, BOX_C2 = 12, 13  # the same courses on the box's Moodle
OFFSET_CM = 100  # box cmid = server cmid + 100


def box_section(tmp_path, boxsim, **keys) -> str:
    """The [box] section of a config that collects from ``boxsim``."""
    (tmp_path / "box-token").write_text(BOX_TOKEN + "\n")
    lines = [f"url = {boxsim.url}", f"token_file = {tmp_path / 'box-token'}", "timeout = 5",
             *(f"{k} = {v}" for k, v in keys.items())]
    return "[box]\n" + "\n".join(lines) + "\n"


def learner(boxsim, username: str) -> MoodleReader:
    """The learner themself on the box's Moodle, with their own token."""
    return MoodleReader(boxsim.url, control(boxsim, "tokens", {"username": username})["token"])


def mark(boxsim, username: str, box_cmid: int, done: bool = True) -> None:
    """The learner ticks (or unticks) an activity on the box's Moodle."""
    answer = learner(boxsim, username).call("core_completion_update_activity_completion_status_manually",
                                            cmid=box_cmid, completed=int(done))
    assert answer["status"] is True


# -- the page and the events API (the ``config``, ``app``, ``client``, ``admin`` fixtures) --

# Recognisable, so a leak anywhere is found by a plain substring search.
MOODLE_TOKEN = "1eac4c4ec0d1e2a3d4b5e6e7f8a9b0c1"
API_KEY = "apikey-4f1c2b7e9a0d3c5e"
PASSWORD = "correct horse battery"

COMPLETION = {"type": "completion", "course_id": 2, "user": "student1", "cmid": 1, "completed": True}


def write_config(tmp_path, url="http://127.0.0.1:9", web="", agent="") -> Any:
    from agent.config import load_config

    (tmp_path / "token").write_text(MOODLE_TOKEN + "\n")
    path = tmp_path / "agent.ini"
    path.write_text(
        f"[moodle]\nurl = {url}\ntoken_file = {tmp_path / 'token'}\ntimeout = 5\n\n"
        f"[agent]\ndatabase = {tmp_path / 'data' / 'agent.db'}\nbox_name = test-box\n{agent}\n\n"
        f"[web]\napi_key = {API_KEY}\n{web}\n")
    return load_config(path)


def csrf_of(client) -> str:
    page = client.get("/login").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def login(client, password=PASSWORD, **kw):
    return client.post("/login", data={"password": password, "csrf_token": csrf_of(client)}, **kw)


def page_csrf(client) -> str:
    page = client.get("/").get_data(as_text=True)
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)


def post(client, url, data=None, token=None, json_answer=True):
    headers = {"X-Requested-With": "fetch"} if json_answer else {}
    data = dict(data or {})
    data["csrf_token"] = page_csrf(client) if token is None else token
    return client.post(url, data=data, headers=headers)


def api(client, events, key=API_KEY, **kw):
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    body = events if isinstance(events, (bytes, str)) else json.dumps(events)
    return client.post("/api/v1/events", data=body, headers=headers, content_type="application/json", **kw)


def queued() -> int:
    from agent.store.db import Event

    return Event.select().where(Event.status == Event.QUEUED).count()


# -- the least-rights accounts (tests/test_connect.py, tests/test_connect_browser.py) --

ADMIN_TOKEN = "0123456789abcdef0123456789abcdef"  # made by hand in Manage tokens: login/token.php hands it out
BOX_ADMIN_TOKEN = "fedcba9876543210fedcba9876543210"
# The simulator's default service holds these besides what the agent calls (the recorded edge_sync's):
# the service packaging/moodle/README.md sets up does not.
NEVER_CALLED = ["core_completion_update_activity_completion_status_manually", "core_grades_get_gradeitems",
                "core_enrol_get_users_courses", "mod_assign_get_grades", "mod_assign_save_grade"]


def sim_accounts():
    from moodle_simulator import accounts

    return accounts


# -- two-way syncs (tests/test_down.py, tests/test_assign.py) --

WRITES = ("core_completion_override_activity_completion_status", "core_grades_update_grades",
          "mod_assign_save_grades")


def make_box(tmp_path, simulator, boxsim, direction: str, sync_keys: str = "") -> Box:
    box = Box(tmp_path, simulator.url,
              extra=box_section(tmp_path, boxsim) + f"\n[sync]\ndirection = {direction}\n{sync_keys}")
    assert box.cli("courses", "add", "C1", "C2").returncode == 0
    return box


def writes(sim) -> int:
    return sum(calls(sim).get(fn, 0) for fn in WRITES)


def synced(box, status: str = "completed") -> dict:
    """A sync that must end with this status (exit 0): its run."""
    code, run, err = run_json(box, "sync")
    assert code == 0 and run["status"] == status, (run, err)
    return run


def page_of(box) -> str:
    """The page as the logged-in admin sees it."""
    import re

    from agent.store import settings
    from agent.auth import hash_password
    from agent.config import load_config
    from agent.store.schema import close_db
    from webui import create_app

    app = create_app(load_config(box.config))
    try:
        settings.put(password_hash=hash_password("correct horse battery"))
        client = app.test_client()
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
        assert client.post("/login", data={"password": "correct horse battery", "csrf_token": csrf}).status_code == 303
        return client.get("/").get_data(as_text=True)
    finally:
        close_db()


def conflicts_log(box) -> list[dict]:
    import sqlite3

    with sqlite3.connect(box.database) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM twowayconflict ORDER BY id")]


# -- collections and two-way syncs (tests/test_collect*.py, tests/test_down.py, tests/test_two_way_ends.py) --

class HeldOpen:
    """An sqlite3 connection kept open on a box's database by another process,
    as the daemon and the page keep theirs. A CLI that exits is then not the
    last connection: SQLite neither checkpoints nor deletes the WAL on its way
    out, so what the files hold afterwards is what the agent itself left (its
    own wal_checkpoint(TRUNCATE)), not what SQLite's closing tidied up. In a
    process of its own because a test reading the file's bytes would, in its
    own process, drop that process's POSIX locks (closing any descriptor of a
    file does) and with them the connection's hold."""

    HOLD = ("import sqlite3, sys\n"
            "conn = sqlite3.connect(sys.argv[1])\n"
            # A read maps the WAL index: only then does SQLite count this connection as one that
            # keeps the WAL (fetched to the end: no read transaction left open).
            "conn.execute('SELECT COUNT(*) FROM sqlite_master').fetchall()\n"
            "print('held', flush=True)\n"
            "sys.stdin.read()\n"
            "conn.close()\n")

    def __init__(self, database: Path):
        self.database = database
        self.wal = database.with_name(database.name + "-wal")
        self.proc = subprocess.Popen([sys.executable, "-c", self.HOLD, str(database)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "held\n"

    def holds(self, secret: str) -> bool:
        """Is the secret, as bytes, in the database file or its WAL?"""
        return any(p.exists() and secret.encode() in p.read_bytes() for p in (self.database, self.wal))

    def assert_erased(self, secret: str) -> None:
        """The WAL survived the CLI (this connection), and neither file holds the secret."""
        assert self.proc.poll() is None and self.wal.exists(), \
            "the WAL was deleted: SQLite's closing tidied up, the agent's erasure is untested"
        for path in (self.database, self.wal):
            assert secret.encode() not in path.read_bytes(), path

    def close(self) -> None:
        self.proc.communicate("", timeout=30)


def queued_rows(box, where="status = 'queued'"):
    import sqlite3

    with sqlite3.connect(box.database) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"SELECT * FROM event WHERE {where} ORDER BY id")]


def baseline(box):
    """The first collection and sync: the seeded learners exist on both sides."""
    code, first, err = run_json(box, "sync")
    assert code == 0, err
    return first


def server_override(simulator, userid: int, cmid: int, state: int) -> None:
    MoodleReader(simulator.url, TOKEN).call("core_completion_override_activity_completion_status",
                                            userid=userid, cmid=cmid, newstate=state)


def grade(sim, token: str, courseid: int, cmid: int, studentid: int, value: float) -> None:
    MoodleReader(sim.url, token).call(
        "core_grades_update_grades", source="teacher", courseid=courseid, component="mod_assign",
        activityid=cmid, itemnumber=0, **{"grades[0][studentid]": studentid, "grades[0][grade]": value})
