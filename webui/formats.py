"""Numbers, sizes and durations as the page's language writes them: a decimal
comma in French and German, French units for bytes (o, ko, Mo, Go), a
no-break space between a number and its unit. The page's template filters;
the command line and the e-mail keep agent/text.py's English forms."""

from __future__ import annotations

from flask import g

from agent.text import human_bytes

NBSP = "\u00a0"
DECIMAL = {"en": ".", "fr": ",", "de": ","}
BYTE_UNITS: dict[str, tuple[str, str, str, str]] = {"fr": ("o", "ko", "Mo", "Go")}
DEFAULT_UNITS = ("B", "KB", "MB", "GB")


def _lang(lang: str | None) -> str:
    return lang or g.get("lang", "en")


def number(value: float | int | None, digits: int = 0, lang: str | None = None) -> str:
    """A number with the language's decimal mark (no grouping: these are small)."""
    if value is None:
        return "—"
    text = f"{value:.{digits}f}"
    return text.replace(".", DECIMAL.get(_lang(lang), "."))


def size(n: int | float | None, lang: str | None = None) -> str:
    """Bytes in B/KB/MB/GB (1024 steps): agent.text.human_bytes in the page's language."""
    lang = _lang(lang)
    return human_bytes(n, BYTE_UNITS.get(lang, DEFAULT_UNITS), DECIMAL.get(lang, "."), NBSP)


def duration(seconds: float | None, lang: str | None = None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{number(seconds, 2, lang)}{NBSP}s"
    if seconds < 60:
        return f"{number(seconds, 1, lang)}{NBSP}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}{NBSP}min {secs:02d}{NBSP}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}{NBSP}h {minutes:02d}{NBSP}min"
