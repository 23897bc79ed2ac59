"""``moodle-sync-agent check``: is each Moodle online, is its token valid,
which functions does its token's service lack (the functions each kind of
data needs on each side: agent/kinds.py)."""

from __future__ import annotations

import json
from typing import Any

from .check_local import local_report, print_local
from .config import Config
from .exits import EXIT_ERRORS, EXIT_OFFLINE, EXIT_OK
from . import rights
from .kinds import PARTICIPANTS, box_functions, preferred, server_functions, unique
from .learners import BOX_FUNCTIONS as LEARNER_FUNCTIONS
from .moodle import BATCH_FUNCTION, MoodleClient, TokenRejected, Unreachable
from .store import settings



def check_site(client: MoodleClient, url: str, required: list[str], optional: list[str],
               used: list[str], side: str, service: str, refused: list[str] | None = None,
               wanted: list[tuple[str, str, str]] | None = None) -> tuple[int, dict]:
    """Is one Moodle online, is its token valid, which functions does its service lack,
    and what does its account's rights call for (agent/rights.py). ``wanted``:
    (function, what for, what happens without it) of the functions it can do
    without (agent/kinds.py preferred): listed, never an error."""
    result: dict[str, Any] = {"url": url, "online": False, "token_valid": None}
    try:
        info = client.site_info()
        judged = rights.judge(info, required, used + optional, side=side, service=service, refused=refused or ())
        result.update(online=True, token_valid=True, site_name=info.site_name,
                      release=info.release, site_url=info.site_url,
                      missing_functions=judged.missing, missing_optional=info.lacking(optional),
                      preferred=[{"function": f, "for": label, "present": not info.lacking([f]),
                                  "without": without} for f, label, without in wanted or []],
                      clock_offset_s=client.clock_offset_s(), rights=judged.as_dict())
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
        judged = result["rights"]
        print(f"{who}: account {judged['username'] or '?'}"
              + (", a site administrator" if judged["site_admin"] else ", not a site administrator"))
        if not result["missing_functions"]:
            print(f"{who}: functions: all present")
        if result["missing_optional"]:
            print(f"{who}: no batching (the service lacks {BATCH_FUNCTION}): one request per call")
        for line in judged["off"]:
            print(f"{who}: {line}")
        for warning in judged["warnings"]:
            print(f"{who}: warning: {warning}")
        for p in result.get("preferred", []):
            if p["present"]:
                print(f"{who}: needed for {p['for']}: {p['function']}: present")
            else:
                print(f"{who}: needed for {p['for']}: {p['function']}: missing, so {p['without']}")
    else:
        print(f"{who}: {result['error']}")


def run_check(config: Config, as_json: bool, only: str | None = None) -> int:
    """The school's Moodle, and the box's own when [box] names one: the
    functions each kind of data needs on each side (agent/kinds.py), and the
    rights of each token's account (agent/rights.py). ``only``: connect's
    check of the one side that has a token."""
    # The way down (direction down or both) reads more of the server and writes into the box's Moodle.
    down = settings.get(config, "sync_direction") != "up"
    code, result = EXIT_OK, dict[str, Any]()
    if only != "box":
        wanted = preferred("server", down)
        code, result = check_site(MoodleClient(config.moodle), config.moodle.url, server_functions(down),
                                  [BATCH_FUNCTION], server_functions(True) + [PARTICIPANTS]
                                  + [f for f, _, _ in preferred("server", True)], "server",
                                  config.moodle.service, settings.get(config, rights.REFUSED_KEY) or [], wanted)
        if result.get("token_valid") is not None:  # for the page (webui/connect.py); offline: the last one stays
            settings.put(**{rights.RIGHTS_KEY["server"]: {"site_name": result["site_name"], **result["rights"]}
                         if result["token_valid"] else None})
    box_code, box = EXIT_OK, None
    if config.box is not None and only != "server":
        # The Learners screen writes accounts and passwords into the box's Moodle whatever the direction.
        box_needed = unique(box_functions(down) + LEARNER_FUNCTIONS)
        box_code, box = check_site(MoodleClient(config.box), config.box.url, box_needed,
                                   [BATCH_FUNCTION], box_needed + box_functions(True) + [f for f, _, _ in preferred("box", True)],
                                   "box", config.box.service, None, preferred("box", down))
        if box.get("token_valid") is False:
            box["error"] = "the box's Moodle rejected its token"
        if box.get("token_valid") is not None:
            settings.put(**{rights.RIGHTS_KEY["box"]: {"site_name": box["site_name"], **box["rights"]}
                            if box["token_valid"] else None})
        result["box"] = box
    result.update(local_report(config))  # the database's real path, token files others can read
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=False))
    else:
        if only != "box":
            print_check(result, "server")
        if box is not None:
            print_check(box, "box's Moodle")
        print_local(result)
    return code or box_code
