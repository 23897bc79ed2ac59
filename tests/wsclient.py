"""The web-service requests the simulator's tests send, written independently
of the agent's client and of the simulator: form fields in PHP's bracket
notation, and PHP's json_encode() to compare answers byte for byte with the
recordings (tests/recordings)."""

from __future__ import annotations

import json
from pathlib import Path

import requests

WS = "/webservice/rest/server.php"
RECORDINGS = Path(__file__).resolve().parent / "recordings"


def load(name: str, recordings: Path = RECORDINGS) -> dict:
    """A recording by its number (``"27"``, ``"20b"``)."""
    return json.loads(next(recordings.glob(f"{name}_*.json")).read_text())


def php_json(value) -> bytes:
    """PHP json_encode(): compact, ASCII, '/' escaped."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/").encode()


def flatten(prefix: str, value) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [kv for k, v in value.items() for kv in flatten(f"{prefix}[{k}]", v)]
    if isinstance(value, list):
        return [kv for i, v in enumerate(value) for kv in flatten(f"{prefix}[{i}]", v)]
    return [(prefix, str(int(value)) if isinstance(value, bool) else str(value))]


def ws_raw(sim, function: str, token: str = "TOKEN", session=None, fmt: str | None = "json", timeout: float = 30,
           **params) -> requests.Response:
    """One call as a form POST (HTTP 200, as Moodle answers errors too)."""
    fields = [("wstoken", token), ("wsfunction", function)]
    if fmt:
        fields.append(("moodlewsrestformat", fmt))
    for k, v in params.items():
        fields.extend(flatten(k, v))
    r = (session or requests).post(sim.url + WS, data=fields, timeout=timeout)
    assert r.status_code == 200
    return r


def ws(sim, function: str, token: str = "TOKEN", session=None, fmt: str | None = "json", **params):
    """One call's answer: JSON, or the text of another format."""
    r = ws_raw(sim, function, token, session, fmt, **params)
    return r.json() if fmt == "json" else r.text
