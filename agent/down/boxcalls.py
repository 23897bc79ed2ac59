"""The way down's calls to the box's Moodle, their failures told apart from
the server's: the server rejecting its token or going away ends the run; the
box's Moodle doing so stops only the way down (agent/down/pull.py), the push
goes on. The courses' way down and the profiles' (agent/down/profiles.py)
both call the box through here."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from ..moodle import CallResult, MoodleClient, TokenRejected, Unreachable


class BoxTokenRejected(Exception):
    """The box's Moodle rejected its token (not the server's: that ends the run)."""


class BoxUnreachable(Exception):
    """The box's Moodle stopped answering (not the server: that ends the run)."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


@contextmanager
def the_box() -> Iterator[None]:
    """Around calls to the box's Moodle: its token rejected or its silence in the box's own words."""
    try:
        yield
    except TokenRejected:
        raise BoxTokenRejected() from None
    except Unreachable as exc:
        raise BoxUnreachable(exc.reason) from None


def box_call(box: MoodleClient, function: str, args: dict[str, Any]) -> Any:
    with the_box():
        return box.call(function, args)


def box_read_all(box: MoodleClient, calls: list[tuple[str, dict[str, Any]]]) -> list[CallResult]:
    with the_box():
        return box.read_all(calls)
