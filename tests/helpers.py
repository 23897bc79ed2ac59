"""Test helpers: a box (config + database on disk, driven through the real
CLI in a subprocess) and a reader that checks the server's state the way one
would check a real Moodle: through its web service read functions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from agent.db import Course, iso, utcnow
from agent.roles import ROLES
from agent.schedule import Clock

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
        from agent.db import database, open_db

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
