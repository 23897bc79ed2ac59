"""The Learners screen (issue 19): the learners of the kept courses, where
each account exists, adding a learner, setting a password, login cards.

A new password is shown once: only in the answer to the form that set it,
never stored for display. Each form carries a one-time code kept in the
session, so a reload that sends the form again is refused instead of
making or showing anything again; the page's script also replaces the
address, so that a reload asks for the plain screen.
"""

from __future__ import annotations

import secrets
from typing import Any

from flask import Blueprint, current_app, render_template, request, session
from werkzeug.wrappers import Response

from agent.config import Config
from agent.learners import LearnerError, NewLearner, add_learner, default_also_server, generate_password, \
    list_learners, set_password
from agent.moodle import Unreachable
from agent.store import settings
from agent.store.db import Course

from .auth import login_required
from .i18n import text

bp = Blueprint("learners", __name__)

ONCE_KEY = "learners_once"
ONCE_KEPT = 20  # open forms remembered per session


def _config() -> Config:
    return current_app.config["AGENT"]


def once() -> str:
    """A new one-time code for a form."""
    code = secrets.token_urlsafe(12)
    session[ONCE_KEY] = [*session.get(ONCE_KEY, [])[-(ONCE_KEPT - 1):], code]
    return code


def use_once() -> bool:
    """Was the form's code open (it is closed now)?"""
    code, open_codes = request.form.get("once", ""), list(session.get(ONCE_KEY, []))
    if code not in open_codes:
        return False
    open_codes.remove(code)
    session[ONCE_KEY] = open_codes
    return True


def page(status: int = 200, cards: list[dict[str, Any]] | None = None, error: str | None = None,
         field: str | None = None, form: dict[str, Any] | None = None) -> tuple[str, int]:
    config = _config()
    rows = list_learners(config) if config.box is not None else []
    # Only what the form names: a course's contents (every section and module) stay unread.
    courses = list(Course.select(Course.id, Course.shortname, Course.fullname).order_by(Course.shortname))
    return render_template(
        "learners.html", learners=rows, courses=courses,
        cards=cards or [], error=error, field=field, form=form or {}, once=once, has_box=config.box is not None,
        box_site=settings.get(config, "box_site_name") if config.box is not None else None,
    ), status


def _no_store(answer: tuple[str, int]) -> Response:
    response = current_app.make_response(answer)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/learners")
@login_required
def index():
    return _no_store(page())


def _password() -> str:
    typed = request.form.get("password", "")
    return typed if typed else generate_password()


def _refused(exc: Exception, form: dict[str, Any]) -> Response:
    if isinstance(exc, Unreachable):
        return _no_store(page(503, error=text("box_unreachable", reason=exc.reason), form=form))
    field = exc.field if isinstance(exc, LearnerError) else None
    return _no_store(page(400, error=text("learner_refused", problem=str(exc)), field=field, form=form))


@bp.route("/learners/add", methods=["POST"])
@login_required
def add():
    f = request.form
    form: dict[str, Any] = {k: f.get(k, "").strip() for k in ("username", "firstname", "lastname", "email", "idnumber")}
    form["courses"] = f.getlist("course")
    if not use_once():
        return _no_store(page(409, error=text("form_used")))
    learner = NewLearner(form["username"], form["firstname"], form["lastname"], form["email"], form["idnumber"],
                         form["courses"])
    try:
        learner.check()
        result = add_learner(_config(), learner, _password())
    except (LearnerError, Unreachable) as exc:
        return _refused(exc, form)
    return _no_store(page(cards=[{**result, "name": f"{learner.firstname} {learner.lastname}"}]))


@bp.route("/learners/password", methods=["POST"])
@login_required
def password():
    usernames = request.form.getlist("username")
    if not use_once():
        return _no_store(page(409, error=text("form_used")))
    cards: list[dict[str, Any]] = []
    names = {r["username"]: f"{r['firstname']} {r['lastname']}" for r in list_learners(_config())}
    for username in usernames[:200]:
        also = request.form.get("also_server") in ("on", "1") if "also_server_shown" in request.form \
            else default_also_server(username)
        try:
            result = set_password(_config(), username, _password(), also_server=also)
        except (LearnerError, Unreachable) as exc:
            if not cards:
                return _refused(exc, {})
            return _no_store(page(cards=cards, error=text("learner_refused", problem=str(exc))))
        cards.append({**result, "name": names.get(username, "")})
    return _no_store(page(cards=cards))
