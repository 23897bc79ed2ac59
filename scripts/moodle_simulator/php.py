"""PHP's ways of printing values: json_encode, (string) casts, var_export, htmlspecialchars.

Moodle's answers are made by PHP, so the simulator prints values as PHP
would, byte for byte (the recordings are compared that way).
"""

from __future__ import annotations

import json
import math
from typing import Any


def php_json_encode(value: Any) -> str:
    """json_encode() as PHP does it: compact, ASCII only, '/' escaped."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/")


def phpnum(x: Any) -> Any:
    """A float as PHP's json_encode prints it (100.0 -> 100, 87.5 -> 87.5)."""
    if isinstance(x, float) and math.isfinite(x) and x.is_integer() and abs(x) < 1e15:
        return int(x)
    return x


def php_str(value: Any) -> str:
    """(string)$value in PHP (floats with the default precision of 14 digits)."""
    if value is True:
        return "1"
    if value is False or value is None:
        return ""
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        r = f"{value:.14G}"
        if "E" in r:            # PHP: 1.0E+25, 1.0E-5
            mant, exp = r.split("E")
            if "." not in mant:
                mant += ".0"
            r = f"{mant}E{exp[0]}{exp[1:].lstrip('0')}"
        return r
    return str(value)


def htmlspecialchars(s: str) -> str:
    return (s.replace("&", "&amp;").replace('"', "&quot;")
            .replace("<", "&lt;").replace(">", "&gt;"))


def format_float(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


def var_export_list(params: list) -> str:
    """var_export() of a list, as Moodle's DML errors quote their parameters."""
    lines = []
    for i, p in enumerate(params):
        if isinstance(p, str):
            v = "'" + p.replace("\\", "\\\\").replace("'", "\\'") + "'"
        elif p is None:
            v = "NULL"
        elif isinstance(p, bool):
            v = "true" if p else "false"
        else:
            v = php_str(p)
        lines.append(f"  {i} => {v},\n")
    return "array (\n" + "".join(lines) + ")"
