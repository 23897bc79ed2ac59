"""What a token's account may do, judged from Moodle's site info: for ``check``, ``connect`` and the page.

Pure functions: the caller gives the site info its connection parsed
(agent/moodle/connection.py SiteInfo: the service's functions, whether the
account is a site administrator), the functions the enabled features
need and every function the agent calls on that site; the judgement says
what to do about an administrator's token, a service wider than the agent
needs, a missing function, and which optional features are off.

The least-rights set-up (packaging/moodle/, README "A stolen box") leaves one
right optional: ``moodle/user:update``. It lets the token change the
password of any account that is not an administrator's, so a school may
withhold it; the agent then keeps working without sending updates of
existing accounts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

from .kinds import UPDATE_USERS


class SiteInfo(Protocol):
    """What the judgement reads of agent/moodle/connection.py's SiteInfo (not
    imported: the page loads this module, and must not load the wire)."""

    @property
    def functions(self) -> frozenset[str]: ...
    @property
    def username(self) -> str | None: ...
    @property
    def is_site_admin(self) -> bool: ...

EXTERNAL_SERVICES = "Site administration > Server > Web services > External services"
MANAGE_TOKENS = "Site administration > Server > Web services > Manage tokens"


@dataclass(frozen=True)
class OptionalRight:
    function: str
    capability: str
    off: str  # what the agent leaves out without it


# The settings (agent/store/settings.py) holding what check found of each side's token's
# rights, for the page; and the optional functions the server refused at a run.
RIGHTS_KEY = {"server": "server_rights", "box": "box_rights"}
REFUSED_KEY = "rights_refused"

OPTIONAL_RIGHTS: dict[str, OptionalRight] = {r.function: r for r in (
    OptionalRight(UPDATE_USERS, "moodle/user:update",
                  "updates of accounts that already exist on the server (names, e-mail addresses and "
                  "passwords changed on the box)"),
)}


def off_line(right: OptionalRight, why: str) -> str:
    """The one line that says an optional feature is off, and why."""
    return (f"off: {right.off}: {why}; it needs the optional right {right.capability} "
            f"(README: \"A stolen box\")")


def off_missing(right: OptionalRight) -> str:
    return off_line(right, f"the service lacks {right.function}")


def off_refused(right: OptionalRight) -> str:
    return off_line(right, f"the account lacks {right.capability}")


@dataclass
class Judgement:
    username: str = ""
    site_admin: bool = False
    missing: list[str] = field(default_factory=list)    # needed by the enabled features, not in the service
    unused: list[str] = field(default_factory=list)     # in the service, never called by the agent
    off: list[str] = field(default_factory=list)        # one line per optional feature switched off
    off_functions: list[str] = field(default_factory=list)  # their functions (the page says them in its language)
    warnings: list[str] = field(default_factory=list)   # each with what to do

    def as_dict(self) -> dict[str, Any]:
        return {"username": self.username, "site_admin": self.site_admin, "missing_functions": self.missing,
                "unused_functions": self.unused, "off": self.off, "off_functions": self.off_functions,
                "warnings": self.warnings}


def judge(info: SiteInfo, needed: Iterable[str], used: Iterable[str], *, side: str = "server",
          service: str = "moodle_sync_agent", refused: Iterable[str] = ()) -> Judgement:
    """Judge one site's token from its site info.

    ``needed``: the functions the enabled features call (an optional right's
    function among them is reported as off, not missing); ``used``: every
    function the agent may call on this site; ``refused``: optional
    functions the last sync found refused for lack of the capability."""
    have = set(info.functions)
    used = set(used)
    j = Judgement(username=info.username or "", site_admin=info.is_site_admin)
    command = f"moodle-sync-agent connect {side} URL --user NAME"
    if j.site_admin:
        j.warnings.append(
            f"the token belongs to {j.username or 'an account'}, a site administrator: whoever takes this box "
            f"holds the whole Moodle. Give a dedicated account the role presets of packaging/moodle/ "
            f"(README: \"Connecting a box\"), run {command} with it, then delete this token in {MANAGE_TOKENS}")
    for name in dict.fromkeys(needed):
        right = OPTIONAL_RIGHTS.get(name)
        if name in have and right is not None and name in refused:
            j.off.append(off_refused(right))
            j.off_functions.append(name)
        elif name in have:
            continue
        elif right is not None:
            j.off.append(off_missing(right))
            j.off_functions.append(name)
        else:
            j.missing.append(name)
    if j.missing:
        j.warnings.append(f"the service lacks {', '.join(j.missing)}: add them to the service {service!r} in "
                          f"{EXTERNAL_SERVICES} > Functions")
    j.unused = sorted(have - used)
    if j.unused:
        shown = ", ".join(j.unused[:8]) + (f" and {len(j.unused) - 8} more" if len(j.unused) > 8 else "")
        j.warnings.append(f"the service gives the token functions the agent never calls: {shown}: "
                          f"remove them from the service {service!r} in {EXTERNAL_SERVICES} > Functions")
    return j
