"""Log lines for the journal: one line per record (journald shows a
traceback's lines as separate entries otherwise), systemd's <priority>
prefix when stderr is the journal, and every secret of the config masked.
Used by the CLI, the daemon and its worker processes alike."""

from __future__ import annotations

import logging
import os
import stat
import sys

from .config import Config

PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class LineFormatter(logging.Formatter):
    """One line per record (journald shows a traceback's lines as separate
    entries otherwise), with systemd's <priority> prefix when stderr is the
    journal, and every secret of the config masked."""

    def __init__(self, secrets: list[str], journal: bool):
        super().__init__("%(name)s: %(message)s" if journal else "%(levelname)s %(name)s: %(message)s")
        self.secrets = [s for s in secrets if s]
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self.secrets:
            text = text.replace(secret, "[hidden]")
        text = text.replace("\r", "").replace("\n", " | ")
        return f"<{PRIORITY.get(record.levelno, 6)}>{text}" if self.journal else text


def stderr_is_journal() -> bool:
    """systemd sets JOURNAL_STREAM to the device:inode of the journal stream."""
    try:
        device, inode = (int(x) for x in os.environ.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == (device, inode)


def configure_logging(config: Config) -> None:
    secrets = [config.moodle.token, config.smtp.password, config.web.api_key]
    formatter = LineFormatter([s for s in secrets if s], stderr_is_journal())
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for handler in root.handlers:
        handler.setFormatter(formatter)
