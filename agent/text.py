"""Numbers and errors as a person reads them, for the CLI, the page and e-mail."""

from __future__ import annotations


def warnings_words(answer: object) -> str | None:
    """The warnings of a Moodle answer (core_user_update_users says its
    refusals so: nothing was changed) in Moodle's words, "message (code)"
    joined by "; "; None when it has none."""
    warnings = answer.get("warnings") if isinstance(answer, dict) else None
    if not warnings or not isinstance(warnings, list):
        return None
    return "; ".join(f"{w.get('message') or 'warning'} ({w.get('warningcode') or '?'})" if isinstance(w, dict)
                     else str(w) for w in warnings)


def error_words(exc: BaseException) -> str:
    """An exception in words, never empty nor "None": an OSError's file and
    reason, else its text, else its class (OSError() has neither)."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    text = str(exc).strip()
    if text and text != "None":
        return text
    return f"{type(exc).__name__} (no reason given)"


def human_bytes(n: int | float | None, units: tuple[str, str, str, str] = ("B", "KB", "MB", "GB"),
                decimal: str = ".", space: str = " ") -> str:
    """Bytes in 1024 steps; the page gives its language's units, decimal mark
    and a no-break space (webui/formats.py)."""
    n = n or 0
    for unit in units[:3]:
        if n < 1024:
            return f"{n:.0f}{space}{unit}" if unit == units[0] else f"{n:.1f}".replace(".", decimal) + f"{space}{unit}"
        n /= 1024
    return f"{n:.1f}".replace(".", decimal) + f"{space}{units[3]}"
