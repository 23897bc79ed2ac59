"""Moodle's Web Services REST protocol over HTTP, as a stock Moodle 4.x speaks it.

Facts from the recordings in shared/moodle-recordings that shape this module:
form-encoded POSTs with PHP bracket arrays; errors come back with HTTP 200 as
``{"exception", "errorcode", "message"}``. Batches, the site info and the
retries are agent/moodle/connection.py's.

The token travels only in the POST body: it never appears in a URL, and so
never in an exception message or a log line.

requests and urllib3 are imported when a client is made, not with this
module: the daemon imports it for its exceptions and types but leaves every
request to its worker process (agent/service/worker.py), and so idles ~10 MB lighter.
"""

from __future__ import annotations

import email.utils
import json
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from .. import __version__

if TYPE_CHECKING:
    import requests

MAX_ANSWER_BYTES = 64 * 1024 * 1024

# Error codes that mean the call itself can never succeed as sent: the event
# becomes a conflict. Anything else from the server is treated the same way
# unless listed in TRANSIENT_CODES.
TRANSIENT_CODES = {"servicerequireslogin", "sitemaintenance", "dbwriteerror", "dbreaderror"}


class MoodleError(Exception):
    """The server answered, with an error for this call."""

    def __init__(self, errorcode: str, message: str, function: str | None = None):
        self.errorcode, self.message, self.function = errorcode or "unknown", message or "", function
        prefix = f"{function}: " if function else ""
        super().__init__(f"{prefix}{self.message} ({self.errorcode})")

    @property
    def transient(self) -> bool:
        return self.errorcode in TRANSIENT_CODES


class TokenRejected(MoodleError):
    def __str__(self) -> str:
        return "the server rejected the token"


class Unreachable(Exception):
    """No usable answer: network down, captive portal, TLS, time-out, 5xx."""

    def __init__(self, reason: str, kind: str = "network", retry_after: float | None = None):
        self.reason, self.kind, self.retry_after = reason, kind, retry_after
        super().__init__(reason)


@dataclass
class Traffic:
    """Bytes on the wire, request line and headers included, both ways."""

    requests: int = 0
    calls: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


@dataclass
class CallResult:
    ok: bool
    data: Any = None
    error: MoodleError | None = None


def encode_params(params: dict[str, Any]) -> list[tuple[str, str]]:
    """Flatten nested dicts and lists into PHP bracket notation, in order."""
    out: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}[{k}]", v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{prefix}[{i}]", v)
        elif value is None:
            return
        elif isinstance(value, bool):
            out.append((prefix, "1" if value else "0"))
        else:
            out.append((prefix, str(value)))

    for key, value in params.items():
        walk(key, value)
    return out


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _header_bytes(headers) -> int:
    return sum(len(k) + len(str(v)) + 4 for k, v in headers.items()) + 2


class Site(Protocol):
    """What a client needs of a Moodle site: the school's ([moodle], MoodleConfig)
    or the box's own ([box], BoxConfig)."""

    @property
    def url(self) -> str: ...
    @property
    def token(self) -> str: ...
    @property
    def timeout(self) -> float: ...
    @property
    def ca_bundle(self) -> str | None: ...
    @property
    def rest_url(self) -> str: ...


class Transport:
    """Moodle's REST protocol over HTTP: one function per POST. What a run
    does with it (site info, batches, retries) is agent/moodle/connection.py's."""

    def __init__(self, config: Site, session: requests.Session | None = None):
        import requests  # here, not at the top: see the module's docstring

        self.config = config
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = f"moodle-sync-agent/{__version__}"
        # Only what _read decodes: requests adds br (and urllib3 2 zstd) when
        # those modules are importable, and a brotli answer would read as
        # "not valid JSON", that is offline.
        self.session.headers["Accept-Encoding"] = "gzip, deflate"
        self.traffic = Traffic()
        self.server_date: datetime | None = None
        self.local_date_at_answer: datetime | None = None

    # -- transport ---------------------------------------------------------

    def _post(self, fields: list[tuple[str, str]], url: str | None = None) -> Any:
        """One form POST to the REST endpoint (or ``url``, another of the site's
        scripts: login/token.php), its answer's JSON; raises Unreachable."""
        import requests
        import urllib3

        url = url or self.config.rest_url
        request = requests.Request("POST", url, data=fields)
        prepared = self.session.prepare_request(request)
        # Form fields always give a str or bytes body, never a stream.
        body = prepared.body.encode() if isinstance(prepared.body, str) else bytes(prepared.body or b"")  # type: ignore[arg-type]
        host = requests.utils.urlparse(url).netloc
        path = requests.utils.urlparse(url).path
        self.traffic.requests += 1
        try:
            response = self.session.send(
                prepared, timeout=self.config.timeout, allow_redirects=False, stream=True,
                verify=self.config.ca_bundle or True,
            )
            # Counted once the server has read it: a refused connection sent nothing.
            self.traffic.bytes_sent += (len(f"POST {path} HTTP/1.1\r\n") + len(f"Host: {host}\r\n")
                                        + _header_bytes(prepared.headers) + len(body))
            raw = self._read(response)
        except requests.exceptions.SSLError as exc:
            raise Unreachable(f"TLS verification failed for {host}: {_short(exc)}", "tls") from None
        except requests.exceptions.Timeout:
            raise Unreachable(f"no answer from {host} within {self.config.timeout:g} s", "timeout") from None
        except requests.exceptions.ConnectionError as exc:
            raise Unreachable(f"cannot reach {host}: {_short(exc)}", "network") from None
        except requests.exceptions.RequestException as exc:
            raise Unreachable(f"request to {host} failed: {_short(exc)}", "network") from None
        # The body is read from urllib3's raw stream (to count the bytes on the
        # wire), so a link lost in the middle of the answer raises urllib3's
        # errors, which requests wraps only for what it reads itself.
        except urllib3.exceptions.ReadTimeoutError:
            raise Unreachable(f"no answer from {host} within {self.config.timeout:g} s", "timeout") from None
        except urllib3.exceptions.HTTPError as exc:
            raise Unreachable(f"the answer from {host} broke off: {_short(exc)}", "network") from None
        except zlib.error:
            raise Unreachable(f"{host} sent a compressed answer that does not decompress (cut short?)",
                              "bad_answer") from None
        return self._decode(response, raw, host)

    def _read(self, response: requests.Response) -> bytes:
        import urllib3

        chunks, size = [], 0
        try:
            for chunk in response.raw.stream(65536, decode_content=False):
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise Unreachable(f"the server's answer is larger than {MAX_ANSWER_BYTES >> 20} MB", "bad_answer")
                chunks.append(chunk)
            # urllib3 1.26 (bookworm) ends the stream quietly where the link broke.
            expected = response.headers.get("Content-Length", "")
            if expected.isdigit() and size < int(expected):
                raise urllib3.exceptions.IncompleteRead(size, int(expected) - size)
        finally:
            status_line = len(f"HTTP/1.1 {response.status_code} {response.reason}\r\n")
            self.traffic.bytes_received += status_line + _header_bytes(response.headers) + size
            response.close()
        raw = b"".join(chunks)
        if response.headers.get("Content-Encoding", "").lower() == "gzip":
            raw = zlib.decompress(raw, 16 + zlib.MAX_WBITS)
        elif response.headers.get("Content-Encoding", "").lower() == "deflate":
            raw = zlib.decompress(raw)
        return raw

    def _decode(self, response: requests.Response, raw: bytes, host: str) -> Any:
        date = response.headers.get("Date")
        if date:
            try:
                self.server_date = email.utils.parsedate_to_datetime(date)
                self.local_date_at_answer = datetime.now(timezone.utc)
            except (TypeError, ValueError):
                pass
        status = response.status_code
        if 300 <= status < 400:
            where = response.headers.get("Location", "elsewhere")
            raise Unreachable(f"{host} redirected to {_strip_query(where)} (captive portal or wrong URL)", "redirect")
        if status in (429, 503) or status >= 500:
            retry = _retry_after(response.headers.get("Retry-After"))
            raise Unreachable(f"{host} answered HTTP {status}", "server", retry_after=retry)
        if status != 200:
            raise Unreachable(f"{host} answered HTTP {status}", "server")
        ctype = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            kind = "captive_portal" if ctype == "text/html" else "bad_answer"
            what = "an HTML page (captive portal?)" if ctype == "text/html" else f"{ctype or 'no content type'}"
            raise Unreachable(f"{host} answered with {what}, not Moodle's JSON", kind)
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise Unreachable(f"{host} sent an answer that is not valid JSON (cut short?)", "bad_answer") from None

    # -- calls -------------------------------------------------------------

    def call(self, function: str, params: dict[str, Any] | None = None) -> Any:
        """One web service function; raises MoodleError, TokenRejected or Unreachable."""
        fields = [("wstoken", self.config.token), ("wsfunction", function), ("moodlewsrestformat", "json")]
        fields += encode_params(params or {})
        answer = self._post(fields)
        self.traffic.calls += 1
        if isinstance(answer, dict) and "exception" in answer:
            raise _error(answer, function)
        return answer

    def clock_offset_s(self) -> float | None:
        """Server clock minus ours, from the last answer's Date header."""
        if self.server_date is None or self.local_date_at_answer is None:
            return None
        return (self.server_date - self.local_date_at_answer).total_seconds()


def _error(answer: dict, function: str | None) -> MoodleError:
    code = str(answer.get("errorcode") or "unknown")
    message = str(answer.get("message") or "")
    cls = TokenRejected if code == "invalidtoken" else MoodleError
    return cls(code, message, function)


CAUSES = [
    ("refused", "connection refused"),
    ("Name or service not known", "DNS lookup failed"),
    ("Temporary failure in name resolution", "DNS lookup failed"),
    ("No address associated", "DNS lookup failed"),
    ("Network is unreachable", "network unreachable"),
    ("No route to host", "no route to host"),
    ("reset by peer", "the connection was reset"),
    ("RemoteDisconnected", "the server closed the connection without answering"),
    ("IncompleteRead", "the answer was cut off"),
    ("ProtocolError", "the connection broke"),
    ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed"),
    ("hostname mismatch", "certificate is for another host"),
    ("timed out", "timed out"),
]


def _short(exc: Exception) -> str:
    text = str(exc)
    for needle, plain in CAUSES:
        if needle in text:
            return plain
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


def _strip_query(url: str) -> str:
    return url.split("?", 1)[0][:200]
