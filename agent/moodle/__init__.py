"""Moodle's web services: the HTTP transport (transport.py) and one run's
connection to one Moodle (connection.py: site info, batches, retries)."""

from .connection import BATCH_FUNCTION, SITE_INFO, MoodleClient, SiteInfo
from .transport import CallResult, MoodleError, Site, TokenRejected, Traffic, Unreachable, encode_params

__all__ = ["BATCH_FUNCTION", "SITE_INFO", "CallResult", "MoodleClient", "MoodleError", "Site", "SiteInfo",
           "TokenRejected", "Traffic", "Unreachable", "encode_params"]
