"""``moodle-sync-agent check``: is each Moodle online, is its token valid,
which functions does its token's service lack (the functions each kind of
data needs on each side: agent/kinds.py)."""

from __future__ import annotations

import json
from typing import Any

from .config import Config
from .kinds import box_functions, server_functions
from .moodle import BATCH_FUNCTION, MoodleClient, TokenRejected, Unreachable
from .store import settings

EXIT_OK, EXIT_ERRORS, EXIT_OFFLINE = 0, 1, 3  # as agent/cli.py's


def check_site(client: MoodleClient, url: str, required: list[str], optional: list[str]) -> tuple[int, dict]:
    """Is one Moodle online, is its token valid, which functions does its service lack."""
    result: dict[str, Any] = {"url": url, "online": False, "token_valid": None}
    try:
        info = client.site_info()
        result.update(online=True, token_valid=True, site_name=info.site_name,
                      release=info.release, site_url=info.site_url,
                      missing_functions=info.lacking(required), missing_optional=info.lacking(optional),
                      clock_offset_s=client.clock_offset_s())
        return EXIT_OK, result
    except TokenRejected:
        result.update(online=True, token_valid=False, error="the server rejected the token")
        return EXIT_ERRORS, result
    except Unreachable as exc:
        result.update(error=f"offline: {exc.reason}")
        return EXIT_OFFLINE, result


def print_check(result: dict, who: str) -> None:
    if result.get("token_valid"):
        print(f"{who}: online: {result['site_name']} (Moodle {result['release']}) at {result['site_url']}")
        missing = result["missing_functions"]
        print(f"{who}: " + ("functions: all present" if not missing else "missing functions: " + ", ".join(missing)))
        if result["missing_optional"]:
            print(f"{who}: no batching (the service lacks {BATCH_FUNCTION}): one request per call")
    else:
        print(f"{who}: {result['error']}")


def run_check(config: Config, as_json: bool) -> int:
    """The school's Moodle, and the box's own when [box] names one: the
    functions each kind of data needs on each side (agent/kinds.py)."""
    # The way down (direction down or both) reads more of the server and writes into the box's Moodle.
    down = settings.get(config, "sync_direction") != "up"
    code, result = check_site(MoodleClient(config.moodle), config.moodle.url, server_functions(down),
                              [BATCH_FUNCTION])
    box_code, box = EXIT_OK, None
    if config.box is not None:
        box_code, box = check_site(MoodleClient(config.box), config.box.url, box_functions(down),
                                   [BATCH_FUNCTION])
        if box.get("token_valid") is False:
            box["error"] = "the box's Moodle rejected its token"
        result["box"] = box
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=False))
    else:
        print_check(result, "server")
        if box is not None:
            print_check(box, "box's Moodle")
    return code or box_code
