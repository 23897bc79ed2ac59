"""The Synchronization screen and the forms on it.

Every form works as a plain POST with a redirect; the page's script sends the
same forms with fetch and gets JSON back, so nothing reloads. A sync is never
run here: the page writes a request and the agent daemon runs it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response

from agent import health
from agent.reasons import COUNTED
from agent.store import history, run_details, settings
from agent.store.runkinds import PAGE, SYNC, VERIFY
from agent.store.status import status as box_status
from agent.config import DIRECTIONS, Config, parse_time_utc
from agent.store.db import Event, parse_iso, utcnow
from agent.store.handoff import next_request, request_sync
from agent.store.queue import EMAIL_RE, conflict_dicts, set_conflicts

from .auth import is_admin, login_required, safe_next, wants_json
from .formats import size
from .i18n import COOKIE, LANGUAGES, ngettext, text

bp = Blueprint("views", __name__)

CONFLICTS_SHOWN = 50


def _config() -> Config:
    return current_app.config["AGENT"]


def done(message: str) -> Response:
    if wants_json():
        return jsonify({"ok": True, "message": message})
    flash(message, "info")
    return redirect(url_for("views.index"), code=303)


def refuse(status: int, key: str, field: str | None = None, **values: Any) -> Response:
    message = text(key, **values)
    if wants_json():
        response = jsonify({"ok": False, "error": message, "field": field})
        response.status_code = status
        return response
    flash(message, "error")
    return redirect(url_for("views.index") + (f"#{field}" if field else ""), code=303)


def checked(name: str) -> bool:
    return request.form.get(name) in ("on", "1", "true", "yes")


def banners(config: Config, status: dict, now: datetime, box: dict) -> list[dict[str, str]]:
    """What needs a teacher now: each banner says what happened and what to do."""
    found = []
    disk = box["disk"]  # None when this board could not tell
    if disk and disk["full"]:
        found.append({"id": "storage", "text": text("banner_storage", free=size(disk["free_bytes"]),
                                                    min=size(disk["min_free_bytes"])),
                      "advice": text("advice_disk_full")})
    if status["server"]["token_rejected"]:
        found.append({"id": "token", "text": text("banner_token"), "advice": text("advice_token_rejected")})
    boxm = status.get("box_moodle")
    if boxm and boxm["reachable"] is False and boxm.get("down_since"):
        found.append({"id": "box-down", "text": text("banner_box_down", date=when(boxm["down_since"])),
                      "advice": text("advice_box_down")})
    last_ok = parse_iso(status["last_success_at"])
    limit = timedelta(days=config.web.stale_days)
    if last_ok is not None and now - last_ok > limit:
        days = (now - last_ok).days
        found.append({"id": "stale", "text": ngettext("banner_stale", days, days=days,
                                                      date=when(status["last_success_at"])),
                      "advice": text("advice_server_unreachable")})
    oldest = parse_iso(status["oldest_queued_at"])
    if last_ok is None and oldest is not None and now - oldest > limit:
        found.append({"id": "never", "text": text("banner_never", date=when(status["oldest_queued_at"])),
                      "advice": text("advice_server_unreachable")})
    return found


def reason_words(reason: dict[str, Any]) -> dict[str, str]:
    """A reason of agent/reasons.py in the page's language: what happened, what to do."""
    code = reason.get("code", "internal")
    values = {k: v for k, v in reason.items() if k != "code"}
    counted = COUNTED.get(code)
    if counted:
        count = int(values.pop(counted, 0) or 0)
        if counted != "n":  # {n} is the count's own placeholder
            values[counted] = count
        sentence = ngettext(f"reason_{code}", count, **values)
    else:
        sentence = text(f"reason_{code}", **values)
    return {"code": code, "sentence": sentence, "advice": text(f"advice_{code}")}


def run_views(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs of the history with what their Information dialogs name (read for all at once)."""
    moved, since = run_details.moved(runs), run_details.collections_since(runs)
    return [{**run, "why": [reason_words(r) for r in run.get("reasons") or []],
             "moved": moved[run["id"]], "since": since[run["id"]]} for run in runs]


def when(value: str | None) -> str:
    """An ISO time as the page shows it: UTC, like the schedule."""
    dt = parse_iso(value)
    if dt is None:
        return "—"
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.route("/")
def index():
    config = _config()
    admin = is_admin()
    if not admin and not config.web.public_status:
        return redirect(url_for("auth.login"))
    now = utcnow()
    values = settings.preferences(config) | settings.state(config)
    recent = history.recent(5)
    status = box_status(config, values, recent)
    box = health.gather(config, now)
    return render_template(
        "sync.html",
        admin=admin,
        status=status,
        values=values,
        runs=run_views(recent),
        server=run_details.server_state(bool(status["server"]["token_rejected"])),
        # Learners' names only for the admin, not on a public status page.
        conflicts=conflict_dicts(limit=CONFLICTS_SHOWN) if status["conflicts"] and admin else [],
        pending=next_request(),
        banners=banners(config, status, now, box),
        health=box,
        retention_days=config.agent.retention_days,
        now=now,
    )


# On/off settings with nothing else to check: setting key -> (text when on, text when off).
SWITCHES = {"sync_enabled": ("sync_turned_on", "sync_turned_off"), "force_next": ("force_on", "force_off")}


@bp.route("/settings/sync", methods=["POST"], defaults={"key": "sync_enabled"})
@bp.route("/settings/force", methods=["POST"], defaults={"key": "force_next"})
@login_required
def set_switch(key: str):
    enabled = checked("enabled")
    settings.put(**{key: enabled})
    return done(text(SWITCHES[key][0 if enabled else 1]))


# Start Sync Now, and Verify (a full re-check) under the advanced settings:
# both are runs the daemon does, asked for the same way.
STARTS = {SYNC: ("start", "requested"), VERIFY: ("verify", "verify_requested")}


@bp.route("/sync/start", methods=["POST"])
@login_required
def start_sync():
    return start_run(SYNC)


@bp.route("/verify/start", methods=["POST"])
@login_required
def start_verify():
    return start_run(VERIFY)


def start_run(kind: str) -> ResponseReturnValue:
    config = _config()
    field, message = STARTS[kind]
    if not settings.get(config, "sync_enabled"):
        return refuse(409, "refused_off", field=field)
    if history.is_running():
        return refuse(409, "refused_running", field=field)
    req = request_sync(kind=kind, trigger=PAGE)
    if wants_json():
        return jsonify({"ok": True, "message": text(message), "request_id": req.id}), 202
    flash(text(message), "info")
    return redirect(url_for("views.index"), code=303)


@bp.route("/settings/schedule", methods=["POST"])
@login_required
def set_schedule():
    enabled = checked("enabled")
    time_utc = request.form.get("time_utc", "").strip()
    try:
        parse_time_utc(time_utc)
    except ValueError as exc:
        return refuse(400, "bad_time", field="time_utc", problem=str(exc))
    settings.put(schedule_enabled=enabled, schedule_time_utc=time_utc)
    return done(text("schedule_saved", state=text("on" if enabled else "off").lower(), time=time_utc))


@bp.route("/settings/direction", methods=["POST"])
@login_required
def set_direction():
    direction = request.form.get("direction", "")
    if direction not in DIRECTIONS:
        return refuse(400, "bad_direction", field="direction", value=direction[:20])
    settings.put(sync_direction=direction)
    return done(text("direction_saved", direction=text(f"direction_{direction}")))


@bp.route("/settings/notifications", methods=["POST"])
@login_required
def set_notifications():
    enabled = checked("enabled")
    email = request.form.get("email", "").strip()
    if email and (len(email) > 254 or not EMAIL_RE.match(email)):
        return refuse(400, "bad_email", field="email", value=email[:80])
    if enabled and not email:
        return refuse(400, "email_required", field="email")
    settings.put(notify_enabled=enabled, notify_email=email or None)
    return done(text("notify_saved"))


@bp.route("/conflicts", methods=["POST"])
@login_required
def conflicts():
    action = request.form.get("action")
    if action not in ("retry", "discard"):
        abort(400)
    status = Event.QUEUED if action == "retry" else Event.DISCARDED
    if request.form.get("all"):
        ids = None
    else:
        try:
            ids = [int(i) for i in request.form.getlist("id")]
        except ValueError:
            abort(400)
    n = set_conflicts(ids, status)
    return done(ngettext("conflicts_retried" if action == "retry" else "conflicts_discarded", n))


@bp.route("/lang/<code>")
def set_language(code: str):
    """The language switch: a cookie, so it changes nothing on the box."""
    response = redirect(safe_next(request.args.get("next")), code=303)
    if code in LANGUAGES:
        response.set_cookie(COOKIE, code, max_age=365 * 24 * 3600, samesite="Lax", httponly=True)
    return response
