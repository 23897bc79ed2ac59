"""The page's texts in English, French and German, from gettext .po files.

The files are webui/locale/<lang>/LC_MESSAGES/messages.po, monolingual
gettext (Weblate's "gettext PO file (monolingual)", en as the base file):
each msgid is the key the code and the templates use, and the English
file holds the English texts. A text with a count has msgid_plural and one
msgstr[N] per plural form of its language, chosen by the file's
Plural-Forms header.

The language comes from the ``lang`` cookie (the switch on the page), else
from the browser's Accept-Language, else English.
"""

from __future__ import annotations

from pathlib import Path

from flask import Request, g

from .po import Catalog, read_po

LANGUAGES = {"en": "English", "fr": "Français", "de": "Deutsch"}
DEFAULT = "en"
COOKIE = "lang"
LOCALE_DIR = Path(__file__).resolve().with_name("locale")


def po_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po"


# Read once as the app is imported: a broken file stops the start, not a page.
CATALOGS: dict[str, Catalog] = {lang: read_po(po_path(lang)) for lang in LANGUAGES}


def pick_language(request: Request) -> str:
    chosen = request.cookies.get(COOKIE)
    if chosen in LANGUAGES:
        return chosen
    return request.accept_languages.best_match(list(LANGUAGES), default=DEFAULT) or DEFAULT


def has_text(key: str) -> bool:
    return key in CATALOGS[DEFAULT].messages


def translate(lang: str, key: str, default: str | None = None, **values: object) -> str:
    """The text for key; an unknown key gives default (or the key itself)."""
    found = CATALOGS.get(lang, CATALOGS[DEFAULT]).gettext(key) or CATALOGS[DEFAULT].gettext(key)
    if found is None:
        return key if default is None else default
    return found.format(**values) if values else found


def translate_plural(lang: str, key: str, n: int, **values: object) -> str:
    """The form of key's text for the count n, in lang's plural rule; n is
    also there as the {n} placeholder unless values name it otherwise."""
    found = CATALOGS.get(lang, CATALOGS[DEFAULT]).ngettext(key, n) or CATALOGS[DEFAULT].ngettext(key, n)
    if found is None:
        return key
    return found.format(**{"n": n, **values})


def text(key: str, default: str | None = None, **values: object) -> str:
    """A text in the language of the current request (the templates' ``_``)."""
    return translate(g.get("lang", DEFAULT), key, default, **values)


def ngettext(key: str, n: int, **values: object) -> str:
    """A text with a count, in the language of the current request.

    Monolingual catalogs are looked up by key, so the key is given once
    (gettext's ngettext takes the English singular and plural instead)."""
    return translate_plural(g.get("lang", DEFAULT), key, n, **values)
