"""The page's texts in English, French and German, with the standard
library's gettext.

The sources are webui/locale/<lang>/LC_MESSAGES/messages.po, monolingual
gettext (Weblate's "gettext PO file (monolingual)", en as the base file):
each msgid is the key the code and the templates use, and the English file
holds the English texts. A text with a count has msgid_plural and one
msgstr[N] per plural form of its language, which gettext picks with the
file's Plural-Forms rule. The .po files are compiled into messages.mo at
build time (scripts/msgfmt.py in a checkout, msgfmt when the Debian package
is built); this module reads only the .mo files.

The language comes from the ``lang`` cookie (the switch on the page), else
from the browser's Accept-Language, else English.
"""

from __future__ import annotations

import gettext
from pathlib import Path

from flask import Request, g

LANGUAGES = {"en": "English", "fr": "Français", "de": "Deutsch"}
DEFAULT = "en"
COOKIE = "lang"
DOMAIN = "messages"
LOCALE_DIR = Path(__file__).resolve().with_name("locale")


class MissingCatalog(RuntimeError):
    """A language's .mo file is not there: the translations were not compiled."""


class _Missing(gettext.NullTranslations):
    """The last fallback: None for a key no catalog has, so the caller can tell."""

    def gettext(self, message: str) -> str:
        return None  # type: ignore[return-value]

    def ngettext(self, msgid1: str, msgid2: str, n: int) -> str:
        return None  # type: ignore[return-value]


def po_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


def mo_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.mo"


def load(lang: str) -> gettext.GNUTranslations:
    try:
        with open(mo_path(lang), "rb") as f:
            return gettext.GNUTranslations(f)
    except FileNotFoundError:
        raise MissingCatalog(f"{mo_path(lang)} is missing: compile the translations with "
                             "python3 scripts/msgfmt.py (the Debian package ships them compiled)") from None


def _catalogs() -> dict[str, gettext.GNUTranslations]:
    found = {lang: load(lang) for lang in LANGUAGES}
    missing = _Missing()
    for lang, catalog in found.items():
        if lang != DEFAULT:
            catalog.add_fallback(found[DEFAULT])  # a text not translated yet: in English
    found[DEFAULT].add_fallback(missing)
    return found


# Read once as the app is imported: a missing or broken file stops the start, not a page.
CATALOGS: dict[str, gettext.GNUTranslations] = _catalogs()


def pick_language(request: Request) -> str:
    chosen = request.cookies.get(COOKIE)
    if chosen in LANGUAGES:
        return chosen
    return request.accept_languages.best_match(list(LANGUAGES), default=DEFAULT) or DEFAULT


def has_text(key: str) -> bool:
    return CATALOGS[DEFAULT].gettext(key) is not None


def translate(lang: str, key: str, default: str | None = None, **values: object) -> str:
    """The text for key; an unknown key gives default (or the key itself)."""
    found = CATALOGS.get(lang, CATALOGS[DEFAULT]).gettext(key)
    if found is None:
        return key if default is None else default
    return found.format(**values) if values else found


def translate_plural(lang: str, key: str, n: int, **values: object) -> str:
    """The form of key's text for the count n, in lang's plural rule; n is
    also there as the {n} placeholder unless values name it otherwise.
    Monolingual catalogs are looked up by key, so the key is both of
    gettext's ids."""
    found = CATALOGS.get(lang, CATALOGS[DEFAULT]).ngettext(key, key, n)
    if found is None:
        return key
    return found.format(**{"n": n, **values})


def text(key: str, default: str | None = None, **values: object) -> str:
    """A text in the language of the current request (the templates' ``_``)."""
    return translate(g.get("lang", DEFAULT), key, default, **values)


def ngettext(key: str, n: int, **values: object) -> str:
    """A text with a count, in the language of the current request."""
    return translate_plural(g.get("lang", DEFAULT), key, n, **values)
