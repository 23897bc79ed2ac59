"""The sample agent.ini and the man page's list of settings, both written from
:data:`agent.config.SETTINGS` by ``scripts/gen-config``; tests/test_config.py
fails when the committed files drift from the table."""

from __future__ import annotations

import re
from pathlib import Path

from .config import SECTIONS, SETTINGS, Setting, format_number, format_value

SAMPLE_HEADER = """\
# moodle-sync-agent configuration, read by the daemon, the teacher's page
# and the moodle-sync-agent command. After a change:
#   systemctl restart moodle-sync-agent moodle-sync-agent-web
# An unknown section or key, or a bad value, stops them with a message.
# All keys and their defaults: moodle-sync-agent(1).
"""

MAN_BEGIN = '.\\" BEGIN SETTINGS: written by scripts/gen-config from agent/config.py'
MAN_END = '.\\" END SETTINGS'


def _doc(cls: type) -> str:
    return (cls.__doc__ or "").strip()


def shown_default(s: Setting) -> str:
    """The default as the documentation writes it: the value, or an example."""
    if s.factory is not None or s.default_value() is None:
        return s.meta.example or ""
    return format_value(s.default_value())


def sample_ini() -> str:
    """packaging/etc/agent.ini: every setting with its help; the default
    commented out, unless the package sets a value of its own."""
    out = [SAMPLE_HEADER]
    for name, cls in SECTIONS.items():
        out.append(f"\n[{name}]\n")
        # The section's own line stands apart from the first key's help.
        out += [f"# {line}".rstrip() + "\n" for line in _doc(cls).splitlines()] + ["\n"]
        for s in SETTINGS:
            if s.section != name:
                continue
            out += [f"# {line}".rstrip() + "\n" for line in s.help.splitlines()]
            if s.meta.packaged is not None:
                out.append(f"{s.key} = {s.meta.packaged}\n")
            else:
                out.append(f"#{s.key} = {shown_default(s)}".rstrip() + "\n")
    return "".join(out)


def _roff(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return re.sub(r"^([.'])", r"\\&\1", text, flags=re.M)


def _range(s: Setting) -> str:
    lo, hi = s.meta.lo, s.meta.hi
    return "" if lo is None or hi is None else f" ({format_number(lo)} to {format_number(hi)})"


def _man_help(s: Setting) -> list[str]:
    """Help lines as roff: prose joined, an indented line kept as a literal one."""
    out: list[str] = []
    for line in s.help.splitlines():
        if line.startswith("  "):
            out += [".br", _roff(line.strip()), ".br"]
        else:
            out.append(_roff(line))
    return out


def man_settings() -> str:
    """The lines between MAN_BEGIN and MAN_END in packaging/moodle-sync-agent.1."""
    out = [MAN_BEGIN]
    for name, cls in SECTIONS.items():
        out += [f".SS [{name}]", _roff(_doc(cls))]
        for s in SETTINGS:
            if s.section != name:
                continue
            if s.meta.required:
                head = f'.BR {s.key} " (required)"'
            elif s.default_value() in (None, "") or s.factory is not None:
                head = f".B {s.key}"
            else:
                head = f'.BR {s.key} " = {_roff(format_value(s.default_value()))}{_range(s)}"'
            out += [".TP", head, *_man_help(s)]
    out.append(MAN_END)
    return "\n".join(out) + "\n"


def with_man_settings(page: str) -> str:
    """The man page with its settings list replaced by the table's."""
    begin, end = page.index(MAN_BEGIN), page.index(MAN_END) + len(MAN_END) + 1
    return page[:begin] + man_settings() + page[end:]


def write(root: Path) -> list[Path]:
    """Rewrite both files under the source tree root; returns those that changed."""
    ini, man = root / "packaging" / "etc" / "agent.ini", root / "packaging" / "moodle-sync-agent.1"
    changed = []
    for path, text in ((ini, sample_ini()), (man, with_man_settings(man.read_text(encoding="utf-8")))):
        if path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed
