"""How the box is: disk, database, memory, CPU, clock, network, queue.

Gathered with psutil only (no shelling out), as one JSON-able dict for
``status --json``, the status API and the page. Each value that needs
attention gets an entry in ``warnings`` (field -> reason in words), which
the page shows as a red mark next to the value. A reading the board cannot
give (the call raises) is unknown: it is in ``unknown`` and ``warnings``
with the error, and the other readings go on.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Any, Callable, TypeVar

import psutil

from . import BUILD_DATE, network
from .store import settings
from .config import Config
from .store.db import Event, Run, iso, parse_iso, utcnow
from .clock import clock_is_sane
from .store.diskspace import disk_space
from .text import human_bytes

# Past these a value gets a red mark. A Raspberry Pi throttles at 80-85 °C.
HOT_CELSIUS = 80.0
MIN_MEMORY_AVAILABLE_PERCENT = 10.0
MAX_LOAD_PER_CPU = 2.0
MAX_CLOCK_OFFSET_S = 300.0
MAX_AGENT_RSS_BYTES = 200 * 1024 * 1024

# Where boards report the CPU: Raspberry Pi, Intel, AMD, generic ACPI.
CPU_SENSORS = ("cpu_thermal", "coretemp", "k10temp", "soc_thermal", "acpitz")


def cpu_temperature() -> float | None:
    """The CPU's temperature in °C, or None where the board reports none."""
    read = getattr(psutil, "sensors_temperatures", None)  # absent on some platforms
    if read is None:
        return None
    sensors = read() or {}
    names = [n for n in CPU_SENSORS if n in sensors] + [n for n in sensors if n not in CPU_SENSORS]
    for name in names:
        readings = [r.current for r in sensors[name] if r.current is not None]
        if readings:
            return round(max(readings), 1)
    return None


def database_bytes(path) -> dict[str, int]:
    def size(p) -> int:
        try:
            return os.path.getsize(p)
        except OSError:
            return 0

    file_bytes, wal_bytes = size(path), size(f"{path}-wal")
    return {"bytes": file_bytes + wal_bytes, "file_bytes": file_bytes, "wal_bytes": wal_bytes}


def _days(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:.0f} days" if days >= 2 else f"{seconds / 3600:.0f} hours"


def register_agent() -> None:
    """Called by the daemon as it starts: the page's workers and the CLI
    then report the daemon's memory, not their own."""
    me = psutil.Process()
    settings.put(agent_process=[me.pid, me.create_time()])


def agent_rss(config: Config) -> tuple[int | None, int | None]:
    """The daemon's pid and resident memory; (None, None) when it is not
    running (its start time tells it from a process that reused the pid)."""
    pid, started = settings.get(config, "agent_process") or (None, None)
    if pid is None:
        return None, None
    try:
        process = psutil.Process(pid)
        if process.create_time() != started:
            return None, None
        return pid, process.memory_info().rss
    except (psutil.NoSuchProcess, psutil.ZombieProcess, TypeError, ValueError):
        return None, None


def cpu_load() -> tuple[int, tuple[float, float, float]]:
    return psutil.cpu_count() or 1, psutil.getloadavg()


def last_offset_run() -> Run | None:
    """The latest run that measured the clock against the server's."""
    return (Run.select().where(Run.clock_offset_s.is_null(False))
            .order_by(Run.started_at.desc()).first())


def oldest_queued() -> str | None:
    oldest = Event.select(Event.queued_at).where(Event.status == Event.QUEUED).order_by(Event.id).first()
    return oldest.queued_at if oldest else None


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


T = TypeVar("T")


class Probes:
    """Every reading goes through read(): boards and kernels differ (under
    qemu-user, psutil.net_if_stats() fails with ENOSYS from an ioctl), so a
    reading that raises is unknown, with the reason in words, and the other
    readings go on."""

    def __init__(self) -> None:
        self.unknown: dict[str, str] = {}

    def read(self, name: str, probe: Callable[..., T], *args: Any) -> T | None:
        try:
            return probe(*args)
        except Exception as exc:  # whatever this board raises: that value is unknown, not the whole status
            self.unknown.setdefault(name, f"cannot be read on this box ({describe(exc)})")
            return None


def gather(config: Config, now: datetime | None = None) -> dict[str, Any]:
    """One snapshot of the box's health; never raises for a reading that
    fails. A value that could not be read is null (a section made only of
    such values is null itself), and ``unknown`` maps its row to the reason,
    which ``warnings`` carries too."""
    now = now or utcnow()
    probes = Probes()
    space = probes.read("disk", disk_space, config.agent.data_dir, config.agent)
    db_size = probes.read("database", database_bytes, config.agent.database)
    memory = probes.read("memory", psutil.virtual_memory)
    cpu = probes.read("cpu", cpu_load)
    temperature = probes.read("temperature", cpu_temperature)
    boot = probes.read("uptime", psutil.boot_time)
    up = probes.read("network", network.interfaces_up)
    offset_run = probes.read("clock", last_offset_run)
    oldest = probes.read("queue", oldest_queued)
    agent = probes.read("agent", agent_rss, config)

    warnings: dict[str, str] = {}
    if space is not None:
        free, minimum = human_bytes(space.free_bytes), human_bytes(space.min_free_bytes)
        if space.full:
            warnings["disk"] = f"only {free} free, under the {minimum} that must stay free: new events are refused"
        elif space.free_bytes < 2 * space.min_free_bytes:
            warnings["disk"] = f"only {free} free: new events will be refused under {minimum}"

    available_percent = None
    if memory is not None:
        available_percent = 100.0 * memory.available / memory.total if memory.total else 0.0
        if available_percent < MIN_MEMORY_AVAILABLE_PERCENT:
            warnings["memory"] = f"only {available_percent:.0f} % of the memory is free"

    if cpu is not None:
        cores, load = cpu
        if load[1] / cores > MAX_LOAD_PER_CPU:
            warnings["cpu"] = f"the CPU is overloaded (load {load[1]:.1f} on {cores} cores)"
    if temperature is not None and temperature >= HOT_CELSIUS:
        warnings["temperature"] = f"the CPU is hot ({temperature:.0f} °C): the board slows down to cool"

    if up is not None and not up:
        warnings["network"] = "no network interface is up (cable out or Wi-Fi off?)"

    sane = clock_is_sane(now)
    offset = offset_run.clock_offset_s if offset_run else None
    if not sane:
        warnings["clock"] = (f"the clock reads {iso(now)}, before this release was built ({BUILD_DATE}): "
                             "it has not been set since the box started")
    elif offset is not None and abs(offset) > MAX_CLOCK_OFFSET_S:
        warnings["clock"] = f"the clock was {abs(offset) / 60:.0f} minutes off the server's at the last sync"

    oldest_at = parse_iso(oldest)
    oldest_age = max(0.0, (now - oldest_at).total_seconds()) if oldest_at else None
    if oldest_age is not None and oldest_age > config.web.stale_days * 86400:
        warnings["queue"] = f"the oldest queued event has waited {_days(oldest_age)} for a sync"

    pid, rss = agent if agent is not None else (None, None)
    if rss is not None and rss > MAX_AGENT_RSS_BYTES:
        warnings["agent"] = f"the agent uses {human_bytes(rss)} of memory"

    warnings.update(probes.unknown)
    return {
        "disk": None if space is None else {
            "path": space.path, "total_bytes": space.total_bytes, "free_bytes": space.free_bytes,
            "free_percent": round(space.free_percent, 1), "min_free_bytes": space.min_free_bytes,
            "full": space.full},
        "database": db_size,
        "memory": None if memory is None else {
            "total_bytes": memory.total, "available_bytes": memory.available,
            "available_percent": round(available_percent or 0.0, 1)},
        "cpu": {"count": cpu[0] if cpu else None, "load": [round(x, 2) for x in cpu[1]] if cpu else None,
                "temperature_c": temperature},
        "uptime_s": None if boot is None else round(max(0.0, time.time() - boot)),
        "network": None if up is None else {"interfaces_up": up},
        "clock": {"now": iso(now), "sane": sane, "build_date": BUILD_DATE, "offset_s": offset,
                  "offset_measured_at": offset_run.started_at if offset_run else None},
        "queue": None if "queue" in probes.unknown else {
            "oldest_queued_at": oldest, "oldest_age_s": round(oldest_age) if oldest_age is not None else None},
        "agent": None if agent is None else {"pid": pid, "rss_bytes": rss},
        "unknown": probes.unknown,
        "warnings": warnings,
    }
