"""Numbers as a person reads them, for the CLI, the page and e-mail."""

from __future__ import annotations


def human_bytes(n: int | float | None) -> str:
    n = n or 0
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
