"""A setting's declaration (:func:`setting`, the field of a section's
dataclass in :mod:`agent.config`) and what its value may be: the text of the
INI file parsed as the setting's type, the special checks some settings add,
and values written back as the file writes them. Each check takes the parsed
value and returns it (maybe normalised), or raises ValueError with the
problem in words; the reader in :mod:`agent.config` adds the file and the key.
Stdlib only: gunicorn.conf.py imports agent.config in gunicorn's master.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

# -- the declaration -------------------------------------------------------


@dataclass(frozen=True)
class SettingMeta:
    """What a field's annotation and default do not say."""

    help: str
    lo: float | None = None
    hi: float | None = None
    required: bool = False
    check: Callable[[Any], Any] | None = None
    # Shown (commented out) in the sample file instead of the default, when
    # the default is unset or depends on the box.
    example: str | None = None
    # Set (not commented out) in the packaged agent.ini.
    packaged: str | None = None


def setting(default: Any = MISSING, *, help: str, factory: Callable[[], Any] | None = None,
            lo: float | None = None, hi: float | None = None, required: bool = False,
            check: Callable[[Any], Any] | None = None, example: str | None = None,
            packaged: str | None = None, secret: bool = False) -> Any:
    """A dataclass field that is also a setting of the INI file. A secret is
    left out of repr(), so that it is never printed with its config."""
    meta = {"setting": SettingMeta(help=help, lo=lo, hi=hi, required=required, check=check,
                                   example=example, packaged=packaged)}
    if factory is not None:
        return field(default_factory=factory, repr=not secret, metadata=meta)
    if default is MISSING:
        return field(repr=not secret, metadata=meta)
    return field(default=default, repr=not secret, metadata=meta)


# -- checks ----------------------------------------------------------------

TIME_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def parse_time_utc(value: str) -> str:
    """Validate HH:MM (24 h, UTC); raise ValueError with the problem."""
    if not TIME_RE.match(value or ""):
        raise ValueError(f"must be a time as HH:MM (00:00 to 23:59), got {value!r}")
    return value


def site_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"must be an http:// or https:// address, got {url!r}")
    if parsed.query or parsed.fragment:
        raise ValueError("must be the site's base address, without ? or #")
    return url.rstrip("/")


def existing_file(path: str) -> str:
    if not Path(path).is_file():
        raise ValueError(f"no such file: {path}")
    return path


DIRECTIONS = ("up", "down", "both")


def direction(value: str) -> str:
    if value not in DIRECTIONS:
        raise ValueError(f"must be up, down or both, got {value!r}")
    return value


# An events API key must carry 128 bits. Only its length and alphabet can be
# checked: hex digits count 4 bits each, the other characters allowed in a
# Bearer token (RFC 6750) 6 bits, as base64 does. A key of few distinct
# characters (32 zeros) has the length but not the bits: a random 128-bit
# key of 32 hex digits has fewer than 8 distinct ones about once in 3*10^7.
_HEX_DIGITS = frozenset(string.hexdigits)
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "-._~+/")
KEY_BITS = 128
MIN_DISTINCT_KEY_CHARS = 8
NEW_KEY_HINT = "generate one with: python3 -c 'import secrets; print(secrets.token_hex(16))'"


def api_key(key: str) -> str:
    body = key.rstrip("=")  # base64 padding carries nothing
    if not body or not set(body) <= _TOKEN_CHARS:
        raise ValueError(f"must be hex digits or base64/base64url characters (A-Z a-z 0-9 - . _ ~ + /); "
                         f"{NEW_KEY_HINT}")
    bits = len(body) * (4 if set(body) <= _HEX_DIGITS else 6)
    if bits < KEY_BITS:
        # The key itself is never echoed: only its length.
        raise ValueError(f"must be at least 32 hex characters or 22 base64url characters ({KEY_BITS} bits), "
                         f"got a key of length {len(key)}; {NEW_KEY_HINT}")
    distinct = len(set(body))
    if distinct < MIN_DISTINCT_KEY_CHARS:
        raise ValueError(f"repeats its characters (only {distinct} distinct, at least {MIN_DISTINCT_KEY_CHARS}): "
                         f"not a random key; {NEW_KEY_HINT}")
    return key


# A Moodle web-service token is 32 hexadecimal characters (md5 of random
# data, external_generate_token). Only this much of a token file is read: a
# file named by mistake (/etc/shadow) is neither read whole nor sent.
MOODLE_TOKEN_RE = re.compile(r"[0-9a-fA-F]{32}")
TOKEN_FILE_READ_BYTES = 512


def read_token_file(path: str) -> str:
    """The token a token file holds; OSError if it cannot be read, ValueError
    (never quoting the file) if it holds no Moodle token."""
    with open(path, "rb") as fh:
        data = fh.read(TOKEN_FILE_READ_BYTES)
    text = data.decode("ascii", errors="replace").strip()
    if not text and len(data) < TOKEN_FILE_READ_BYTES:
        raise ValueError(f"{path} is empty")
    if len(data) >= TOKEN_FILE_READ_BYTES or not MOODLE_TOKEN_RE.fullmatch(text):
        raise ValueError(f"{path} does not hold a Moodle token (32 hexadecimal characters, alone in the file): "
                         "is it the right file?")
    return text


def parse_value(kind: type, raw: str, lo: float | None = None, hi: float | None = None) -> Any:
    """The text of one value as a setting's type (str, int, float, bool or
    Path, a Path made absolute with symbolic links and .. resolved);
    ValueError says why not."""
    if kind is bool:
        lowered = raw.lower()
        if lowered in ("1", "yes", "true", "on"):
            return True
        if lowered in ("0", "no", "false", "off"):
            return False
        raise ValueError(f"must be yes or no, got {raw!r}")
    if kind is int:
        try:
            number: float = int(raw)
        except ValueError:
            raise ValueError(f"must be a whole number, got {raw!r}") from None
    elif kind is float:
        try:
            number = float(raw)
        except ValueError:
            raise ValueError(f"must be a number, got {raw!r}") from None
    elif kind is Path:
        # What is created there is where the path really leads: a path through
        # ".." or a link is shown (check) and used as the place it names.
        return Path(raw).resolve()
    else:
        return kind(raw)  # str
    if lo is not None and hi is not None and not lo <= number <= hi:
        raise ValueError(f"must be between {format_number(lo)} and {format_number(hi)}, "
                         f"got {format_number(number)}")
    return number


def format_number(number: float) -> str:
    """A number without exponent or trailing .0: 1000000, 0.1, 600."""
    return str(int(number)) if math.isfinite(number) and number == int(number) else f"{number:g}"


def format_value(value: Any) -> str:
    """A value as the INI file writes it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format_number(value)
    return str(value)


SERVICE_RE = re.compile(r"^[A-Za-z0-9_-]+$")
DEFAULT_SERVICE = "moodle_sync_agent"


def service_name(name: str) -> str:
    """An external service's short name: Moodle's PARAM_ALPHANUMEXT."""
    if not SERVICE_RE.match(name):
        raise ValueError(f"must be a service short name (letters, digits, _ and -), got {name!r}")
    return name
