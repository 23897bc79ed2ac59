"""What a collection's run says: its row and what it found (for a sync's
Information dialog), its findings in words, and what ends it, in the box's
words (the common sentences speak of the server)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..kinds import found_counters
from ..moodle import MoodleError, TokenRejected, Unreachable
from ..store.db import Run
from ..store.queue import StorageFull
from ..store.status import box_answered

FOUND_KINDS = found_counters()


class NoBox(Exception):
    def __init__(self, config: Config):
        super().__init__(f"{config.path}: [box] url is not set: there is no box's Moodle to collect from")


@dataclass
class CollectionRun:
    """A collection's history row, and whether the box's Moodle answered."""

    row: Run
    unreachable: str | None = None

    @property
    def found(self) -> dict[str, int]:
        actions = self.row.actions or {}
        return {kind: int(actions.get(kind, 0)) for kind in FOUND_KINDS}

    def summary(self) -> dict[str, Any]:
        """What a sync's row keeps of it, for the Information dialog."""
        return {"run": self.row.id, "status": self.row.status, **self.found, "errors": list(self.row.errors or [])}


def found_words(found: Counter) -> str:
    words = [f"{found[kind]} {kind}" for kind in FOUND_KINDS if found[kind]]
    return ("queued " + ", ".join(words)) if words else "nothing new"


def box_failure(exc: BaseException) -> tuple[str, str] | None:
    """What ends a collection, in the box's words (the common sentences speak of the server)."""
    if isinstance(exc, TokenRejected):
        return Run.FAILED, "the box's Moodle rejected its token ([box] token_file)"
    if isinstance(exc, Unreachable):
        box_answered(False)
        return Run.FAILED, (f"the box's Moodle stopped answering: {exc.reason}; "
                                "the courses collected before are kept")
    if isinstance(exc, MoodleError):
        return Run.FAILED, f"the box's Moodle refused a request: {exc}"
    if isinstance(exc, StorageFull):
        return Run.FAILED, f"{exc.problem}: nothing more was collected"
    return None
