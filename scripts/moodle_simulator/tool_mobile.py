"""tool_mobile_call_external_functions: several calls in one request, stopping at the first error."""

from __future__ import annotations

import json
import traceback
from typing import TYPE_CHECKING

from .errors import MoodleException
from .params import DEFAULT, Multiple, Single, Value
from .php import php_json_encode

if TYPE_CHECKING:
    from .webservice import WebService

BATCH_PARAMS = Single({"requests": Multiple(Single({
    "function": Value("alphanumext"),
    "arguments": Value("raw", DEFAULT, "{}"),
    "settingraw": Value("bool", DEFAULT, False),
    "settingfilter": Value("bool", DEFAULT, False),
    "settingfileurl": Value("bool", DEFAULT, True),
    "settinglang": Value("lang", DEFAULT, ""),
}))})


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")   # PHP's json_decode() does not accept NaN/Infinity


def _arguments(text: str) -> dict | list:
    """json_decode() of an entry's arguments; what is not a JSON object or array counts as none."""
    try:
        args = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, TypeError, RecursionError):
        return {}
    return args if isinstance(args, (dict, list)) else {}


def _run(ws: WebService, fname: str, args: dict | list, userid: int, calls: list, service: dict | None) -> dict:
    try:
        try:
            data = ws.call(fname, args, userid, calls, service)
        except MoodleException:
            raise
        except Exception as e:   # a simulator bug: report it like PHP reports a Throwable
            traceback.print_exc()
            raise MoodleException(type(e).__name__, "generalexceptionmessage", f"Exception - {e}")
    except MoodleException as e:
        ws.stats.count("errors", e.errorcode)
        return {"error": True,
                "exception": php_json_encode(e.batch_object(ws.state.wwwroot, bool(ws.faults.debug)))}
    resp: dict = {"error": False}
    if data is not None:
        resp["data"] = php_json_encode(data)
    return resp


def call_external_functions(ws: WebService, p: dict, userid: int, calls: list, service: dict | None = None) -> dict:
    service = ws.state.service if service is None else service     # the token's service
    ws.stats.add(batches=1)
    ws.stats.count("batch_sizes", len(p["requests"]))
    responses = []
    for req in p["requests"]:
        if req["function"] in service:
            resp = _run(ws, req["function"], _arguments(req["arguments"]), userid, calls, service)
        else:
            exc = {"errorcode": "accessexception", "module": "webservice"}
            if ws.faults.debug:
                exc["debuginfo"] = "Access to the function is not allowed."
            ws.stats.count("errors", "accessexception")
            resp = {"error": True, "exception": php_json_encode(exc)}
        responses.append(resp)
        if resp["error"]:
            break
    return {"responses": responses}
