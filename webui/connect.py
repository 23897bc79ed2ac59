"""The advanced settings' "Connect to Moodle": the token of the agent's Moodle account by login.

What ``moodle-sync-agent connect`` does, as a form: the page's admin
password again (counted by the login's throttle), the Moodle account and its
password. The page runs that very command (agent/connect.py) in a process of
its own, the password on its standard input, never in its arguments: the
page itself never loads the wire or the sync engine (tests/test_imports.py).
The Moodle password goes nowhere else: not into the session, a flash
message, a log line or the database. What the page shows afterwards is what
``check`` judged of the new token (agent/rights.py, kept in the settings
server_rights / box_rights): the site's name, the account, whether it is a
site administrator, and which optional feature is off.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, request
from werkzeug.wrappers import Response

from agent import rights
from agent.config import Config
from agent.store import settings

from .auth import check_admin_password, login_required
from .i18n import text
from .views import done, refuse

bp = Blueprint("connect", __name__)

# The page's texts for Moodle's refusals of login/token.php (agent/moodle/login.py says them in English).
REFUSALS = {"invalidlogin": "connect_invalidlogin", "servicenotavailable": "connect_servicenotavailable",
            "cannotcreatetoken": "connect_cannotcreatetoken"}
# Where agent/ and webui/ are (the package's private directory): the command's modules.
SOURCES = str(Path(__file__).resolve().parents[1])


def rights_lines(judged: dict[str, Any] | None, refused: list[str]) -> list[str]:
    """The page's lines for a judgement: the warnings, then one line per optional feature off."""
    if not judged:
        return [text("rights_off_" + f) for f in refused if f in rights.OPTIONAL_RIGHTS]
    lines = []
    if judged.get("site_admin"):
        lines.append(text("rights_site_admin"))
    if judged.get("missing_functions"):
        lines.append(text("rights_missing", functions=", ".join(judged["missing_functions"])))
    if judged.get("unused_functions"):
        lines.append(text("rights_unused", functions=", ".join(judged["unused_functions"])))
    off = list(dict.fromkeys(list(judged.get("off_functions") or []) + list(refused)))
    lines += [text("rights_off_" + f) for f in off if f in rights.OPTIONAL_RIGHTS]
    return lines


def run_connect(config: Config, side: str, url: str, username: str, password: str) -> tuple[int, dict, str]:
    """``moodle-sync-agent connect SIDE URL --user NAME --json``, the password on its standard input."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SOURCES, env.get("PYTHONPATH")) if p)
    site = config.moodle if side == "server" else config.box
    timeout = 2 * (site.timeout if site is not None else 30) + 30
    result = subprocess.run(
        [sys.executable, "-P", "-m", "agent", "--config", str(config.path), "connect", side, url,
         "--user", username, "--json"],
        input=password + "\n", capture_output=True, text=True, env=env, cwd="/", timeout=timeout)
    lines = result.stdout.strip().splitlines()
    try:
        outcome = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        outcome = {}
    problem = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    return result.returncode, outcome if isinstance(outcome, dict) else {}, problem.removeprefix("moodle-sync-agent: ")


@bp.route("/settings/connect", methods=["POST"])
@login_required
def connect() -> Response:
    config: Config = current_app.config["AGENT"]
    side = request.form.get("side", "server")
    username = request.form.get("username", "").strip()
    if side not in rights.RIGHTS_KEY or (side == "box" and config.box is None):
        return refuse(400, "connect_bad_side", field="connect-side")
    if not username:
        return refuse(400, "connect_user_required", field="connect-user")
    if not request.form.get("moodle_password"):
        return refuse(400, "connect_password_required", field="connect-password")
    # The page's password again: whoever found the page open may not swap the box's token.
    right, wait = check_admin_password(settings.get(config, "password_hash"), request.form.get("admin_password", ""))
    if wait:
        return refuse(429, "too_many", field="connect-admin-password", minutes=(wait + 59) // 60)
    if not right:
        return refuse(401, "bad_password", field="connect-admin-password")
    site = config.moodle if side == "server" else config.box
    assert site is not None  # refused above
    service = site.service
    try:
        code, outcome, problem = run_connect(config, side, site.url, username, request.form["moodle_password"])
    except subprocess.TimeoutExpired:
        return refuse(504, "connect_unreachable", field="connect-side", reason=text("connect_timeout"))
    if not outcome.get("ok"):
        errorcode = str(outcome.get("errorcode") or "")
        if errorcode in REFUSALS:
            return refuse(400, REFUSALS[errorcode], field="connect-user", user=username, service=service)
        if errorcode == "unreachable":
            return refuse(502, "connect_unreachable", field="connect-side", reason=outcome.get("error", ""))
        if errorcode:
            return refuse(400, "connect_refused", field="connect-user", message=outcome.get("message", ""),
                          code=errorcode)
        return refuse(400 if code == 2 else 500, "connect_config", field="connect-side", problem=problem)
    judged = settings.get(config, rights.RIGHTS_KEY[side])
    if not judged:
        return done(text("connected_unchecked", file=outcome.get("token_file", ""), user=username))
    account = text("account_admin" if judged.get("site_admin") else "account_not_admin", user=judged.get("username"))
    lines = [text("connected", site=judged.get("site_name", ""), account=account)] + rights_lines(judged, [])
    return done(" ".join(lines))
