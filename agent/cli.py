"""The ``moodle-sync-agent`` command line."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moodle-sync-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"moodle-sync-agent {__version__}")
    parser.add_argument("--config", metavar="PATH", help="INI file (default: $MOODLE_SYNC_AGENT_CONFIG, else /etc/moodle-sync-agent/agent.ini)")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
