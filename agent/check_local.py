"""What ``moodle-sync-agent check`` says about the box itself, beside the two
Moodles: where the database really is (the configured path resolved), and the
token files that other accounts of the box can read.

The package's token files are the service user's own, 0600 (its postinst
hands over an older version's root:moodle-sync-agent 0640). A token file may
still be readable by a group that only the agent's account is in; any other
group, or everyone, is warned about.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat

from .config import Config


def _one_account_group(gid: int) -> bool:
    """Is at most one account in this group (its listed members, and those
    whose primary group it is)? A group unknown to the box is not."""
    try:
        members = set(grp.getgrgid(gid).gr_mem)
    except KeyError:
        return False
    return len(members | {p.pw_name for p in pwd.getpwall() if p.pw_gid == gid}) <= 1


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def token_file_warning(section: str, path: str) -> str | None:
    """One line with what to do when accounts other than the agent's can read the token file."""
    try:
        st = os.stat(path)
    except OSError:
        return None  # the configuration was read a moment ago; a file gone since is not this check's to say
    if st.st_mode & stat.S_IROTH:
        who = "every account of the box"
    elif st.st_mode & stat.S_IRGRP and not _one_account_group(st.st_gid):
        who = f"the group {_group_name(st.st_gid)}"
    else:
        return None
    return (f"[{section}] token_file {path} can be read by {who}: chmod 600 {path} and chown it to the "
            f"account the agent runs as (or chmod 640 with a group only that account is in)")


def local_report(config: Config) -> dict:
    """The database's real path, and a warning per token file others can read."""
    files = [("moodle", config.moodle.token_file)]
    if config.box is not None:
        files.append(("box", config.box.token_file))
    warnings = [w for section, path in files if path for w in [token_file_warning(section, path)] if w]
    return {"database": str(config.agent.database), "warnings": warnings}


def print_local(report: dict) -> None:
    print(f"database: {report['database']}")
    for warning in report["warnings"]:
        print(f"warning: {warning}")
