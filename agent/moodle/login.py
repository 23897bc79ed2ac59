"""A web-service token by login: Moodle's ``login/token.php``, as the Moodle app gets its own.

The agent's account on each Moodle gives its username and password once; Moodle answers
with the token of (account, service), creating it when the account may
(``moodle/webservice:createtoken``) or handing out the one that exists. Recordings 80-85:
HTTP 200 either way, ``{"token", "privatetoken"}`` or ``{"error", "errorcode", ...}``.

The password travels only in the POST body, over TLS verified as for every other call; it
is never kept, logged, or put in an exception's text. requests is imported on use, as in
agent/moodle.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .. import __version__
from .transport import Unreachable, _short, _strip_query

LOGIN_PATH = "/login/token.php"
# A Moodle token: md5(uniqid(rand(), true)), 32 hexadecimal digits.
TOKEN_RE = re.compile(r"^[0-9a-fA-F]{32}$")
MAX_ANSWER_BYTES = 64 * 1024


class LoginRefused(Exception):
    """Moodle answered login/token.php with an error; str() says it in words, with what to do."""

    def __init__(self, errorcode: str, message: str, words: str):
        self.errorcode, self.message = errorcode, message
        super().__init__(words)


@dataclass(frozen=True)
class Login:
    url: str          # the site's base address
    username: str
    service: str      # the external service's short name
    timeout: float = 30.0
    ca_bundle: str | None = None


def refusal_words(login: Login, errorcode: str, message: str) -> str:
    """Moodle's refusal, said for the person at the keyboard (recordings 81-84)."""
    site = login.url
    if errorcode == "invalidlogin":
        return (f"{site} refused the login of {login.username!r}: wrong username or password, or the account "
                "is suspended or cannot log in (Moodle: invalidlogin)")
    if errorcode == "servicenotavailable":
        return (f"{site} has no enabled web service with the short name {login.service!r}: create or enable it in "
                "Site administration > Server > Web services > External services, or set the short name in "
                "agent.ini (service = ...) (Moodle: servicenotavailable)")
    if errorcode == "cannotcreatetoken":
        return (f"{login.username!r} may not create a token for the service {login.service!r} on {site}: give the "
                "account moodle/webservice:createtoken (the system role preset in packaging/moodle/), or have an "
                "administrator create the token in Site administration > Server > Web services > Manage tokens "
                "(a site administrator's token must always be made there) (Moodle: cannotcreatetoken)")
    if errorcode == "enablewsdescription":
        return (f"web services are off on {site}: Site administration > General > Advanced features > "
                "Enable web services (Moodle: enablewsdescription)")
    if errorcode == "sitemaintenance":
        return f"{site} is in maintenance mode: try again later (Moodle: sitemaintenance)"
    if errorcode in ("forcepasswordchangenotice", "usernotconfirmed"):
        return (f"{login.username!r} must first log in to {site} in a browser ({message}) "
                f"(Moodle: {errorcode})")
    return f"{site} refused the token: {message or 'no message'} (Moodle: {errorcode})"


def request_token(login: Login, password: str) -> str:
    """The token Moodle gives for (username, password, service); raises LoginRefused or Unreachable.

    The password is sent, never returned or put in an error."""
    import requests

    url = login.url.rstrip("/") + LOGIN_PATH
    host = requests.utils.urlparse(url).netloc
    headers = {"User-Agent": f"moodle-sync-agent/{__version__}", "Accept": "application/json",
               "Accept-Encoding": "gzip, deflate"}
    fields = {"username": login.username, "password": password, "service": login.service}
    try:
        response = requests.post(url, data=fields, headers=headers, timeout=login.timeout,
                                 verify=login.ca_bundle or True, allow_redirects=False)
    except requests.exceptions.SSLError as exc:
        raise Unreachable(f"TLS verification failed for {host}: {_short(exc)}", "tls") from None
    except requests.exceptions.Timeout:
        raise Unreachable(f"no answer from {host} within {login.timeout:g} s", "timeout") from None
    except requests.exceptions.RequestException as exc:
        raise Unreachable(f"cannot reach {host}: {_short(exc)}", "network") from None
    finally:
        del fields  # no reference to the password outlives the request
    if 300 <= response.status_code < 400:
        where = _strip_query(response.headers.get("Location", "elsewhere"))
        raise Unreachable(f"{host} redirected to {where}: is {login.url} the site's base address?", "redirect")
    if response.status_code != 200:
        raise Unreachable(f"{host} answered HTTP {response.status_code} to {LOGIN_PATH}", "server")
    answer = _decode(response.content, host)
    if "errorcode" in answer or "error" in answer:
        code, message = str(answer.get("errorcode") or "unknown"), str(answer.get("error") or "")
        raise LoginRefused(code, message, refusal_words(login, code, message))
    token = answer.get("token")
    if not isinstance(token, str) or not TOKEN_RE.match(token):
        raise Unreachable(f"{host}'s answer to {LOGIN_PATH} holds no Moodle token (32 hexadecimal digits)",
                          "bad_answer")
    return token


def _decode(content: bytes, host: str) -> dict[str, Any]:
    if len(content) > MAX_ANSWER_BYTES:
        raise Unreachable(f"{host}'s answer to {LOGIN_PATH} is too large to be Moodle's", "bad_answer")
    try:
        answer = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Unreachable(f"{host} did not answer {LOGIN_PATH} with Moodle's JSON (wrong address, or a "
                          "captive portal?)", "bad_answer") from None
    if not isinstance(answer, dict):
        raise Unreachable(f"{host}'s answer to {LOGIN_PATH} does not have Moodle's shape", "bad_answer")
    return answer
