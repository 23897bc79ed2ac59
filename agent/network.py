"""Is there any network at all? Asked of the kernel through psutil, so that
a box with its cable out answers "no network" at once instead of waiting
for a connection time-out."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlparse

import psutil


def _is_loopback_interface(name: str, stats) -> bool:
    # psutil >= 5.9.3 reports the kernel's flags; the name covers older ones.
    flags = (getattr(stats, "flags", "") or "").split(",")
    return "loopback" in flags or name == "lo" or (name.startswith("lo") and name[2:].isdigit())


def interfaces_up() -> list[str]:
    """Names of the interfaces that are up, loopback left out, sorted."""
    return sorted(name for name, stats in psutil.net_if_stats().items()
                  if stats.isup and not _is_loopback_interface(name, stats))


def surely_offline() -> bool:
    """True only when the kernel says that no interface but loopback is up.
    A kernel that cannot say (qemu-user does not emulate the network card's
    ioctl) proves nothing: the connection attempt decides."""
    try:
        return not interfaces_up()
    except OSError:
        return False


def is_loopback_url(url: str) -> bool:
    """Does the address point at this machine? Decided from the text alone:
    resolving a name would wait on DNS, the very thing we avoid."""
    host = (urlparse(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
