"""How the box is: disk, database, memory, CPU, clock, network, queue.

Gathered with psutil only (no shelling out), as one JSON-able dict for
``status --json``, the status API and the page. Each value that needs
attention gets an entry in ``warnings`` (field -> reason in words), which
the page shows as a red mark next to the value.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Any

import psutil

from . import BUILD_DATE, network, settings
from .config import Config
from .db import Event, SyncRun, iso, parse_iso, utcnow
from .clock import clock_is_sane
from .storage import disk_space
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
    try:
        sensors = read() or {}
    except (OSError, RuntimeError):
        return None
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
    try:
        process = psutil.Process(pid)
        if process.create_time() != started:
            return None, None
        return pid, process.memory_info().rss
    except (psutil.Error, TypeError, ValueError):
        return None, None


def gather(config: Config, now: datetime | None = None) -> dict[str, Any]:
    """One snapshot of the box's health; never raises for a missing sensor."""
    now = now or utcnow()
    warnings: dict[str, str] = {}

    space = disk_space(config.agent.data_dir, config.agent)
    free, minimum = human_bytes(space.free_bytes), human_bytes(space.min_free_bytes)
    if space.full:
        warnings["disk"] = f"only {free} free, under the {minimum} that must stay free: new events are refused"
    elif space.free_bytes < 2 * space.min_free_bytes:
        warnings["disk"] = f"only {free} free: new events will be refused under {minimum}"

    memory = psutil.virtual_memory()
    available_percent = 100.0 * memory.available / memory.total if memory.total else 0.0
    if available_percent < MIN_MEMORY_AVAILABLE_PERCENT:
        warnings["memory"] = f"only {available_percent:.0f} % of the memory is free"

    cpu_count = psutil.cpu_count() or 1
    load = psutil.getloadavg()
    if load[1] / cpu_count > MAX_LOAD_PER_CPU:
        warnings["cpu"] = f"the CPU is overloaded (load {load[1]:.1f} on {cpu_count} cores)"
    temperature = cpu_temperature()
    if temperature is not None and temperature >= HOT_CELSIUS:
        warnings["temperature"] = f"the CPU is hot ({temperature:.0f} °C): the board slows down to cool"

    up = network.interfaces_up()
    if not up:
        warnings["network"] = "no network interface is up (cable out or Wi-Fi off?)"

    sane = clock_is_sane(now)
    last = (SyncRun.select().where(SyncRun.clock_offset_s.is_null(False))
            .order_by(SyncRun.started_at.desc()).first())
    offset = last.clock_offset_s if last else None
    if not sane:
        warnings["clock"] = (f"the clock reads {iso(now)}, before this release was built ({BUILD_DATE}): "
                             "it has not been set since the box started")
    elif offset is not None and abs(offset) > MAX_CLOCK_OFFSET_S:
        warnings["clock"] = f"the clock was {abs(offset) / 60:.0f} minutes off the server's at the last sync"

    oldest = Event.select(Event.queued_at).where(Event.status == Event.QUEUED).order_by(Event.id).first()
    oldest_age = max(0.0, (now - parse_iso(oldest.queued_at)).total_seconds()) if oldest else None
    if oldest_age is not None and oldest_age > config.web.stale_days * 86400:
        warnings["queue"] = f"the oldest queued event has waited {_days(oldest_age)} for a sync"

    pid, rss = agent_rss(config)
    if rss is not None and rss > MAX_AGENT_RSS_BYTES:
        warnings["agent"] = f"the agent uses {human_bytes(rss)} of memory"

    boot = psutil.boot_time()
    return {
        "disk": {"path": space.path, "total_bytes": space.total_bytes, "free_bytes": space.free_bytes,
                 "free_percent": round(space.free_percent, 1), "min_free_bytes": space.min_free_bytes,
                 "full": space.full},
        "database": database_bytes(config.agent.database),
        "memory": {"total_bytes": memory.total, "available_bytes": memory.available,
                   "available_percent": round(available_percent, 1)},
        "cpu": {"count": cpu_count, "load": [round(x, 2) for x in load], "temperature_c": temperature},
        "uptime_s": round(max(0.0, time.time() - boot)),
        "network": {"interfaces_up": up},
        "clock": {"now": iso(now), "sane": sane, "build_date": BUILD_DATE, "offset_s": offset,
                  "offset_measured_at": last.started_at if last else None},
        "queue": {"oldest_queued_at": oldest.queued_at if oldest else None,
                  "oldest_age_s": round(oldest_age) if oldest_age is not None else None},
        "agent": {"pid": pid, "rss_bytes": rss},
        "warnings": warnings,
    }
