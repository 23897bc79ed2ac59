"""Is the wall clock plausible? A box without an RTC boots in 1970 (or at
its last shutdown) until a time server answers."""

from __future__ import annotations

from datetime import datetime, timezone

from . import BUILD_DATE

_BUILT = datetime.fromisoformat(BUILD_DATE).replace(tzinfo=timezone.utc)


def clock_is_sane(now: datetime | None = None) -> bool:
    """A clock earlier than this release's build date cannot be right."""
    return (now or datetime.now(timezone.utc)) >= _BUILT
