"""The page's admin login and sessions, CSRF tokens, the throttles on wrong
passwords and API keys, and the secret key.

Sessions are Flask's signed cookies; the key that signs them is generated on
first start and kept in the data directory, so every gunicorn worker (and a
restarted one) accepts the same sessions. A cookie alone is not enough: it
must carry the tag of the current password and session generation (a
logout or a new password changes it), and it expires after IDLE_S without
a request and SESSION_MAX_S after the login, whatever is done with it.
Failed attempts are counted in the database, so the limits hold across
workers too.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, session, url_for

from agent.store import settings
from agent.auth import check_password, revoke_sessions, session_tag
from agent.store.db import LoginAttempt, database

from .i18n import text

bp = Blueprint("auth", __name__)

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

IDLE_S = 12 * 3600  # a teacher's day with pauses; the browser forgets the cookie then too
SESSION_MAX_S = 24 * 3600  # a copied cookie, kept alive by use, still ends a day after its login
# Workers share the box's clock, but a clock stepped back (no RTC) gives
# negative ages: a little is tolerated, more ends the session.
CLOCK_SLACK_S = 60
SESSION_KEYS = ("admin", "opened", "seen")

MAX_FAILURES = 5  # wrong passwords per address and window
MAX_KEY_FAILURES = 10  # wrong API keys per address and window: the box's apps retry
WINDOW_S = 15 * 60
# A wrong API key from the box itself costs this long instead of counting: see is_loopback.
LOOPBACK_KEY_DELAY_S = 1.0


def now() -> float:
    """The app's clock (Unix time): the tests set their own."""
    return current_app.config["CLOCK"]()


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

def _fresh(t: float, since: object, limit: int) -> bool:
    """Is since (a time the cookie holds) at most limit seconds before t?"""
    return isinstance(since, (int, float)) and -CLOCK_SLACK_S <= t - since <= limit


def is_admin() -> bool:
    """Does this request come with a live admin session? A live one is
    renewed (its idle time starts again); a dead one is dropped from the cookie."""
    if "admin" not in g:
        tag, opened, seen = (session.get(k) for k in SESSION_KEYS)
        t = now()
        g.admin = (isinstance(tag, str) and _fresh(t, seen, IDLE_S) and _fresh(t, opened, SESSION_MAX_S)
                   and hmac.compare_digest(tag, session_tag(current_app.config["AGENT"])))
        if g.admin:
            session["seen"] = t
        elif tag is not None:
            for key in SESSION_KEYS:
                session.pop(key, None)
    return bool(g.admin)


def open_session() -> None:
    session.clear()
    session.permanent = True
    t = now()
    session.update(admin=session_tag(current_app.config["AGENT"]), opened=t, seen=t)
    csrf_token()  # a fresh token for the new session


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


# -- throttles -------------------------------------------------------------------

def client_address() -> str:
    return (request.remote_addr or "unknown")[:50]


def is_loopback(address: str | None) -> bool:
    """Does the request come from the box itself (127.0.0.0/8, ::1)? Behind
    nginx this is the address nginx put in X-Forwarded-For (see
    webui.ClientBehindProxy). Every learning app of the box posts from there,
    so a lock-out would let any process of the box lock them all out for a
    window; a 128-bit key is never guessed, so a wrong one is only slowed
    down (LOOPBACK_KEY_DELAY_S), and the right one always works."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False  # no address (a bare Unix socket) is not the box: throttled
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def slow_down() -> None:
    """The delay for a wrong key from the box itself (the tests set their own SLEEP)."""
    current_app.config.get("SLEEP", time.sleep)(LOOPBACK_KEY_DELAY_S)


@dataclass(frozen=True)
class Throttle:
    """Failures per client address within a window, as rows in the
    database (LoginAttempt, the address prefixed with the scope). Only
    failures within one window of now, either side, count: a box without
    RTC whose clock jumps must neither unlock the limit nor lock it for good."""

    scope: str
    max_failures: int
    window_s: int = WINDOW_S

    def _bucket(self, address: str) -> str:
        return f"{self.scope} {address}"

    def _wait(self, bucket: str, t: float) -> int:
        recent = sorted(a.at for a in LoginAttempt.select(LoginAttempt.at).where(
            LoginAttempt.address == bucket, LoginAttempt.at > t - self.window_s, LoginAttempt.at < t + self.window_s))
        if len(recent) < self.max_failures:
            return 0
        return max(1, int(min(recent[-self.max_failures], t) + self.window_s - t))

    def blocked(self, address: str, t: float) -> int:
        """Seconds until this address may try again; 0 if it may now."""
        return self._wait(self._bucket(address), t)

    def fail(self, address: str, t: float) -> int:
        """Count one failure, unless the address is already blocked: then
        the seconds to wait, and nothing counted. Checking and counting are
        one IMMEDIATE transaction, so that parallel attempts, in any number
        of workers, cannot all slip in under the limit."""
        bucket = self._bucket(address)
        with database.obj.atomic("IMMEDIATE"):
            wait = self._wait(bucket, t)
            if not wait:
                LoginAttempt.create(address=bucket, at=t)
                # Forget failures that no longer count, so the table stays small.
                LoginAttempt.delete().where((LoginAttempt.at < t - self.window_s)
                                            | (LoginAttempt.at > t + self.window_s)).execute()
        return wait

    def forget(self, address: str) -> None:
        LoginAttempt.delete().where(LoginAttempt.address == self._bucket(address)).execute()


LOGINS = Throttle("login", MAX_FAILURES)
API_KEYS = Throttle("api-key", MAX_KEY_FAILURES)


def check_admin_password(stored: str | None, password: str) -> tuple[bool, int]:
    """The page's password, as the login and the token's connect check it: counted as
    a failure before the (slow) check, and taken back if it is right, so no more than
    MAX_FAILURES checks per window. (right, seconds to wait: blocked without a check)."""
    address = client_address()
    wait = LOGINS.fail(address, now())
    if wait:
        return False, wait
    if not check_password(stored, password):
        return False, 0
    LOGINS.forget(address)
    return True, 0


# -- views -------------------------------------------------------------------------

@bp.route("/login", methods=["GET", "POST"])
def login():
    config = current_app.config["AGENT"]
    stored = settings.get(config, "password_hash")
    error, status, wait = None, 200, 0
    if request.method == "POST":
        right, wait = check_admin_password(stored, request.form.get("password", ""))
        if wait:
            error, status = text("too_many", minutes=(wait + 59) // 60), 429
        elif not right:
            error, status = text("bad_password"), 401
        else:
            open_session()
            return redirect(safe_next(request.form.get("next")), code=303)
    body = render_template("login.html", error=error, no_password=not stored,
                           next=safe_next(request.values.get("next")))
    response = current_app.make_response((body, status))
    if wait:
        response.headers["Retry-After"] = str(wait)
    return response


@bp.route("/logout", methods=["POST"])
def logout():
    # Only the admin ends the sessions: anyone can fetch a CSRF token from
    # the login form, and must not log the teacher out with it.
    if is_admin():
        revoke_sessions(current_app.config["AGENT"])
    session.clear()
    flash(text("logged_out"), "info")
    return redirect(url_for("auth.login"), code=303)
