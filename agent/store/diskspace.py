"""Free space on the data directory's filesystem, and the budget that keeps
the SD card from filling up: below it, new events are refused."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psutil

from ..config import AgentConfig, Config
from ..text import error_words, human_bytes


class DiskProbeError(OSError):
    """The free space could not be read: the budget cannot be checked."""

    def __init__(self, path: Path, error: BaseException):
        super().__init__(f"cannot read the free space of {path}: {error_words(error)}")


@dataclass(frozen=True)
class DiskSpace:
    path: str
    total_bytes: int
    free_bytes: int
    min_free_bytes: int  # the budget: below it, new events are refused

    @property
    def free_percent(self) -> float:
        return 100.0 * self.free_bytes / self.total_bytes if self.total_bytes else 0.0

    @property
    def full(self) -> bool:
        return self.free_bytes < self.min_free_bytes

    def shortage(self) -> str:
        return (f"storage is full: {human_bytes(self.free_bytes)} free on {self.path}, "
                f"{human_bytes(self.min_free_bytes)} must stay free")


def _existing(path: Path) -> Path:
    # The data directory may not exist yet on a fresh box: ask its parent.
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_space(directory: str | os.PathLike, agent: AgentConfig) -> DiskSpace:
    """Free space for unprivileged writers (what the agent can really use)."""
    path = _existing(Path(directory))
    usage = psutil.disk_usage(str(path))
    minimum = max(int(usage.total * agent.min_free_percent / 100), agent.min_free_mb * 1024 * 1024)
    return DiskSpace(path=str(path), total_bytes=usage.total, free_bytes=usage.free, min_free_bytes=minimum)


def probed_disk_space(directory: str | os.PathLike, agent: AgentConfig) -> DiskSpace:
    """disk_space for a writer that needs the answer: a probe that fails
    (psutil, or the kernel: ENOSYS under qemu-user) is a DiskProbeError
    naming the probe and the directory, whatever the error said (OSError()
    says nothing)."""
    try:
        return disk_space(directory, agent)
    except Exception as exc:
        raise DiskProbeError(_existing(Path(directory)), exc) from exc


def database_problem(config: Config, error: BaseException) -> str:
    """One line for a database that failed, naming a full disk when it is one."""
    text = f"database {config.agent.database}: {error_words(error)}"
    try:
        space = probed_disk_space(config.agent.data_dir, config.agent)
    except DiskProbeError:
        return text  # the database's own error is what failed
    if space.full:
        text += f"; {space.shortage()}: free some space (queued events are kept)"
    return text


# Space set aside next to the database so that a sync cut off by a full disk
# can still write its end into the history: SQLite needs a few free pages for
# its WAL, and a full disk has none.
RESERVE_BYTES = 256 * 1024


def reserve_path(config: Config) -> Path:
    return config.agent.database.with_name(config.agent.database.name + ".reserve")


def keep_reserve(config: Config) -> None:
    """Create the reserve if it is missing and there is room for it."""
    path = reserve_path(config)
    if path.exists() and path.stat().st_size >= RESERVE_BYTES:
        return
    try:
        with open(path, "wb") as fh:
            fh.write(b"\0" * RESERVE_BYTES)
            fh.flush()
            os.fsync(fh.fileno())  # really on the card, not a promise in the page cache
    except OSError:
        path.unlink(missing_ok=True)


def release_reserve(config: Config) -> bool:
    """Free the reserve; False if there was none to free."""
    try:
        reserve_path(config).unlink()
    except FileNotFoundError:
        return False
    return True
