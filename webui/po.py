"""Reads gettext .po files, plural rules included, with the stdlib only.

The stdlib's ``gettext`` reads only compiled .mo files; reading the .po
files themselves spares a build step that the checkout and the Debian
package would both have to run. What is read, as GNU msgfmt reads it:
comments, ``msgctxt``, ``msgid``/``msgid_plural``, ``msgstr``/``msgstr[N]``,
strings split over several lines, C escapes; a fuzzy entry or an empty
translation counts as untranslated. The header's Plural-Forms expression is
parsed into a small tree and evaluated on that tree: never by ``eval``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

PluralRule = Callable[[int], int]

# What gettext puts between a message's context and its id.
CONTEXT_SEPARATOR = "\x04"

ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
           "\\": "\\", '"': '"', "'": "'", "?": "?"}


class PoError(ValueError):
    """A .po file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Catalog:
    language: str
    nplurals: int
    plural: PluralRule
    # msgid (with "context\x04" before it, if any) -> its translation(s):
    # one string for a plain entry, nplurals strings for a plural one.
    messages: dict[str, tuple[str, ...]] = field(default_factory=dict)
    plural_ids: frozenset[str] = frozenset()  # the entries that have a msgid_plural

    def gettext(self, msgid: str) -> str | None:
        """The translation, or None when the file has none."""
        found = self.messages.get(msgid)
        return found[0] if found else None

    def ngettext(self, msgid: str, n: int) -> str | None:
        """The plural form for n, or None when the file has none."""
        found = self.messages.get(msgid)
        if not found or msgid not in self.plural_ids:
            return None
        return found[self.plural(n)]


# -- the file ----------------------------------------------------------------------

@dataclass
class _Entry:
    line: int
    fuzzy: bool = False
    msgctxt: str | None = None
    msgid: str | None = None
    msgid_plural: str | None = None
    msgstr: dict[int, str] = field(default_factory=dict)


_KEYWORD = re.compile(r'(msgctxt|msgid_plural|msgid|msgstr(?:\[(\d+)\])?)\s+(".*)$')


def _unquote(text: str, where: str) -> str:
    """One C string literal, quotes included, as a Python string."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise PoError(f"{where}: expected a string in double quotes, got {text[:40]!r}")
    out, i, body = [], 0, text[1:-1]
    while i < len(body):
        c = body[i]
        if c == '"':
            raise PoError(f"{where}: unescaped double quote inside a string")
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(body):
            raise PoError(f"{where}: a string ends with a lone backslash")
        nxt = body[i + 1]
        if nxt in ESCAPES:
            out.append(ESCAPES[nxt])
            i += 2
        elif nxt in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[i + 1:]).group()  # type: ignore[union-attr]
            out.append(chr(int(digits, 8)))
            i += 1 + len(digits)
        elif nxt == "x" and re.match(r"[0-9a-fA-F]", body[i + 2:i + 3]):
            digits = re.match(r"[0-9a-fA-F]+", body[i + 2:]).group()  # type: ignore[union-attr]
            out.append(chr(int(digits, 16)))
            i += 2 + len(digits)
        else:
            raise PoError(f"{where}: unknown escape \\{nxt}")
    return "".join(out)


def _entries(text: str, name: str) -> list[_Entry]:
    entries: list[_Entry] = []
    current: _Entry | None = None
    target: tuple[str, int] | None = None  # the field that continuation lines extend

    def start(lineno: int) -> _Entry:
        entry = _Entry(line=lineno)
        entries.append(entry)
        return entry

    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        where = f"{name}:{lineno}"
        if not line:
            current, target = None, None
            continue
        if line.startswith("#"):
            if current is not None and current.msgid is not None:
                current, target = None, None  # a comment starts the next entry
            if line.startswith("#,") and "fuzzy" in (f.strip() for f in line[2:].split(",")):
                current = current or start(lineno)
                current.fuzzy = True
            # Other comments (#~ obsolete, #| previous, #: #. # ) carry no text to translate.
            continue
        if line.startswith('"'):
            if current is None or target is None:
                raise PoError(f"{where}: a string with no keyword before it")
            value = _unquote(line, where)
            key, index = target
            if key == "msgstr":
                current.msgstr[index] += value
            else:
                setattr(current, key, getattr(current, key) + value)
            continue
        match = _KEYWORD.match(line)
        if not match:
            raise PoError(f"{where}: cannot read {line[:40]!r}")
        keyword, index_text, rest = match.groups()
        value = _unquote(rest.rstrip(), where)
        if keyword in ("msgctxt", "msgid"):
            # The entry that flags or a msgctxt began goes on; anything else
            # (even without a blank line before it) starts a new one.
            pending = current is not None and current.msgid is None and getattr(current, keyword) is None
            if not pending:
                current = start(lineno)
            setattr(current, keyword, value)
            target = (keyword, 0)
        elif current is None or current.msgid is None:
            raise PoError(f"{where}: {keyword} before msgid")
        elif keyword == "msgid_plural":
            current.msgid_plural = value
            target = ("msgid_plural", 0)
        else:
            index = int(index_text) if index_text is not None else 0
            if (index_text is not None) != (current.msgid_plural is not None):
                raise PoError(f"{where}: msgstr[N] goes with msgid_plural, plain msgstr without it")
            if index in current.msgstr:
                raise PoError(f"{where}: {keyword} given twice")
            current.msgstr[index] = value
            target = ("msgstr", index)
    for entry in entries:
        if entry.msgid is not None and not entry.msgstr:
            raise PoError(f"{name}:{entry.line}: msgid without msgstr")
    return [e for e in entries if e.msgid is not None]


def _header(msgstr: str) -> dict[str, str]:
    fields = {}
    for line in msgstr.split("\n"):
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return fields


def parse_po(text: str, name: str = "<po>") -> Catalog:
    """A catalog from the text of a .po file; PoError names what is wrong."""
    entries = _entries(text, name)
    header = next((e for e in entries if e.msgid == "" and e.msgctxt is None), None)
    if header is None:
        raise PoError(f"{name}: no header (the entry with an empty msgid)")
    fields = _header(header.msgstr.get(0, ""))
    charset = re.search(r"charset\s*=\s*([\w-]+)", fields.get("content-type", ""))
    if not charset or charset.group(1).lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise PoError(f"{name}: the header must declare Content-Type: text/plain; charset=UTF-8")
    try:
        nplurals, plural = parse_plural_forms(fields.get("plural-forms", ""))
    except ValueError as exc:
        raise PoError(f"{name}: Plural-Forms: {exc}") from None

    messages: dict[str, tuple[str, ...]] = {}
    plural_ids: set[str] = set()
    seen: set[str] = set()
    for e in entries:
        if e is header:
            continue
        msgid = e.msgid or ""
        key = msgid if e.msgctxt is None else f"{e.msgctxt}{CONTEXT_SEPARATOR}{msgid}"
        if key in seen:
            raise PoError(f"{name}:{e.line}: msgid {msgid!r} given twice")
        seen.add(key)
        if e.msgid_plural is not None:
            if sorted(e.msgstr) != list(range(nplurals)):
                raise PoError(f"{name}:{e.line}: {e.msgid!r} needs msgstr[0] to msgstr[{nplurals - 1}] "
                              f"(nplurals={nplurals})")
            forms = tuple(e.msgstr[i] for i in range(nplurals))
            if e.fuzzy or not all(forms):
                continue  # untranslated, as msgfmt leaves it out
            messages[key] = forms
            plural_ids.add(key)
        elif not e.fuzzy and e.msgstr[0]:
            messages[key] = (e.msgstr[0],)
    return Catalog(language=fields.get("language", ""), nplurals=nplurals, plural=plural,
                   messages=messages, plural_ids=frozenset(plural_ids))


def read_po(path: Path) -> Catalog:
    return parse_po(path.read_text(encoding="utf-8-sig"), str(path))  # a BOM is not text


# -- Plural-Forms -----------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(\d+)|(n)|(\|\||&&|==|!=|<=|>=|[<>?:()!%*/+-]))")
# Binary operators by precedence, lowest first, as in C.
_LEVELS = [("||",), ("&&",), ("==", "!="), ("<", ">", "<=", ">="), ("+", "-"), ("*", "/", "%")]


def _c_div(a: int, b: int) -> int:
    if b == 0:
        raise ZeroDivisionError("division by zero")
    return abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)  # C truncates toward zero


def _c_mod(a: int, b: int) -> int:
    return a - b * _c_div(a, b)


_OPS: dict[str, Callable[[int, int], int]] = {
    "||": lambda a, b: int(bool(a) or bool(b)), "&&": lambda a, b: int(bool(a) and bool(b)),
    "==": lambda a, b: int(a == b), "!=": lambda a, b: int(a != b),
    "<": lambda a, b: int(a < b), ">": lambda a, b: int(a > b),
    "<=": lambda a, b: int(a <= b), ">=": lambda a, b: int(a >= b),
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": _c_div, "%": _c_mod,
}


def _tokens(expression: str) -> list[str]:
    tokens, pos = [], 0
    expression = expression.rstrip()
    while pos < len(expression):
        match = _TOKEN.match(expression, pos)
        if not match:
            raise ValueError(f"unexpected {expression[pos:pos + 10].strip()!r} in {expression!r}")
        tokens.append(match.group(match.lastindex or 0))
        pos = match.end()
    return tokens


class _Parser:
    """C's conditional expression over n: a tree of closures."""

    def __init__(self, expression: str):
        self.expression = expression
        self.tokens = _tokens(expression)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise ValueError(f"expected {expected or 'more'} in {self.expression!r}")
        self.pos += 1
        return token

    def parse(self) -> PluralRule:
        rule = self.conditional()
        if self.peek() is not None:
            raise ValueError(f"unexpected {self.peek()!r} in {self.expression!r}")
        return rule

    def conditional(self) -> PluralRule:
        test = self.binary(0)
        if self.peek() != "?":
            return test
        self.take("?")
        yes = self.conditional()
        self.take(":")
        no = self.conditional()
        return lambda n: yes(n) if test(n) else no(n)

    def binary(self, level: int) -> PluralRule:
        if level == len(_LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek() in _LEVELS[level]:
            op = _OPS[self.take()]
            right = self.binary(level + 1)
            left = (lambda op, a, b: lambda n: op(a(n), b(n)))(op, left, right)
        return left

    def unary(self) -> PluralRule:
        token = self.take()
        if token == "!":
            inner = self.unary()
            return lambda n: int(not inner(n))
        if token == "(":
            inner = self.conditional()
            self.take(")")
            return inner
        if token == "n":
            return lambda n: n
        if token.isdigit():
            value = int(token)
            return lambda n: value
        raise ValueError(f"unexpected {token!r} in {self.expression!r}")


def parse_plural_forms(header: str) -> tuple[int, PluralRule]:
    """nplurals and the rule from a Plural-Forms header value such as
    ``nplurals=2; plural=(n > 1);``. The rule is tried on n = 0..1000 here,
    so that a bad one fails when the file is read, not on a page."""
    match = re.fullmatch(r"\s*nplurals\s*=\s*(\d+)\s*;\s*plural\s*=\s*([^;]+?)\s*;?\s*", header)
    if not match:
        raise ValueError(f"expected 'nplurals=N; plural=EXPRESSION;', got {header!r}")
    nplurals = int(match.group(1))
    if nplurals < 1:
        raise ValueError(f"nplurals must be at least 1, got {nplurals}")
    rule = _Parser(match.group(2)).parse()
    for n in range(1001):
        try:
            index = rule(n)
        except ZeroDivisionError:
            raise ValueError(f"plural={match.group(2)} divides by zero for n={n}") from None
        if not 0 <= index < nplurals:
            raise ValueError(f"plural={match.group(2)} gives {index} for n={n}, outside 0..{nplurals - 1}")
    return nplurals, rule
