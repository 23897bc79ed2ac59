"""The local JSON API under /api/v1: the box's apps queue learner events, and
the page polls the status while a sync runs. Errors are JSON, never HTML."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from agent import health, history
from agent.db import SyncRequest
from agent.queue import (MAX_BATCH, MAX_INPUT_BYTES, EventError, StorageFull, enqueue, parse_events,
                         validate_events)

from .auth import is_admin

bp = Blueprint("api", __name__, url_prefix="/api/v1")

MAX_SYNCS = 100


def error(status: int, message: str, **extra: Any) -> Response:
    response = jsonify({"error": message, **extra})
    response.status_code = status
    return response


def bearer_ok() -> bool:
    key = current_app.config["AGENT"].web.api_key
    header = request.headers.get("Authorization", "")
    scheme, _, sent = header.partition(" ")
    if not key or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(sent.strip().encode(), key.encode())


def unauthorized(message: str) -> Response:
    response = error(401, message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="moodle-sync-agent"'
    return response


def may_read() -> bool:
    """Status and history: public if the config says so, else the admin's
    session or the events API key."""
    return current_app.config["AGENT"].web.public_status or is_admin() or bearer_ok()


@bp.route("/events", methods=["POST"])
def post_events():
    if not current_app.config["AGENT"].web.api_key:
        return error(503, "the events API is off: set api_key in the [web] section of the configuration")
    if not bearer_ok():
        return unauthorized("missing or wrong API key (send Authorization: Bearer KEY)")
    if (request.content_length or 0) > MAX_INPUT_BYTES:
        return error(413, f"the request body is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MB")
    # Read at most one byte past the limit, whatever the headers claimed.
    body = request.stream.read(MAX_INPUT_BYTES + 1)
    if len(body) > MAX_INPUT_BYTES:
        return error(413, f"the request body is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MB")
    try:
        items = parse_events(body)
        if isinstance(items, list) and len(items) > MAX_BATCH:
            return error(413, f"too many events in one request: {len(items)} (at most {MAX_BATCH})",
                         limit=MAX_BATCH)
        result = enqueue(validate_events(items), config=current_app.config["AGENT"])
    except StorageFull as exc:  # nothing written; the events already queued still sync
        return error(507, exc.problem)
    except EventError as exc:  # the whole batch refused, naming the event and the field
        return error(400, exc.problem, index=exc.index, field=exc.field)
    return jsonify({"stored": result.stored, "duplicates": result.duplicates}), 201


def latest_request() -> dict[str, Any] | None:
    row = SyncRequest.select().order_by(SyncRequest.id.desc()).first()
    if row is None:
        return None
    return {"id": row.id, "requested_at": row.requested_at, "picked_at": row.picked_at,
            "sync_id": row.sync_id, "force": bool(row.force)}


@bp.route("/status")
def status():
    if not may_read():
        return unauthorized("login required")
    config = current_app.config["AGENT"]
    return jsonify({**history.status(config), "request": latest_request(), "health": health.gather(config)})


@bp.route("/syncs")
def syncs():
    if not may_read():
        return unauthorized("login required")
    raw = request.args.get("limit", "5")
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_SYNCS:
        return error(400, f"must be a whole number from 1 to {MAX_SYNCS}, got {raw[:20]!r}", field="limit")
    return jsonify(history.recent(limit))
