#!/usr/bin/env python3
"""Compiles the page's translations (webui/locale/*/LC_MESSAGES/messages.po)
into the .mo files that webui/i18n.py reads with the standard library's gettext.

    python3 scripts/msgfmt.py            every catalog, with GNU msgfmt when it is
                                         installed (package gettext), else with the
                                         small compiler below (stdlib only)
    python3 scripts/msgfmt.py --builtin  the small compiler, even with msgfmt there
    python3 scripts/msgfmt.py --if-stale only the catalogs whose .mo is missing or
                                         older than their .po (the test suite's start)

The .po files are the source (translators edit them); the .mo files are build
output, never committed. The Debian package runs msgfmt itself (debian/rules).
The small compiler reads what GNU msgfmt reads in these files (comments,
msgctxt, msgid/msgid_plural, msgstr/msgstr[N], strings over several lines,
C escapes; a fuzzy or empty entry is left out) and writes the same catalog.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCALE_DIR = ROOT / "webui" / "locale"


class PoError(ValueError):
    """A .po file the compiler cannot read; the message names the file and line."""


def _unquote(text: str, where: str) -> str:
    text = text.strip()
    if len(text) < 2 or not (text.startswith('"') and text.endswith('"')):
        raise PoError(f"{where}: expected a string in double quotes, got {text[:40]!r}")
    try:
        # A C string literal reads as a Python one for the escapes .po files use.
        return ast.literal_eval(text)
    except (SyntaxError, ValueError) as exc:
        raise PoError(f"{where}: {exc}") from None


def parse(text: str, name: str = "<po>") -> dict[str, str]:
    """The catalog as the .mo file holds it: msgid (with "context\\x04" before it,
    and "\\0" and the plural id after it) -> msgstr (plural forms joined by "\\0")."""
    entries: dict[str, str] = {}
    fuzzy = False
    ctxt: str | None = None
    msgid: str | None = None
    plural: str | None = None
    strs: dict[int, str] = {}
    current: list[str] = []  # the field that continuation lines extend: [name]

    def flush() -> None:
        nonlocal ctxt, msgid, plural, strs, fuzzy
        if msgid is not None:
            forms = [strs[i] for i in sorted(strs)]
            if not fuzzy and any(forms) or msgid == "":
                key = (ctxt + "\x04" if ctxt is not None else "") + msgid
                if plural is not None:
                    key += "\0" + plural
                if key in entries:
                    raise PoError(f"{name}: the message {msgid!r} is given twice")
                entries[key] = "\0".join(forms)
        ctxt = msgid = plural = None
        strs, fuzzy = {}, False

    for number, raw in enumerate(text.splitlines(), 1):
        where = f"{name}:{number}"
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if line.startswith("#,") and "fuzzy" in line:
                if msgid is not None and strs:
                    flush()
                fuzzy = True
            continue
        if line.startswith('"'):
            if not current:
                raise PoError(f"{where}: a string with no keyword before it")
            value = _unquote(line, where)
            field = current[0]
            if field == "msgctxt":
                ctxt = (ctxt or "") + value
            elif field == "msgid":
                msgid = (msgid or "") + value
            elif field == "msgid_plural":
                plural = (plural or "") + value
            else:
                index = int(field[7:-1]) if field.startswith("msgstr[") else 0
                strs[index] += value
            continue
        keyword, _, rest = line.partition(" ")
        if keyword not in ("msgctxt", "msgid", "msgid_plural", "msgstr") and not (
                keyword.startswith("msgstr[") and keyword[7:-1].isdigit() and keyword.endswith("]")):
            raise PoError(f"{where}: cannot read {line[:40]!r}")
        value = _unquote(rest, where)
        if keyword == "msgctxt" or (keyword == "msgid" and (strs or msgid is not None)):
            if strs:
                flush()
        if keyword == "msgctxt":
            ctxt = value
        elif keyword == "msgid":
            msgid = value
        elif keyword == "msgid_plural":
            plural = value
        elif keyword == "msgstr" or keyword.startswith("msgstr["):
            before = current[0] if current else ""
            if msgid is None or not (before in ("msgid", "msgid_plural") or before.startswith("msgstr[")):
                raise PoError(f"{where}: msgstr before msgid")
            strs[int(keyword[7:-1]) if keyword != "msgstr" else 0] = value
        else:
            raise PoError(f"{where}: cannot read {line[:40]!r}")
        current = [keyword]
    flush()
    if "" not in entries:
        raise PoError(f"{name}: no header (the entry with msgid \"\")")
    return entries


def mo_bytes(entries: dict[str, str]) -> bytes:
    """A GNU .mo file (little-endian, revision 0, no hash table), ids sorted."""
    keys = sorted(entries)
    ids = [k.encode("utf-8") for k in keys]
    strs = [entries[k].encode("utf-8") for k in keys]
    n = len(keys)
    start = 7 * 4 + 16 * n  # header, then the two tables of (length, offset)
    offsets, blob = [], b""
    for data in ids + strs:
        offsets.append((len(data), start + len(blob)))
        blob += data + b"\0"
    header = struct.pack("<7I", 0x950412DE, 0, n, 7 * 4, 7 * 4 + 8 * n, 0, start)
    table = b"".join(struct.pack("<2I", length, offset) for length, offset in offsets)
    return header + table + blob


def compile_builtin(po: Path, mo: Path) -> None:
    mo.write_bytes(mo_bytes(parse(po.read_text(encoding="utf-8"), str(po))))


def compile_one(po: Path, builtin: bool = False) -> Path:
    mo = po.with_suffix(".mo")
    tmp = mo.with_suffix(".mo.tmp")
    msgfmt = None if builtin else shutil.which("msgfmt")
    if msgfmt:
        subprocess.run([msgfmt, "--check-format", "--check-domain", "-o", str(tmp), str(po)], check=True)
    else:
        compile_builtin(po, tmp)
    tmp.replace(mo)  # a reader never sees half a file
    return mo


def catalogs(locale_dir: Path = LOCALE_DIR) -> list[Path]:
    return sorted(locale_dir.glob("*/LC_MESSAGES/*.po"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--builtin", action="store_true", help="the stdlib compiler, even if msgfmt is installed")
    parser.add_argument("--if-stale", action="store_true", help="only a .mo missing or older than its .po")
    parser.add_argument("--locale-dir", type=Path, default=LOCALE_DIR)
    args = parser.parse_args(argv)
    found = catalogs(args.locale_dir)
    if not found:
        print(f"msgfmt.py: no .po files under {args.locale_dir}", file=sys.stderr)
        return 2
    for po in found:
        mo = po.with_suffix(".mo")
        if args.if_stale and mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
            continue
        try:
            compile_one(po, args.builtin)
        except (PoError, subprocess.CalledProcessError) as exc:
            print(f"msgfmt.py: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
