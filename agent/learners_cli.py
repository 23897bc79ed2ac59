"""``moodle-sync-agent learners``: list, add, password (agent/learners.py).

Exit 2 with a clear message for a bad username, a course not kept on the
box, an unknown learner, or a password the box's Moodle refuses (its answer
as it gave it); 3 when the box's Moodle does not answer.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .config import Config
from .exits import EXIT_OFFLINE, EXIT_OK, EXIT_USAGE
from .learners import LearnerError, NewLearner, add_learner, generate_password, is_pending, list_learners, \
    set_password
from .moodle import Unreachable


def add_parser(sub: Any) -> None:
    p = sub.add_parser("learners", help="the learners of the kept courses: list, add one, set a password")
    lsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = lsub.add_parser("list", help="the learners, where their account exists, who needs a password")
    a.add_argument("--json", action="store_true")
    a = lsub.add_parser("add", help="make a learner's account and enrolments on the box's Moodle now, "
                                    "and on the server at the next sync, with the same password")
    a.add_argument("username")
    a.add_argument("--firstname", required=True)
    a.add_argument("--lastname", required=True)
    a.add_argument("--email", default="")
    a.add_argument("--idnumber", default="")
    a.add_argument("--course", action="append", required=True, metavar="ID_OR_SHORTNAME",
                   help="a course kept on the box (repeatable)")
    _password_options(a)
    a = lsub.add_parser("password", help="set a learner's password on the box's Moodle now, "
                                         "and on the server at the next sync")
    a.add_argument("username")
    _password_options(a)
    a.add_argument("--box-only", action="store_true", help="do not send the password to the server")


def _password_options(p: argparse.ArgumentParser) -> None:
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    how.add_argument("--generate", action="store_true", help="generate a short, readable password and print it")


def _password(args: argparse.Namespace) -> str:
    if args.generate:
        return generate_password()
    return sys.stdin.readline().rstrip("\r\n")


def card(result: dict[str, Any]) -> str:
    lines = [f"username: {result['username']}", f"password: {result['password']}"]
    if result.get("courses"):
        lines.append("courses:  " + ", ".join(result["courses"]))
    lines.append("on the box's Moodle now" + ("; on the server after the next sync" if result["also_server"] else
                                              "; not sent to the server"))
    return "\n".join(lines)


def cmd_learners(config: Config, args: argparse.Namespace) -> int:
    try:
        if args.action == "list":
            rows = list_learners(config)
            if args.json:
                print(json.dumps(rows, indent=2))
            for r in [] if args.json else rows:
                print(f"{r['username']:<24} {r['firstname']} {r['lastname']:<20} {r['account']:<8} "
                      f"{'needs a password' if r['needs_password'] else ''}".rstrip())
            if not rows and not args.json:
                print("no learners yet: they are listed once a collection read the kept courses on the box's Moodle")
            return EXIT_OK
        if args.action == "add":
            learner = NewLearner(args.username, args.firstname, args.lastname, args.email, args.idnumber,
                                 list(args.course))
            learner.check()  # before a password is read or made
            result = add_learner(config, learner, _password(args))
        else:
            result = set_password(config, args.username, _password(args), also_server=not args.box_only)
    except LearnerError as exc:
        print(f"moodle-sync-agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Unreachable as exc:
        started = is_pending(args.username)
        print(f"moodle-sync-agent: the box's Moodle does not answer: {exc.reason}; "
              + ("what was started is finished by the next collection" if started else "nothing was changed"),
              file=sys.stderr)
        return EXIT_OFFLINE
    print(card(result))
    return EXIT_OK
