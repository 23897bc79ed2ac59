"""Parameters the PHP way: form decoding ($_POST), clean_param() and external_api::validate_parameters()."""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from .config import LANGS
from .errors import MoodleException, invalid_parameter
from .php import php_str

# ---------------------------------------------------------------------------
# PHP-style form decoding: values[0]=a, users[0][username]=x, a[]=1
# ---------------------------------------------------------------------------


def _php_key_parts(name: str) -> tuple[str | None, list[str | None]]:
    """Split 'a[b][]' into ('a', ['b', None]) following PHP's rules."""
    name = name.lstrip(" ")
    i = name.find("[")
    if i <= 0:
        if i == 0:
            return None, []
        base = name
        rest = ""
    else:
        base, rest = name[:i], name[i:]
    parts: list[str | None] = []
    while rest.startswith("["):
        j = rest.find("]")
        if j < 0:
            # Unbalanced '[': PHP turns it into '_' and keeps the rest literal.
            if not parts:
                base = base + "_" + rest[1:]
            break
        seg = rest[1:j]
        parts.append(seg if seg != "" else None)
        rest = rest[j + 1:]
    base = base.replace(".", "_").replace(" ", "_")
    if "[" in base:
        base = base.replace("[", "_", 1)
    return base, parts


def _next_index(d: dict) -> str:
    idx = -1
    for k in d:
        if re.fullmatch(r"-?(0|[1-9][0-9]*)", k):
            idx = max(idx, int(k))
    return str(idx + 1)


def parse_php_form(pairs: list[tuple[str, str]], max_input_vars: int | None = None) -> dict:
    """Decode (name, value) pairs into nested dicts the way PHP fills $_POST.

    PHP arrays become dicts with string keys (insertion ordered), so both
    ``values[0]=a`` and ``values[]=a`` give ``{"values": {"0": "a"}}``.
    """
    result: dict = {}
    count = 0
    for name, value in pairs:
        count += 1
        if max_input_vars is not None and count > max_input_vars:
            break
        base, parts = _php_key_parts(name)
        if not base:
            continue
        if not parts:
            result[base] = value
            continue
        node = result.get(base)
        if not isinstance(node, dict):
            node = {}
            result[base] = node
        for pos, seg in enumerate(parts):
            key = _next_index(node) if seg is None else seg
            if pos == len(parts) - 1:
                node[key] = value
            else:
                child = node.get(key)
                if not isinstance(child, dict):
                    child = {}
                    node[key] = child
                node = child
    return result


# ---------------------------------------------------------------------------
# clean_param() and the PHP conversions it relies on
# ---------------------------------------------------------------------------

_INT_PREFIX = re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_FLOAT_FORM = re.compile(r"^[+-]?[0-9]*\.?[0-9]*(e[-+]?[0-9]+)?$", re.I)
_EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
_TAG = re.compile(r"<[^>]*>?")


def strip_tags(s: str) -> str:
    return _TAG.sub("", s)


def php_intval(v: Any) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if math.isfinite(v) else 0
    m = _INT_PREFIX.match(str(v))
    if not m:
        return 0
    try:
        return int(float(m.group(0))) if (m.group(2) or m.group(3)) else int(m.group(0))
    except (ValueError, OverflowError):
        return 0


def php_is_numeric(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return True
    s = str(v).strip(" \t\n\r\v\f")
    return bool(re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", s))


def validate_email(address: str) -> bool:
    return bool(address) and bool(_EMAIL.match(address)) and not re.search(r"[<>]", address)


def clean_param(value: Any, ptype: str) -> Any:
    """clean_param() for the types the simulated functions use."""
    if ptype == "int":
        return php_intval(value)
    if ptype == "float":
        try:
            return float(value)
        except (TypeError, ValueError):
            return 0.0
    s = php_str(value)
    if ptype == "raw":
        return s
    if ptype in ("text", "notags"):
        return strip_tags(s)
    if ptype == "alpha":
        return re.sub(r"[^a-zA-Z]", "", s)
    if ptype == "alphanum":
        return re.sub(r"[^A-Za-z0-9]", "", s)
    if ptype == "alphanumext":
        return re.sub(r"[^A-Za-z0-9_-]", "", s)
    if ptype == "safedir":
        return re.sub(r"[^a-zA-Z0-9_-]", "", s)
    if ptype == "username":
        s = s.strip().lower().replace(" ", "")
        return re.sub(r"[^-.@_a-z0-9]", "", s)
    if ptype == "email":
        return s if validate_email(s) else ""
    if ptype == "plugin":
        return s if re.fullmatch(r"[a-z][a-z0-9_]*[a-z0-9]", s) and "__" not in s else ""
    if ptype == "component":
        ok = re.fullmatch(r"[a-z][a-z0-9]*(_[a-z][a-z0-9_]*)?[a-z0-9]+", s) and "__" not in s
        return s if ok else ""
    if ptype == "lang":
        return s if s in LANGS or s == "" else ""
    if ptype == "timezone":
        ok = re.fullmatch(r"([+-]?(0?[0-9](\.[50])?|1[0-3](\.0)?|1[0-2]\.5))|99|[A-Za-z0-9]+(/?[A-Za-z_-])+", s)
        return s if ok else ""
    return s


# ---------------------------------------------------------------------------
# Parameter descriptions and validation (external_api::validate_parameters)
# ---------------------------------------------------------------------------

REQUIRED, OPTIONAL, DEFAULT = 1, 2, 0


class Value:
    def __init__(self, ptype: str, required: int = REQUIRED, default: Any = None):
        self.type, self.required, self.default = ptype, required, default


class Single:
    def __init__(self, keys: dict, required: int = REQUIRED, default: Any = None):
        self.keys, self.required, self.default = keys, required, default


class Multiple:
    def __init__(self, content: Any, required: int = REQUIRED, default: Any = None):
        self.content, self.required, self.default = content, required, default


def opt(ptype: str) -> Value:
    """An optional external_value (VALUE_OPTIONAL, no default)."""
    return Value(ptype, OPTIONAL)


_CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]{0,17})")


def validate_value(desc: Value, value: Any) -> Any:
    t = type(value)
    if t is str:        # fast paths for the common cases (form fields, JSON strings)
        if desc.type == "raw":
            return value
        if desc.type == "int" and _CANONICAL_INT.fullmatch(value) and value != "-0":
            return int(value)
    elif t is int and desc.type == "int":
        return value
    if isinstance(value, (dict, list)):
        raise invalid_parameter("Scalar type expected, array or object received.")
    if desc.type == "bool":
        if isinstance(value, bool) or value in (0, 1) or value in ("0", "1"):
            return bool(int(value)) if not isinstance(value, bool) else value
    debuginfo = (f'Invalid external api parameter: the value is "{php_str(value)}", '
                 f'the server was expecting "{desc.type}" type')
    if value is None:
        return None            # NULL_ALLOWED is the default for external_value
    if desc.type == "bool":
        raise invalid_parameter(debuginfo)
    cleaned = clean_param(value, desc.type)
    if desc.type == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if not php_is_numeric(value) or not _FLOAT_FORM.match(php_str(value)):
            raise invalid_parameter(debuginfo)
        return cleaned
    if php_str(value) != php_str(cleaned):
        raise invalid_parameter(debuginfo)
    return cleaned


def _as_php_array(value: Any) -> Any:
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return value


def validate_parameters(desc: Value | Single | Multiple, params: Any) -> Any:
    if isinstance(desc, Value):
        return validate_value(desc, params)
    if isinstance(desc, Single):
        params = _as_php_array(params)
        if not isinstance(params, dict):
            raise invalid_parameter(f"Only arrays accepted. The bad value is: '{php_str(params)}'")
        params = dict(params)
        result = {}
        for key, sub in desc.keys.items():
            if key not in params:
                if sub.required == REQUIRED:
                    raise invalid_parameter(f"Missing required key in single structure: {key}")
                if sub.required == DEFAULT:
                    try:
                        result[key] = validate_parameters(sub, copy.deepcopy(sub.default))
                    except MoodleException as e:
                        raise invalid_parameter(f"{key} => {e.message}: {e.debuginfo}")
            else:
                try:
                    result[key] = validate_parameters(sub, params[key])
                except MoodleException as e:
                    raise invalid_parameter(f"{key} => {e.message}: {e.debuginfo}")
            params.pop(key, None)
        if params:
            raise invalid_parameter(f"Unexpected keys ({', '.join(params)}) detected in parameter array.")
        return result
    if isinstance(desc, Multiple):
        params = _as_php_array(params)
        if not isinstance(params, dict):
            raise invalid_parameter(f"Only arrays accepted. The bad value is: '{php_str(params)}'")
        return [validate_parameters(desc.content, v) for v in params.values()]
    raise TypeError(desc)


@dataclass(frozen=True)
class External:
    """An external function: execute_parameters() and execute(site, params, token user)."""
    params: Single
    execute: Callable[..., Any]
    has_returns: bool = True                       # False: execute_returns() is null (no XML body)
    xml_form: Callable[[Any], Any] | None = None   # the XML answer lists keys json_encode leaves out
    any_user: bool = False      # its checks for a token user other than the admin are simulated (access.py)


def external(execute: Callable[..., Any], keys: dict, **options: Any) -> External:
    return External(Single(keys), execute, **options)
