"""A web-service token by login: Moodle's ``login/token.php``, as the Moodle app gets its own.

The agent's account on each Moodle gives its username and password once; Moodle answers
with the token of (account, service), creating it when the account may
(``moodle/webservice:createtoken``) or handing out the one that exists. Recordings 80-85:
HTTP 200 either way, ``{"token", "privatetoken"}`` or ``{"error", "errorcode", ...}``.

The password travels only in the POST body, through the transport of every other call
(TLS verified); it is never kept, logged, or put in an exception's text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from .transport import Transport, Unreachable

LOGIN_PATH = "/login/token.php"
# A Moodle token: md5(uniqid(rand(), true)), 32 hexadecimal digits.
TOKEN_RE = re.compile(r"^[0-9a-fA-F]{32}$")


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


@dataclass(frozen=True)
class _LoginSite:
    """The site as the transport needs it: no token yet."""

    url: str
    timeout: float
    ca_bundle: str | None
    token: str = ""

    @property
    def rest_url(self) -> str:
        return self.url.rstrip("/") + LOGIN_PATH


def request_token(login: Login, password: str) -> str:
    """The token Moodle gives for (username, password, service); raises LoginRefused or Unreachable.

    Through the same transport as every call (agent/moodle/transport.py: TLS
    verified, the encodings it decodes, the answer's size bounded). The
    password is sent, never returned or put in an error."""
    site = _LoginSite(login.url, login.timeout, login.ca_bundle)
    fields = [("username", login.username), ("password", password), ("service", login.service)]
    try:
        answer = Transport(site)._post(fields, url=site.rest_url)
    finally:
        del fields  # no reference to the password outlives the request
    host = site.url.split("://", 1)[-1].split("/", 1)[0]
    if not isinstance(answer, dict):
        raise Unreachable(f"{host}'s answer to {LOGIN_PATH} does not have Moodle's shape", "bad_answer")
    if "errorcode" in answer or "error" in answer:
        code, message = str(answer.get("errorcode") or "unknown"), str(answer.get("error") or "")
        raise LoginRefused(code, message, refusal_words(login, code, message))
    token = answer.get("token")
    if not isinstance(token, str) or not TOKEN_RE.match(token):
        raise Unreachable(f"{host}'s answer to {LOGIN_PATH} holds no Moodle token (32 hexadecimal digits)",
                          "bad_answer")
    return token
