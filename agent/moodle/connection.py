"""One connection to one Moodle (the school's, or the box's own) for one run:
what its token's service offers, read once and shared, and every way a run
sends calls to it.

Facts from the recordings that shape this module: the site info
(core_webservice_get_site_info) lists the functions of the token's
service; ``tool_mobile_call_external_functions`` runs several calls in one
request, answers with JSON *strings* inside JSON, and stops at the first
failing call: the answer holds the results up to and including it, and
nothing after. A 503 or a 429 may carry Retry-After.

This is the only module that builds a batch or reads the site info: the
sync, the collection, the way down, verify, ``check`` and the daemon's
worker all go through :class:`MoodleClient`.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from .. import network
from ..kinds import SITE_INFO
from ..interrupt import Interrupted
from .transport import CallResult, MoodleError, Site, TokenRejected, Traffic, Transport, Unreachable, _error

log = logging.getLogger(__name__)

BATCH_FUNCTION = "tool_mobile_call_external_functions"

# A Retry-After longer than this ends the run instead; the next run resumes.
MAX_RETRY_WAIT_S = 120.0
MAX_RETRIES = 3

Calls = Sequence[tuple[str, dict[str, Any]]]


@dataclass(frozen=True)
class SiteInfo:
    """What the site info says of the site and of the token's service."""

    site_name: str
    site_url: str | None
    release: str | None
    username: str | None
    userid: int | None
    is_site_admin: bool  # the token's user; a later check (accounts, passwords) needs it
    functions: frozenset[str] = field(default_factory=frozenset)

    @property
    def can_batch(self) -> bool:
        return BATCH_FUNCTION in self.functions

    def lacking(self, wanted: Sequence[str]) -> list[str]:
        """The wanted functions the token's service does not offer, in order."""
        return [f for f in wanted if f not in self.functions]


def parse_site_info(info: Any) -> SiteInfo:
    if not isinstance(info, dict) or "sitename" not in info:
        raise Unreachable("the server's site info does not look like Moodle's", "bad_answer")
    functions = frozenset(str(f.get("name")) for f in info.get("functions") or [] if isinstance(f, dict))
    userid = info.get("userid")
    return SiteInfo(site_name=str(info.get("sitename")), site_url=_text(info.get("siteurl")),
                    release=_text(info.get("release")), username=_text(info.get("username")),
                    userid=int(userid) if isinstance(userid, int) else None,
                    is_site_admin=info.get("userissiteadmin") is True, functions=functions)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class MoodleClient(Transport):
    """One run's connection to one Moodle. ``max_batch``: the calls a request
    may carry ([agent] batch_size); one each when the service cannot batch.
    ``stop``: set, a wait for Retry-After ends the run at once."""

    def __init__(self, config: Site, session: Any = None, *, max_batch: int = 1,
                 stop: threading.Event | None = None):
        super().__init__(config, session)
        self.max_batch = max_batch
        self.stop = stop or threading.Event()
        self._info: SiteInfo | None = None
        self._failed: Exception | None = None

    # -- what the site offers --------------------------------------------------

    def site_info(self) -> SiteInfo:
        """The online check, once per connection: later callers share its
        answer (or its failure: a run asks each Moodle once)."""
        if self._info is not None:
            return self._info
        if self._failed is not None:
            raise self._failed
        try:
            if not network.is_loopback_url(self.config.url) and network.surely_offline():
                raise Unreachable("no network interface is up", "no_network")
            self._info = parse_site_info(Transport.call(self, SITE_INFO))
        except (Unreachable, MoodleError) as exc:
            self._failed = exc
            raise
        return self._info

    @property
    def batch_size(self) -> int:
        """Calls per request: one each when the service cannot batch."""
        info = self._info
        return self.max_batch if info is not None and info.can_batch else 1

    def meter(self) -> Traffic:
        """A new traffic counter from now on (the box's connection is counted
        by the collection, then by the way down): returns it."""
        self.traffic = Traffic()
        return self.traffic

    # -- sending -----------------------------------------------------------------

    def call(self, function: str, params: dict[str, Any] | None = None) -> Any:
        """One function, in a request of its own, retried when the server asks to."""
        return self._retried(lambda: Transport.call(self, function, params))

    def batch(self, calls: Calls) -> list[CallResult]:
        """Several calls in one request (no retry): the results up to and
        including the first failing call."""
        requests_param = [
            {"function": fn, "arguments": json.dumps(args, separators=(",", ":"))} for fn, args in calls
        ]
        answer = Transport.call(self, BATCH_FUNCTION, {"requests": requests_param})
        responses = answer.get("responses") if isinstance(answer, dict) else None
        if not isinstance(responses, list) or len(responses) > len(calls):
            raise Unreachable("the batch answer does not have Moodle's shape", "bad_answer")
        self.traffic.calls += len(responses) - 1
        results = []
        for (fn, _), item in zip(calls, responses):
            if item.get("error"):
                try:
                    exc = json.loads(item.get("exception") or "{}")
                except json.JSONDecodeError:
                    exc = {}
                results.append(CallResult(False, error=_error(exc, fn)))
            else:
                try:
                    data = json.loads(item["data"]) if item.get("data") is not None else None
                except (json.JSONDecodeError, TypeError):
                    raise Unreachable("a batch entry's data is not valid JSON", "bad_answer") from None
                results.append(CallResult(True, data=data))
        if not results:
            raise Unreachable("the Moodle answered an empty batch", "bad_answer")
        return results

    def send(self, calls: Calls) -> list[CallResult]:
        """One request for up to ``batch_size`` of the calls, retried when the
        server asks to; the results of its first calls: at least one, all of
        them unless one failed (Moodle stops a batch at its first error).
        An error of one call is its result; a rejected token is raised."""
        chunk = list(calls[:self.batch_size])
        if len(chunk) == 1:  # no batch around a single call
            function, args = chunk[0]
            try:
                return [CallResult(True, data=self.call(function, args))]
            except TokenRejected:
                raise
            except MoodleError as exc:
                return [CallResult(False, error=exc)]
        return self._retried(lambda: self.batch(chunk))

    def answers(self, calls: Calls) -> Iterator[list[CallResult]]:
        """Every call sent, request after request: each request's results,
        for the caller to settle before the next one goes. The calls after
        a failing one go in the next request."""
        pending = list(calls)
        while pending:
            if self.stop.is_set():
                raise Interrupted()
            results = self.send(pending)
            yield results
            pending = pending[len(results):]

    def read_all(self, calls: Calls) -> list[CallResult]:
        """Every call's result, in order."""
        return [result for results in self.answers(calls) for result in results]

    def _retried(self, send: Any) -> Any:
        for attempt in range(MAX_RETRIES + 1):
            try:
                return send()
            except Unreachable as exc:
                wait = exc.retry_after
                if wait is None or wait > MAX_RETRY_WAIT_S or attempt == MAX_RETRIES:
                    raise
                log.info("%s asked to retry after %.0f s (%s)", self.config.url, wait, exc.reason)
                if self.stop.wait(wait):
                    raise Interrupted() from None
        raise AssertionError("unreachable")
