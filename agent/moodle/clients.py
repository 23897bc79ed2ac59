"""The connections a run makes, made one way: to the server ([moodle]) or
the box's own Moodle ([box]), each carrying up to [agent] batch_size calls a
request. The sync, the verify, the daemon's worker, the collection and the
learners' operations all connect through here."""

from __future__ import annotations

import threading

from ..config import Config
from .connection import MoodleClient
from .transport import Site


def connect_to(site: Site, config: Config, stop: threading.Event | None = None) -> MoodleClient:
    return MoodleClient(site, max_batch=config.agent.batch_size, stop=stop)


def connect(config: Config, stop: threading.Event | None = None) -> MoodleClient:
    """The server's connection for one run."""
    return connect_to(config.moodle, config, stop)


def connect_box(config: Config, stop: threading.Event | None = None) -> MoodleClient | None:
    """The box's Moodle's connection for one run; None without [box]."""
    return None if config.box is None else connect_to(config.box, config, stop)
