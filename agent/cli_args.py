"""The command line's arguments: every command and its options, in one parser
(agent/cli.py runs them)."""

from __future__ import annotations

import argparse

from . import __version__
from .learners_cli import add_parser as add_learners_parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moodle-sync-agent",
        description="Queue learner events on an offline classroom box and sync them to Moodle.",
        epilog="Exit status: 0 ok, 1 errors, 2 bad usage/config/input, 3 offline, 4 a sync is running.")
    parser.add_argument("--version", action="version", version=f"moodle-sync-agent {__version__}")
    parser.add_argument("--config", metavar="PATH",
                        help="INI file (default: $MOODLE_SYNC_AGENT_CONFIG, else /etc/moodle-sync-agent/agent.ini)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("enqueue", help="queue learner events (one JSON event, a JSON array, or JSON lines)")
    p.add_argument("file", nargs="?", metavar="FILE|-", help="read from FILE (default: standard input)")

    p = sub.add_parser("courses", help="the courses kept on this box")
    csub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = csub.add_parser("add", help="fetch courses from the server and keep them on the box")
    a.add_argument("courses", nargs="+", metavar="ID_OR_SHORTNAME")
    a = csub.add_parser("list", help="list the box's courses")
    a.add_argument("--json", action="store_true")
    a = csub.add_parser("remove", help="stop keeping courses on the box")
    a.add_argument("courses", nargs="+", metavar="ID_OR_SHORTNAME")

    p = sub.add_parser("sync", help="run one sync now")
    p.add_argument("--force", action="store_true",
                   help="skip the check that courses are the same on both sides: refresh all, push all")
    p.add_argument("--json", action="store_true", help="print the run as JSON")
    p.add_argument("--via-agent", action="store_true", help="ask the running agent to sync, and wait for it")

    p = sub.add_parser("history", help="the last runs: syncs, verifies and collections")
    p.add_argument("--limit", type=_positive_int, default=5, metavar="N")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("status", help="queue, conflicts, last sync and server")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("check", help="is the server (and the box's Moodle) online, is the token valid, "
                                     "are all functions there")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("conflicts", help="events the server could not take")
    p.add_argument("--json", action="store_true")
    csub = p.add_subparsers(dest="action", metavar="ACTION")
    for name, text in (("retry", "put conflicts back in the queue"), ("discard", "give up on conflicts")):
        a = csub.add_parser(name, help=text)
        a.add_argument("ids", nargs="+", type=_positive_int, metavar="ID")

    p = sub.add_parser("verify", help="re-check that the server still holds the completions and grades sent; "
                                      "queue again what it lost")
    p.add_argument("--course", type=_positive_int, metavar="ID", help="only this course (by id)")
    p.add_argument("--json", action="store_true", help="print the run as JSON")

    p = sub.add_parser("collect", help="read what the learners did in the box's own Moodle ([box]) and queue it")
    p.add_argument("--full", action="store_true",
                   help="read every learner's completion states, not only those of the learners active since "
                        "the last collection (every sync starts with a full one)")
    p.add_argument("--json", action="store_true", help="print the run as JSON")

    add_learners_parser(sub)

    p = sub.add_parser("set-password", help="set the admin password of the page")
    p.add_argument("--stdin", action="store_true", help="read the password from standard input")

    p = sub.add_parser("connect", help="get the token of the agent's Moodle account by login (its password from "
                                       "the terminal or standard input), write it to the token file, then check")
    p.add_argument("side", choices=["server", "box"], help="server: [moodle]; box: the box's own Moodle ([box])")
    p.add_argument("url", metavar="URL", help="the site's address, as in agent.ini")
    p.add_argument("--user", required=True, metavar="NAME", help="the Moodle account of the agent (not an "
                                                                  "administrator: see README, \"A stolen box\")")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON (the check's in the database)")

    sub.add_parser("run", help="run the agent: daily schedule, the page's sync requests, e-mail notices "
                               "(what systemd starts)")
    return parser
