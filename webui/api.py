"""The local JSON API under /api/v1: the box's apps queue learner events, and
the page polls the status while a sync runs. Errors are JSON, never HTML."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from agent import health
from agent.store import history
from agent.store.status import status as status_of
from agent.store.db import SyncRequest
from agent.store.queue import (MAX_BATCH, MAX_INPUT_BYTES, EventError, StorageFull, enqueue, parse_events,
                         validate_events)
from agent.store.diskspace import DiskProbeError

from .auth import API_KEYS, client_address, is_admin, is_loopback, now, slow_down

bp = Blueprint("api", __name__, url_prefix="/api/v1")

MAX_SYNCS = 100


def error(status: int, message: str, **extra: Any) -> Response:
    response = jsonify({"error": message, **extra})
    response.status_code = status
    return response


def unauthorized(message: str) -> Response:
    response = error(401, message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="moodle-sync-agent"'
    return response


def key_refusal(missing: str) -> Response | None:
    """None when the request carries the events API key; else the answer.
    A remote address that sent MAX_KEY_FAILURES wrong keys within the window
    gets 429, even with the right key: a guess must not learn it was right.
    From the box itself a wrong key is slowed down, never locked out."""
    key = current_app.config["AGENT"].web.api_key
    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return unauthorized(missing)  # no key sent: nothing guessed
    address, t = client_address(), now()
    right = bool(key and hmac.compare_digest(sent.strip().encode(), key.encode()))
    if is_loopback(request.remote_addr):
        if right:
            return None
        slow_down()
        return unauthorized(missing)
    # Checking the key is cheap: only a wrong one writes (and is counted atomically).
    wait = API_KEYS.blocked(address, t) if right else API_KEYS.fail(address, t)
    if wait:
        response = error(429, f"too many wrong API keys from this address: try again in {wait} s")
        response.headers["Retry-After"] = str(wait)
        return response
    return None if right else unauthorized(missing)


def read_refusal() -> Response | None:
    """Status and history: public if the config says so, else the admin's
    session or the events API key."""
    if current_app.config["AGENT"].web.public_status or is_admin():
        return None
    return key_refusal("login required")


@bp.route("/events", methods=["POST"])
def post_events():
    if not current_app.config["AGENT"].web.api_key:
        return error(503, "the events API is off: set api_key in the [web] section of the configuration")
    refusal = key_refusal("missing or wrong API key (send Authorization: Bearer KEY)")
    if refusal:
        return refusal
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
    except DiskProbeError as exc:  # nothing written: the budget could not be checked
        return error(503, f"events not queued: {exc}")
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
    refusal = read_refusal()
    if refusal:
        return refusal
    config = current_app.config["AGENT"]
    return jsonify({**status_of(config), "request": latest_request(), "health": health.gather(config)})


@bp.route("/syncs")
def syncs():
    refusal = read_refusal()
    if refusal:
        return refusal
    raw = request.args.get("limit", "5")
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_SYNCS:
        return error(400, f"must be a whole number from 1 to {MAX_SYNCS}, got {raw[:20]!r}", field="limit")
    return jsonify(history.recent(limit))
