"""XML answers and errors, as webservice_rest_server::xmlize_result() writes them."""

from __future__ import annotations

from typing import Any

from .errors import MoodleException
from .php import htmlspecialchars, php_str


def xmlize(value: Any) -> str:
    if isinstance(value, dict):
        return "<SINGLE>\n" + "".join(
            f'<KEY name="{k}">{xmlize(v)}</KEY>\n' for k, v in value.items()) + "</SINGLE>\n"
    if isinstance(value, list):
        return "<MULTIPLE>\n" + "".join(xmlize(v) for v in value) + "</MULTIPLE>\n"
    if value is None:
        return '<VALUE null="null"/>\n'
    if isinstance(value, bool):
        value = int(value)
    return "<VALUE>" + htmlspecialchars(php_str(value)) + "</VALUE>\n"


def described(value: Any, description: Any) -> Any:
    """The answer as xmlize_result() walks it: along the returns description, every key there, null
    where the answer has none (JSON, by contrast, leaves such keys out).  A description is a dict
    (a single structure), a one-item list (a multiple one) or None (a value)."""
    if isinstance(description, dict):
        value = value if isinstance(value, dict) else {}
        return {k: described(value.get(k), sub) for k, sub in description.items()}
    if isinstance(description, list):
        return [described(v, description[0]) for v in value or ()]
    return value


def xml_response(result: Any, has_returns: bool = True) -> str:
    body = xmlize(result) if (has_returns and result is not None) else ""
    return '<?xml version="1.0" encoding="UTF-8" ?>\n<RESPONSE>\n' + body + "</RESPONSE>\n"


def xml_error(ex: MoodleException, debug: bool = False) -> str:
    out = '<?xml version="1.0" encoding="UTF-8" ?>\n'
    out += f'<EXCEPTION class="{ex.exception}">\n'
    out += f"<ERRORCODE>{htmlspecialchars(ex.errorcode)}</ERRORCODE>\n"
    out += f"<MESSAGE>{htmlspecialchars(ex.message)}</MESSAGE>\n"
    if debug and ex.debuginfo is not None and ex.errorcode != "invalidtoken":
        out += f"<DEBUGINFO>{htmlspecialchars(ex.debuginfo)}</DEBUGINFO>\n"
    return out + "</EXCEPTION>\n"
