"""The page's admin login, CSRF tokens, the login rate limit and the secret key.

Sessions are Flask's signed cookies; the key that signs them is generated on
first start and kept in the data directory, so every gunicorn worker (and a
restarted one) accepts the same sessions. Failed logins are counted in the
database, so the limit holds across workers too.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, session, url_for

from agent import settings
from agent.auth import check_password
from agent.db import LoginAttempt, database

from .i18n import text

bp = Blueprint("auth", __name__)

MAX_FAILURES = 5
WINDOW_S = 15 * 60
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


# -- secret key ----------------------------------------------------------------

def load_secret_key(data_dir: Path) -> bytes:
    """Read the key, or create it atomically: two workers starting at once
    both end up with the one key that won the race."""
    path = data_dir / "secret_key"
    data_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(50):
        try:
            key = path.read_bytes()
        except FileNotFoundError:
            key = b""
        if len(key) >= 32:
            return key
        tmp = data_dir / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(64))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another worker linked its key first
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    raise RuntimeError(f"{path}: cannot create the secret key")


# -- session and CSRF ------------------------------------------------------------

def _password_tag(password_hash: str | None) -> str:
    """Ties a session to the password it was opened with: setting a new
    password logs every session out."""
    return hashlib.sha256((password_hash or "").encode()).hexdigest()[:16]


def is_admin() -> bool:
    if "admin" not in g:
        tag = session.get("admin")
        g.admin = bool(tag) and hmac.compare_digest(
            tag, _password_tag(settings.get(current_app.config["AGENT"], "password_hash")))
    return g.admin


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def wants_json() -> bool:
    return request.headers.get("X-Requested-With") == "fetch" or request.accept_mimetypes.best == "application/json"


def check_csrf() -> None:
    """Before every request: a state-changing one must carry the session's token."""
    if request.method in SAFE_METHODS or request.endpoint in current_app.config["CSRF_EXEMPT"]:
        return
    if request.routing_exception is not None:
        return  # no such route or method: that answer (404/405) comes next
    sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD) or ""
    expected = session.get("csrf") or ""
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        abort(403, description="form_expired")


def login_required(view: Callable) -> Callable:
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if not is_admin():
            if wants_json() or request.method not in SAFE_METHODS:
                abort(401, description="login_needed")
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)
    return wrapper


def safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect."""
    if not target:
        return url_for("views.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("views.index")
    return target


# -- rate limit ------------------------------------------------------------------

def _client() -> str:
    return (request.remote_addr or "unknown")[:64]


def retry_after_s(address: str, now: float | None = None) -> int:
    """Seconds until this address may try again; 0 if it may now. Only
    failures within one window of now, either side, count: a box without RTC
    whose clock jumps must neither unlock the limit nor lock it for good."""
    now = time.time() if now is None else now
    recent = sorted(a.at for a in LoginAttempt.select(LoginAttempt.at).where(
        LoginAttempt.address == address, LoginAttempt.at > now - WINDOW_S, LoginAttempt.at < now + WINDOW_S))
    if len(recent) < MAX_FAILURES:
        return 0
    return max(1, int(min(recent[-MAX_FAILURES], now) + WINDOW_S - now))


def record_failure(address: str, now: float | None = None) -> None:
    now = time.time() if now is None else now
    with database.obj.atomic():
        LoginAttempt.create(address=address, at=now)
        # Forget failures that no longer count, so the table stays small.
        LoginAttempt.delete().where((LoginAttempt.at < now - WINDOW_S) | (LoginAttempt.at > now + WINDOW_S)).execute()


def forget_failures(address: str) -> None:
    LoginAttempt.delete().where(LoginAttempt.address == address).execute()


# -- views -------------------------------------------------------------------------

@bp.route("/login", methods=["GET", "POST"])
def login():
    config = current_app.config["AGENT"]
    stored = settings.get(config, "password_hash")
    error, status = None, 200
    if request.method == "POST":
        address = _client()
        wait = retry_after_s(address)
        if wait:
            error, status = text("too_many", minutes=(wait + 59) // 60), 429
        elif not check_password(stored, request.form.get("password", "")):
            record_failure(address)
            error, status = text("bad_password"), 401
        else:
            forget_failures(address)
            session.clear()
            session.permanent = True
            session["admin"] = _password_tag(stored)
            csrf_token()  # a fresh token for the new session
            return redirect(safe_next(request.form.get("next")), code=303)
    body = render_template("login.html", error=error, no_password=not stored,
                           next=safe_next(request.values.get("next")))
    response = current_app.make_response((body, status))
    if status == 429:
        response.headers["Retry-After"] = str(wait)
    return response


@bp.route("/logout", methods=["POST"])
def logout():
    session.clear()
    flash(text("logged_out"), "info")
    return redirect(url_for("auth.login"), code=303)
