"""The page's translations: gettext .po files read by webui.po, plural forms
chosen by each file's Plural-Forms rule, and the page using them."""

from __future__ import annotations

import configparser
import fnmatch
import re
from string import Formatter

import pytest

from webui import create_app
from webui.i18n import CATALOGS, LANGUAGES, LOCALE_DIR, po_path, translate, translate_plural
from webui.po import CONTEXT_SEPARATOR, PoError, parse_plural_forms, parse_po

from tests.helpers import ROOT
from tests.helpers import login, post, write_config


def fields(s: str) -> set[str]:
    return {f for _, f, _, _ in Formatter().parse(s) if f}


# -- the files -------------------------------------------------------------------------

def test_every_language_has_the_same_keys_plurals_and_placeholders():
    english = CATALOGS["en"]
    assert len(english.messages) > 150
    for lang, catalog in CATALOGS.items():
        assert catalog.language == lang
        assert catalog.messages.keys() == english.messages.keys(), lang
        assert catalog.plural_ids == english.plural_ids, lang
        for key, forms in catalog.messages.items():
            assert len(forms) == (catalog.nplurals if key in catalog.plural_ids else 1), (lang, key)
            want = set().union(*(fields(f) for f in english.messages[key]))
            for form in forms:
                assert fields(form) == want, (lang, key, form)
                form.format(**{name: 1 for name in want})  # no stray brace


def test_each_language_has_its_plural_rule():
    # English and German: 1 is singular; French: 0 and 1 are.
    singular = {"en": {1}, "de": {1}, "fr": {0, 1}}
    for lang, catalog in CATALOGS.items():
        assert catalog.nplurals == 2
        for n in range(0, 202):
            assert catalog.plural(n) == (0 if n in singular[lang] else 1), (lang, n)
    text = po_path("fr").read_text(encoding="utf-8")
    assert '"Plural-Forms: nplurals=2; plural=(n > 1);\\n"' in text


PLURAL_KEYS = sorted(CATALOGS["en"].plural_ids)


@pytest.mark.parametrize("lang", sorted(LANGUAGES))
@pytest.mark.parametrize("key", PLURAL_KEYS)
def test_plural_of_0_1_and_2(lang, key):
    def form(n: int) -> str:
        return translate_plural(lang, key, n, days=n, cores=n, load="0.50", date="2026-01-01")

    assert form(1) != form(2)
    assert form(0) == (form(1).replace("1", "0", 1) if lang == "fr" else form(2).replace("2", "0", 1))
    assert form(5) == form(2).replace("2", "5", 1)


def test_the_plural_texts_read_right():
    assert translate_plural("en", "conflicts_retried", 1) == "1 event put back in the queue."
    assert translate_plural("en", "conflicts_retried", 0) == "0 events put back in the queue."
    assert translate_plural("fr", "conflicts_discarded", 0) == "0 événement abandonné."
    assert translate_plural("fr", "conflicts_discarded", 2) == "2 événements abandonnés."
    assert translate_plural("de", "conflicts_retried", 1) == "1 Ereignis wieder in die Warteschlange gestellt."
    assert translate_plural("de", "conflicts_retried", 3) == "3 Ereignisse wieder in die Warteschlange gestellt."
    assert translate_plural("de", "health_load_value", 1, load="0.10", cores=1) == "0.10 auf 1 Kern"
    assert translate_plural("en", "n_days", 1) == "1 day"


def test_no_text_works_around_plurals_any_more():
    for lang in LANGUAGES:
        text = po_path(lang).read_text(encoding="utf-8")
        assert not re.search(r"\w\((s|e|se|n|en)\)", text), lang


def test_unknown_keys_fall_back():
    assert translate("fr", "no_such_key") == "no_such_key"
    assert translate("fr", "no_such_key", default="x") == "x"
    assert translate("xx", "password") == "Password"  # an unknown language: English
    assert translate_plural("fr", "no_such_key", 2) == "no_such_key"


def test_the_package_ships_the_translations():
    """setup.cfg's package data (what the wheel and the Debian package hold)
    takes every .po file."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in cfg["options.package_data"]["webui"].split(",")]
    files = sorted(LOCALE_DIR.rglob("*.po"))
    assert len(files) == len(LANGUAGES)
    for path in files:
        relative = path.relative_to(LOCALE_DIR.parent).as_posix()
        assert any(fnmatch.fnmatch(relative, p) and p.count("/") == relative.count("/") for p in patterns), relative


# -- the reader ------------------------------------------------------------------------

HEADER = 'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n"Plural-Forms: nplurals=2; plural=n != 1;\\n"\n'


def test_reader_escapes_multiline_context_and_untranslated():
    catalog = parse_po(HEADER + r'''
# translator's comment
#: somewhere.py:12
#. an extracted comment
msgid "quotes"
msgstr "say \"hi\"\tback\\slash\nnew line \101\x42"

msgid "long"
msgstr ""
"first part, "
"second part"

msgctxt "menu"
msgid "open"
msgstr "Open (menu)"

msgid "open"
msgstr "Open"

#, fuzzy
msgid "fuzzy"
msgstr "a guess"

#, c-format, fuzzy
msgctxt "x"
msgid "fuzzy2"
msgstr "another guess"

msgid "empty"
msgstr ""

#~ msgid "obsolete"
#~ msgstr "gone"

msgid "files"
msgid_plural "files"
msgstr[0] "{n} file"
msgstr[1] ""
"{n} files"
msgid "no blank line before"
msgstr "still read"
''')
    assert catalog.gettext("quotes") == 'say "hi"\tback\\slash\nnew line AB'
    assert catalog.gettext("long") == "first part, second part"
    assert catalog.gettext("open") == "Open"
    assert catalog.gettext(f"menu{CONTEXT_SEPARATOR}open") == "Open (menu)"
    for untranslated in ("fuzzy", f"x{CONTEXT_SEPARATOR}fuzzy2", "empty", "obsolete"):
        assert untranslated not in catalog.messages
    assert [catalog.ngettext("files", n) for n in (0, 1, 2)] == ["{n} files", "{n} file", "{n} files"]
    assert catalog.ngettext("long", 2) is None  # not a plural entry
    assert catalog.gettext("no blank line before") == "still read"


@pytest.mark.parametrize("body, problem", [
    ('msgid "a"\nmsgstr "b', "expected a string in double quotes"),
    ('msgid "a"\nmsgstr "b"c"', "unescaped double quote"),
    ('msgid "a"\nmsgstr "\\q"', "unknown escape"),
    ('msgid "a"\n', "msgid without msgstr"),
    ('msgstr "b"\n', "msgstr before msgid"),
    ('msgid "a"\nmsgid_plural "a"\nmsgstr[0] "x"\n', "needs msgstr[0] to msgstr[1]"),
    ('msgid "a"\nmsgstr[0] "x"\n', "msgstr[N] goes with msgid_plural"),
    ('msgid "a"\nmsgstr "x"\n\nmsgid "a"\nmsgstr "y"\n', "given twice"),
    ('"loose"\n', "a string with no keyword"),
    ('msgid "a"\nmsgstr "x"\nwhat is this\n', "cannot read"),
])
def test_reader_names_the_line_of_a_bad_file(body, problem):
    with pytest.raises(PoError) as err:
        parse_po(HEADER + "\n" + body, "fr.po")
    assert problem in str(err.value)
    assert re.match(r"fr\.po(:\d+)?: ", str(err.value))


def test_reader_needs_utf8_and_plural_forms():
    with pytest.raises(PoError, match="charset=UTF-8"):
        parse_po(HEADER.replace("UTF-8", "ISO-8859-1"))
    with pytest.raises(PoError, match="Plural-Forms"):
        parse_po('msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n')
    with pytest.raises(PoError, match="no header"):
        parse_po('msgid "a"\nmsgstr "b"\n')


# Rules and values from the CLDR / GNU gettext manual's plural-forms table.
RULES = {
    "nplurals=1; plural=0;": {0: 0, 1: 0, 2: 0, 101: 0},
    "nplurals=2; plural=(n != 1);": {0: 1, 1: 0, 2: 1, 11: 1},
    "nplurals=2; plural=(n > 1);": {0: 0, 1: 0, 2: 1, 100: 1},
    # Russian, Ukrainian
    ("nplurals=3; plural=(n%10==1 && n%100!=11 ? 0 : n%10>=2 && n%10<=4 && (n%100<10 || n%100>=20) ? 1 : 2);"):
        {1: 0, 21: 0, 11: 2, 2: 1, 4: 1, 22: 1, 12: 2, 14: 2, 5: 2, 0: 2, 111: 2, 101: 0},
    # Polish
    "nplurals=3; plural=(n==1 ? 0 : n%10>=2 && n%10<=4 && (n%100<10 || n%100>=20) ? 1 : 2);":
        {1: 0, 2: 1, 3: 1, 4: 1, 5: 2, 12: 2, 22: 1, 0: 2, 21: 2},
    # Arabic
    ("nplurals=6; plural=(n==0 ? 0 : n==1 ? 1 : n==2 ? 2 : n%100>=3 && n%100<=10 ? 3 "
     ": n%100>=11 ? 4 : 5);"): {0: 0, 1: 1, 2: 2, 3: 3, 10: 3, 11: 4, 99: 4, 100: 5, 102: 5, 103: 3},
    # Slovenian, with ! and arithmetic
    "nplurals=4; plural=(n%100==1 ? 0 : n%100==2 ? 1 : !(n%100!=3) || n%100==4 ? 2 : 3);":
        {1: 0, 101: 0, 2: 1, 3: 2, 4: 2, 5: 3, 0: 3},
    "nplurals=3; plural=n/10 + n*0 - (n%10 == 9) > 1 ? 2 : n/10;": {0: 0, 9: 0, 10: 1, 19: 1, 20: 2, 29: 2, 35: 2},
}


@pytest.mark.parametrize("header", sorted(RULES))
def test_plural_rules_evaluate_like_c(header):
    nplurals, rule = parse_plural_forms(header)
    assert nplurals == int(re.search(r"nplurals=(\d+)", header).group(1))
    assert {n: rule(n) for n in RULES[header]} == RULES[header]


@pytest.mark.parametrize("header", [
    "nplurals=2; plural=__import__('os').system('true');",
    "nplurals=2; plural=n if n else 0;",
    "nplurals=2; plural=n ** 2;",
    "nplurals=2; plural=(n != 1;",
    "nplurals=2; plural=n != 1);",
    "nplurals=2; plural=n ? 1;",
    "nplurals=2; plural=n;",  # gives 2 for n=2: no such form
    "nplurals=2; plural=(n % 0);",
    "nplurals=0; plural=0;",
    "plural=(n != 1);",
    "nplurals=2; plural=(n != 1); import os",
])
def test_plural_rules_refuse_anything_else(header):
    with pytest.raises(ValueError):
        parse_plural_forms(header)


# -- on the page -------------------------------------------------------------------------

def test_conflict_messages_count_in_each_language(admin):
    from agent.store.db import Event
    from agent.store.queue import enqueue, validate_events

    def conflicts(lang: str) -> list[int]:
        enqueue(validate_events([{"type": "completion", "id": f"{lang}{i}", "course_id": 2, "user": "student1",
                                  "cmid": 1, "completed": True} for i in range(2)]))
        Event.update(status=Event.CONFLICT, last_error="refused").where(Event.status == Event.QUEUED).execute()
        return [e.id for e in Event.select().where(Event.status == Event.CONFLICT)]

    expected = {
        "en": ["1 event put back in the queue.", "2 events discarded."],
        "fr": ["1 événement remis dans la file.", "2 événements abandonnés."],
        "de": ["1 Ereignis wieder in die Warteschlange gestellt.", "2 Ereignisse verworfen."],
    }
    for lang, (one, two) in expected.items():
        admin.get(f"/lang/{lang}")
        ids = conflicts(lang)
        html = admin.get("/").get_data(as_text=True)
        assert "(s)" not in html and "(se)" not in html
        assert post(admin, "/conflicts", {"action": "retry", "id": str(ids[0])}).get_json()["message"] == one
        Event.update(status=Event.CONFLICT).where(Event.id == ids[0]).execute()
        assert post(admin, "/conflicts", {"action": "discard", "all": "1"}).get_json()["message"] == two
    admin.get("/lang/fr")
    # Nothing to retry: French says 0 in the singular.
    assert post(admin, "/conflicts", {"action": "retry", "all": "1"}).get_json()["message"] == \
        "0 événement remis dans la file."


def test_days_and_cores_on_the_page_are_counted(tmp_path):
    from datetime import timedelta

    from agent.store import settings
    from agent.auth import hash_password
    from agent.store.db import SyncRun, iso, utcnow

    cfg = write_config(tmp_path, web="stale_days = 1", agent="retention_days = 1")
    client = create_app(cfg).test_client()  # noqa: F811
    settings.put(password_hash=hash_password("correct horse battery"))
    assert login(client).status_code == 303
    SyncRun.create(trigger="cli", status=SyncRun.COMPLETED, started_at=iso(utcnow() - timedelta(hours=36)),
                   completed_at=iso(utcnow() - timedelta(hours=36)))
    html = client.get("/").get_data(as_text=True)
    assert "The last successful sync was 1 day ago" in html
    assert "sent in the last 1 day and" in html
    client.get("/lang/de")
    html = client.get("/").get_data(as_text=True)
    assert "ist 1 Tag her" in html and "innerhalb von 1 Tag gesendeten" in html
    cores = re.search(r'data-health="cpu"[^>]*>\s*<span class="health-value">([^<]*)<', html).group(1)
    assert re.fullmatch(r"\d+\.\d\d auf (1 Kern|\d+ Kernen)", cores), cores
