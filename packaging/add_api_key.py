"""Gives a fresh box its events API key: run by the package's postinst.

    python3 /usr/share/moodle-sync-agent/add_api_key.py /etc/moodle-sync-agent/agent.ini

When [web] api_key is not set, writes a random 128-bit key (32 hex digits)
into the file: on the first "#api_key =" line of [web], else right under
[web], else in a new [web] section. The file is replaced through a copy with
its owner and mode, so a crash leaves the old one or the new one, whole.
"""

from __future__ import annotations

import configparser
import os
import re
import secrets
import sys
import tempfile

SECTION_RE = re.compile(r"\s*\[([^\]]+)\]")
SLOT_RE = re.compile(r"\s*[#;]?\s*api_key\s*[=:]\s*$")


def with_key(lines: list[str], key: str) -> list[str]:
    section, header, slot = None, None, None
    for i, line in enumerate(lines):
        found = SECTION_RE.match(line)
        if found:
            section = found.group(1).strip()
            if section == "web" and header is None:
                header = i
        elif section == "web" and slot is None and SLOT_RE.match(line):
            slot = i
    entry = f"api_key = {key}\n"
    if slot is not None:
        return lines[:slot] + [entry] + lines[slot + 1:]
    if header is not None:
        return lines[:header + 1] + [entry] + lines[header + 1:]
    ending = [] if not lines or lines[-1].endswith("\n") else ["\n"]
    return lines + ending + ["\n", "[web]\n", entry]


def replace_keeping_owner_and_mode(path: str, lines: list[str]) -> None:
    st = os.stat(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".agent.ini.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.writelines(lines)
            fh.flush()
            os.fsync(fh.fileno())
        os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, st.st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(path: str) -> int:
    parser = configparser.ConfigParser(interpolation=None)
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    parser.read_string(text, source=path)
    if parser.get("web", "api_key", fallback="").strip():
        return 0
    replace_keeping_owner_and_mode(path, with_key(text.splitlines(keepends=True), secrets.token_hex(16)))
    print(f"moodle-sync-agent: made the events API key ([web] api_key in {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
