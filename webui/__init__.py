"""The teacher's page and the local events API: a Flask app factory.

``gunicorn 'webui:create_app()'`` reads the same INI file as the command line
($MOODLE_SYNC_AGENT_CONFIG, else the default path). Each gunicorn worker
builds its own app after the fork, so no SQLite connection is shared.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

from flask import Flask, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.middleware.proxy_fix import ProxyFix

from agent import __version__
from agent.config import Config, load_config
from agent.store.db import database
from agent.store.schema import open_db
from agent.store.queue import MAX_INPUT_BYTES
from agent.kinds import KINDS, PHASES, found_counters
from agent.store.runkinds import ACTION_KINDS, VERIFY_KINDS

from . import api, auth, connect, formats, learners, views
from .i18n import LANGUAGES, has_text, ngettext, pick_language, text

log = logging.getLogger(__name__)

# Texts the page's script needs (progress, messages); sent once with the page.
# The run's phases come from agent/kinds.py, where the runs name them.
SCRIPT_TEXTS = ["requested", "agent_silent", "not_started", "sync_finished", "sync_running", "start_sync",
                "n_of_total", "status_completed", "status_completed_with_errors", "status_completed_with_warnings",
                "status_failed", "status_skipped_offline", "status_interrupted", "status_running",
                "form_expired", "login_needed"] + [f"phase_{phase}" for phase in PHASES]

SECURITY_HEADERS = {
    # Everything comes from the box itself: no outside address, no inline script.
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


class ClientBehindProxy:
    """The client's address for the login and API-key throttles. On a box the
    page is served by nginx over a Unix socket, where gunicorn gives no
    REMOTE_ADDR: then, and only then, the address is nginx's X-Forwarded-For
    (nginx replaces whatever the client sent, and only the service user can
    reach the socket). Over TCP the peer's address stays, and a forged header
    is ignored."""

    def __init__(self, app: Any):
        self.app, self.behind_proxy = app, ProxyFix(app, x_for=1)

    def __call__(self, environ: dict, start_response: Any) -> Any:
        app = self.behind_proxy if not environ.get("REMOTE_ADDR") else self.app
        return app(environ, start_response)


def create_app(config: Config | None = None) -> Flask:
    config = config or load_config()
    app = Flask(__name__)
    db = open_db(config.agent.database)
    app.config.update(
        AGENT=config,
        SECRET_KEY=auth.load_secret_key(config.agent.data_dir),
        SESSION_COOKIE_NAME="msa_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=auth.IDLE_S),
        CLOCK=time.time,  # sessions and throttles; the tests set their own
        MAX_CONTENT_LENGTH=MAX_INPUT_BYTES + 1024,
        CSRF_EXEMPT={"api.post_events"},  # the events API authenticates with its key, not a cookie
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the API's field order (DefaultJSONProvider)
    app.wsgi_app = ClientBehindProxy(app.wsgi_app)  # type: ignore[method-assign]

    @app.before_request
    def bind_database():
        # Several apps in one process (the tests) each keep their own file.
        if database.obj is not db:
            database.initialize(db)
        db.connect(reuse_if_open=True)
        g.lang = pick_language(request)

    app.before_request(auth.check_csrf)

    @app.after_request
    def headers(response):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.path.startswith("/api/") or response.mimetype == "text/html":
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.context_processor
    def helpers():
        return {
            "_": text, "ngettext": ngettext, "lang": g.get("lang", "en"), "languages": LANGUAGES,
            "csrf_token": auth.csrf_token,
            "version": __version__, "box_name": config.agent.box_name, "action_kinds": ACTION_KINDS,
            "verify_kinds": VERIFY_KINDS,
            "script_texts": {k: text(k) for k in SCRIPT_TEXTS},
        }

    # Each kind's counters (agent/kinds.py): what a collection found, and a push's first
    # counter beside what came down of the same kind ("12 ↑ 3 ↓"). Fixed: set once, not per page.
    app.jinja_env.globals.update(found_kinds=found_counters(),
                                 down_of={k.pushed[0]: k.down_counter for k in KINDS.values()})
    app.jinja_env.filters["when"] = views.when
    app.jinja_env.filters["bytes"] = formats.size
    app.jinja_env.filters["duration"] = formats.duration
    app.jinja_env.filters["number"] = formats.number
    app.jinja_env.filters["signed"] = signed

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("error in %s %s", request.method, request.path)
        return error_response(500, InternalServerError.description)

    app.register_blueprint(auth.bp)
    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(connect.bp)
    app.jinja_env.globals["rights_lines"] = connect.rights_lines
    app.register_blueprint(learners.bp)
    return app


def error_response(code: int, description: str):
    api = request.path.startswith("/api/") or auth.wants_json()
    if code == 404 and not api:
        description = "not_found"
    message = text(description) if has_text(description) else description
    if api:
        response = jsonify({"error": message})
        response.status_code = code
        return response
    return render_template("error.html", code=code, message=message), code


def signed(value: float) -> str:
    """A whole number with its sign, rounded half away from zero, the same
    both ways; nothing rounds to "-0" or "+0": the clock is "0 s" off."""
    whole = int(Decimal(value).to_integral_value(rounding=ROUND_HALF_UP))
    return f"{whole:+d}" if whole else "0"
