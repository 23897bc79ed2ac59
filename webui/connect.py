"""The advanced settings' "Connect to Moodle": the token of the agent's Moodle account by login.

What ``moodle-sync-agent connect`` does (agent/connect.py), as a form: the
page's admin password again (counted by the login's throttle), the Moodle
account and its password. The Moodle password goes to login/token.php and
nowhere else: not into the session, a flash message, a log line or the
database. What the page keeps is what ``check`` judged of the new token
(agent/rights.py): the site's name, the account, whether it is a site
administrator, and which optional feature is off.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from flask import Blueprint, current_app, request
from werkzeug.wrappers import Response

from agent import rights
from agent.config import Config
from agent.store import settings

from .auth import LOGINS, check_password, client_address, login_required, now
from .i18n import text
from .views import done, refuse

bp = Blueprint("connect", __name__)

# The page's texts for Moodle's refusals of login/token.php (agent/login.py says them in English).
REFUSALS = {"invalidlogin": "connect_invalidlogin", "servicenotavailable": "connect_servicenotavailable",
            "cannotcreatetoken": "connect_cannotcreatetoken"}
RIGHTS_KEY = {"server": "server_rights", "box": "box_rights"}


def judge_site(config: Config, side: str, info: dict) -> dict[str, Any]:
    """check's judgement of one side's token (cli.cmd_check's lists), kept for the page."""
    from agent.box.collect import BOX_FUNCTIONS
    from agent.down.pull import BOX_WRITES, SERVER_READS
    from agent.push.session import ENROLLED
    from agent.sync import OPTIONAL_FUNCTIONS, REQUIRED_FUNCTIONS

    down = settings.get(config, "sync_direction") != "up"
    if side == "server":
        needed = REQUIRED_FUNCTIONS + [f for f in SERVER_READS if down and f not in REQUIRED_FUNCTIONS]
        used = REQUIRED_FUNCTIONS + SERVER_READS + [ENROLLED] + OPTIONAL_FUNCTIONS
        refused = settings.get(config, "rights_refused") or []
    else:
        needed = BOX_FUNCTIONS + [f for f in BOX_WRITES if down and f not in BOX_FUNCTIONS]
        used, refused = BOX_FUNCTIONS + BOX_WRITES + OPTIONAL_FUNCTIONS, []
    judged = rights.judge(info, needed, used, side=side, refused=refused).as_dict()
    return {"site_name": str(info.get("sitename") or ""), **judged}


def remember(side: str, judged: dict[str, Any]) -> None:
    settings.put(**{RIGHTS_KEY[side]: judged})


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


@bp.route("/settings/connect", methods=["POST"])
@login_required
def connect() -> Response:
    from agent.connect import ConnectError, fetch_token, target, write_token
    from agent.login import LoginRefused
    from agent.moodle import MoodleClient, MoodleError, Unreachable

    config: Config = current_app.config["AGENT"]
    side = request.form.get("side", "server")
    username = request.form.get("username", "").strip()
    if side not in RIGHTS_KEY or (side == "box" and config.box is None):
        return refuse(400, "connect_bad_side", field="connect-side")
    if not username:
        return refuse(400, "connect_user_required", field="connect-user")
    if not request.form.get("moodle_password"):
        return refuse(400, "connect_password_required", field="connect-password")
    # The page's password again: whoever found the page open may not swap the box's token.
    address = client_address()
    wait = LOGINS.fail(address, now())
    if wait:
        return refuse(429, "too_many", field="connect-admin-password", minutes=(wait + 59) // 60)
    if not check_password(settings.get(config, "password_hash"), request.form.get("admin_password", "")):
        return refuse(401, "bad_password", field="connect-admin-password")
    LOGINS.forget(address)
    try:
        where = target(config, side)
        token = fetch_token(where, username, request.form["moodle_password"])
    except ConnectError as exc:
        return refuse(400, "connect_config", field="connect-side", problem=str(exc))
    except LoginRefused as exc:
        key = REFUSALS.get(exc.errorcode)
        if key:
            return refuse(400, key, field="connect-user", user=username, service=where.service)
        return refuse(400, "connect_refused", field="connect-user", message=exc.message, code=exc.errorcode)
    except Unreachable as exc:
        return refuse(502, "connect_unreachable", field="connect-side", reason=exc.reason)
    try:
        write_token(where.token_file, token)
    except OSError as exc:
        return refuse(500, "connect_cannot_write", field="connect-side", file=str(where.token_file),
                      problem=exc.strerror or type(exc).__name__, side=side, url=where.url, user=username)
    site: Any = replace(config.moodle, token=token)
    if side == "box":
        assert config.box is not None  # refused above
        site = replace(config.box, token=token)
    try:
        info = MoodleClient(site).site_info()
    except (MoodleError, Unreachable):
        return done(text("connected_unchecked", file=str(where.token_file), user=username))
    judged = judge_site(config, side, info)
    remember(side, judged)
    account = text("account_admin" if judged["site_admin"] else "account_not_admin", user=judged["username"])
    lines = [text("connected", site=judged["site_name"], account=account)] + rights_lines(judged, [])
    return done(" ".join(lines))
