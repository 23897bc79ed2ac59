"""moodle-sync-agent: store-and-forward sync of learner progress to Moodle."""

__version__ = "0.1.0"

# A clock earlier than this cannot be right: the box booted without an RTC
# and has not reached a time server yet. Bumped with each release.
BUILD_DATE = "2026-11-01"
