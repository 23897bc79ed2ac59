"""The page's translations: gettext .po files compiled into .mo files
(scripts/msgfmt.py, or GNU msgfmt), read by the standard library's gettext,
plural forms chosen by each file's Plural-Forms rule, and the page using them."""

from __future__ import annotations

import configparser
import fnmatch
import gettext
import re
import shutil
import subprocess
from string import Formatter

import pytest

import msgfmt  # scripts/msgfmt.py (tests/conftest.py puts scripts/ on the path)
from webui import create_app
from webui.i18n import CATALOGS, LANGUAGES, LOCALE_DIR, mo_path, po_path, translate, translate_plural

from tests.helpers import ROOT
from tests.helpers import login, post, write_config


def fields(s: str) -> set[str]:
    return {f for _, f, _, _ in Formatter().parse(s) if f}


def messages(lang: str) -> dict[str, tuple[str, ...]]:
    """A compiled catalog's entries: key -> its form(s), the header left out."""
    out: dict[str, list[tuple[int, str]]] = {}
    for k, v in CATALOGS[lang]._catalog.items():  # type: ignore[attr-defined]
        key, index = k if isinstance(k, tuple) else (k, -1)
        if key:
            out.setdefault(key, []).append((index, v))
    return {k: tuple(v for _, v in sorted(forms)) for k, forms in out.items()}


def plural_ids(lang: str) -> set[str]:
    return {k[0] for k in CATALOGS[lang]._catalog if isinstance(k, tuple)}  # type: ignore[attr-defined]


# -- the files -------------------------------------------------------------------------

def test_every_language_has_the_same_keys_plurals_and_placeholders():
    english = messages("en")
    assert len(english) > 150
    for lang in LANGUAGES:
        catalog = messages(lang)
        assert CATALOGS[lang].info()["language"] == lang
        assert catalog.keys() == english.keys(), lang
        assert plural_ids(lang) == plural_ids("en"), lang
        for key, forms in catalog.items():
            assert len(forms) == (2 if key in plural_ids(lang) else 1), (lang, key)
            want = set().union(*(fields(f) for f in english[key]))
            for form in forms:
                assert fields(form) == want, (lang, key, form)
                form.format(**{name: 1 for name in want})  # no stray brace


def test_each_language_has_its_plural_rule():
    # English and German: 1 is singular; French: 0 and 1 are.
    singular = {"en": {1}, "de": {1}, "fr": {0, 1}}
    for lang, catalog in CATALOGS.items():
        for n in range(0, 202):
            assert catalog.plural(n) == (0 if n in singular[lang] else 1), (lang, n)  # type: ignore[attr-defined]
    text = po_path("fr").read_text(encoding="utf-8")
    assert '"Plural-Forms: nplurals=2; plural=(n > 1);\\n"' in text


PLURAL_KEYS = sorted(plural_ids("en"))


@pytest.mark.parametrize("lang", sorted(LANGUAGES))
@pytest.mark.parametrize("key", PLURAL_KEYS)
def test_plural_of_0_1_and_2(lang, key):
    def form(n: int) -> str:
        return translate_plural(lang, key, n, days=n, cores=n, load="0.50", date="2026-01-01", minutes=n,
                                hours=n, more=n, shown=n, total=7)

    assert form(1) != form(2)
    assert form(0) == (form(1).replace("1", "0", 1) if lang == "fr" else form(2).replace("2", "0", 1))
    assert form(5) == form(2).replace("2", "5", 1)


# Placeholders that hold a count: a text with one is a plural entry, in every language.
COUNT_PLACEHOLDERS = {"n", "count", "minutes", "hours", "days", "shown", "total", "more", "done", "cores", "wait"}
# The texts with a count that read right at 0, 1 and 2 as they are, and why.
FIXED_FORMS = {
    "n_hours": "an abbreviation: '{n} h', '{n} Std.'",
    "too_many": "an abbreviation: '{minutes} min.', '{minutes} Min.'",
    "reason_server_retry_after": "an abbreviation: '{wait} s'",
    "n_of_total": "a fraction: '{done} of {total}', no noun to agree with either count",
    "health_disk_value": "{total} is a size with its unit ('32 GB'), not a count",
    "health_memory_value": "{total} is a size with its unit ('1.9 GB'), not a count",
}


@pytest.mark.parametrize("lang", sorted(LANGUAGES))
def test_every_text_with_a_count_is_a_plural_entry_or_a_fixed_form(lang):
    catalog, plural = messages(lang), plural_ids(lang)
    counted = {key for key, forms in catalog.items() for form in forms if fields(form) & COUNT_PLACEHOLDERS}
    assert not (counted - plural - FIXED_FORMS.keys()), (lang, sorted(counted - plural - FIXED_FORMS.keys()))
    # The short list stays true: each of its texts has a count and is not a plural entry.
    assert FIXED_FORMS.keys() <= counted - plural, (lang, sorted(FIXED_FORMS.keys() - (counted - plural)))


def test_the_counts_that_were_plain_texts_read_right_at_0_1_and_2():
    assert translate_plural("fr", "conflicts_more", 1, shown=1, total=1) == "Affichage de 1 événement sur 1."
    assert translate_plural("fr", "conflicts_more", 50, shown=50, total=80) == "Affichage des 50 premiers sur 80."
    assert translate_plural("de", "conflicts_more", 1, shown=1, total=3) == "1 von 3 wird angezeigt."
    assert translate_plural("en", "conflicts_more", 2, shown=2, total=3) == "Showing the first 2 of 3."
    # The way_up, way_down and health_attention forms at 0, 1 and 2: test_plural_of_0_1_and_2.
    assert translate_plural("de", "way_down", 1) == "1 in das Moodle der Box"


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


# One term per language for the box and for synchronisation: what each
# language's page says, and the words it must not mix in.
GLOSSARY = {
    "en": {"box": "box", "sync": "sync", "not": [r"\bsynchronisation\b", r"\bdevice\b", r"\bappliance\b"]},
    "fr": {"box": "boîtier", "sync": "synchronisation", "not": [r"\bbox\b", r"\bsynchro\b", r"\bappareil\b"]},
    "de": {"box": "Box", "sync": "Synchronisierung", "not": [r"Synchronisation", r"\bGerät\b", r"\bBoîtier\b"]},
}


def words_of(form: str) -> str:
    """A text without its placeholders, the product's and the command's names, the INI's [box]."""
    form = re.sub(r"\{\w+\}", "", form)
    form = re.sub(r"\[box\]\s*\w*|moodle-sync-agent[\w/.-]*|Moodle Sync", "", form)
    return form


@pytest.mark.parametrize("lang", sorted(LANGUAGES))
def test_each_language_keeps_one_term_for_the_box_and_for_synchronisation(lang):
    terms = GLOSSARY[lang]
    used = {"box": 0, "sync": 0}
    for key, forms in messages(lang).items():
        for form in forms:
            text = words_of(form)
            for pattern in terms["not"]:
                assert not re.search(pattern, text, re.IGNORECASE if lang != "de" else 0), (lang, key, form)
            used["box"] += terms["box"].lower() in text.lower()
            used["sync"] += terms["sync"].lower()[:10] in text.lower()
    assert used["box"] > 10 and used["sync"] > 5, (lang, used)  # the glossary's terms are the ones in use


def test_unknown_keys_fall_back():
    assert translate("fr", "no_such_key") == "no_such_key"
    assert translate("fr", "no_such_key", default="x") == "x"
    assert translate("xx", "password") == "Password"  # an unknown language: English
    assert translate_plural("fr", "no_such_key", 2) == "no_such_key"


def test_the_package_ships_the_compiled_translations():
    """setup.cfg's package data (what the wheel and the Debian package hold)
    takes every .mo file (and the .po sources); the .mo files are not in git."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in cfg["options.package_data"]["webui"].split(",")]
    files = sorted(LOCALE_DIR.rglob("*.mo")) + sorted(LOCALE_DIR.rglob("*.po"))
    assert len(files) == 2 * len(LANGUAGES)
    for path in files:
        relative = path.relative_to(LOCALE_DIR.parent).as_posix()
        assert any(fnmatch.fnmatch(relative, p) and p.count("/") == relative.count("/") for p in patterns), relative
    assert "*.mo" in (ROOT / ".gitignore").read_text().split()
    if (ROOT / ".git").exists() and shutil.which("git"):
        tracked = subprocess.run(["git", "ls-files", "webui/locale"], cwd=ROOT, capture_output=True, text=True)
        assert ".mo" not in tracked.stdout
    assert not (ROOT / "webui" / "po.py").exists()


# -- the compiler ------------------------------------------------------------------------

HEADER = 'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n"Plural-Forms: nplurals=2; plural=n != 1;\\n"\n'

SAMPLE = HEADER + r'''
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
'''


def compiled(tmp_path, builtin: bool) -> gettext.GNUTranslations:
    po = tmp_path / ("b" if builtin else "g") / "messages.po"
    po.parent.mkdir()
    po.write_text(SAMPLE, encoding="utf-8")
    with open(msgfmt.compile_one(po, builtin=builtin), "rb") as f:
        return gettext.GNUTranslations(f)


def test_the_stdlib_compiler_reads_what_msgfmt_reads(tmp_path):
    t = compiled(tmp_path, builtin=True)
    assert t.gettext("quotes") == 'say "hi"\tback\\slash\nnew line AB'
    assert t.gettext("long") == "first part, second part"
    assert t.gettext("open") == "Open"
    assert t.pgettext("menu", "open") == "Open (menu)"
    for untranslated in ("fuzzy", "empty", "obsolete"):
        assert t.gettext(untranslated) == untranslated
    assert [t.ngettext("files", "files", n) for n in (0, 1, 2)] == ["{n} files", "{n} file", "{n} files"]
    assert t.gettext("no blank line before") == "still read"
    if shutil.which("msgfmt"):  # GNU msgfmt compiles the same catalog
        assert compiled(tmp_path, builtin=False)._catalog == t._catalog  # type: ignore[attr-defined]


def test_the_stdlib_compiler_gives_the_page_the_same_catalogs_as_msgfmt(tmp_path):
    if not shutil.which("msgfmt"):
        pytest.skip("GNU msgfmt (package gettext) is not installed")
    for lang in LANGUAGES:
        ours = gettext.GNUTranslations(open(msgfmt.compile_one(_copy(tmp_path, lang, "b"), builtin=True), "rb"))
        gnu = gettext.GNUTranslations(open(msgfmt.compile_one(_copy(tmp_path, lang, "g"), builtin=False), "rb"))
        assert ours._catalog == gnu._catalog, lang  # type: ignore[attr-defined]


def _copy(tmp_path, lang, which):
    target = tmp_path / which / lang / "messages.po"
    target.parent.mkdir(parents=True)
    shutil.copy(po_path(lang), target)
    return target


@pytest.mark.parametrize("body, problem", [
    ('msgid "a"\nmsgstr "b', "expected a string in double quotes"),
    ('msgstr "b"\n', "msgstr before msgid"),
    ('msgid "a"\nmsgstr "x"\n\nmsgid "a"\nmsgstr "y"\n', "given twice"),
    ('msgid "a"\nmsgstr "x"\nwhat is this\n', "cannot read"),
])
def test_the_stdlib_compiler_names_the_line_of_a_bad_file(body, problem):
    with pytest.raises(msgfmt.PoError) as err:
        msgfmt.parse(HEADER + "\n" + body, "fr.po")
    assert problem in str(err.value)
    assert re.match(r"fr\.po(:\d+)?: ", str(err.value))


def test_the_stdlib_compiler_needs_a_keyword_and_a_header():
    with pytest.raises(msgfmt.PoError, match="a string with no keyword"):
        msgfmt.parse('"loose"\n', "fr.po")
    with pytest.raises(msgfmt.PoError, match="no header"):
        msgfmt.parse('msgid "a"\nmsgstr "b"\n', "fr.po")


def test_a_missing_mo_file_stops_the_start_with_the_command_to_run(tmp_path, monkeypatch):
    import webui.i18n as i18n
    assert mo_path("fr").exists()
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    with pytest.raises(i18n.MissingCatalog, match="scripts/msgfmt.py"):
        i18n.load("fr")


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
    from agent.store.db import Run, iso, utcnow

    cfg = write_config(tmp_path, web="stale_days = 1", agent="retention_days = 1")
    client = create_app(cfg).test_client()  # noqa: F811
    settings.put(password_hash=hash_password("correct horse battery"))
    assert login(client).status_code == 303
    Run.create(trigger="cli", status=Run.COMPLETED, started_at=iso(utcnow() - timedelta(hours=36)),
                   completed_at=iso(utcnow() - timedelta(hours=36)))
    html = client.get("/").get_data(as_text=True)
    assert "The last successful sync was 1 day ago" in html
    assert "sent in the last 1 day and" in html
    client.get("/lang/de")
    html = client.get("/").get_data(as_text=True)
    assert "ist 1 Tag her" in html and "innerhalb von 1 Tag gesendeten" in html
    cores = re.search(r'data-health="cpu"[^>]*>\s*<span class="health-value">([^<]*)<', html).group(1)
    assert re.fullmatch(r"\d+,\d\d auf (1 Kern|\d+ Kernen)", cores), cores  # a decimal comma in German


def test_the_table_of_reasons_and_the_page_say_the_same():
    """agent/reasons.py (the CLI's and the e-mail's English) and the page's
    catalogs: every reason has its sentence and advice in every language,
    the English ones word for word, counted ones as plural entries."""
    from agent.reasons import COUNTED, TABLE

    english = messages("en")
    for code, r in TABLE.items():
        for lang in LANGUAGES:
            assert f"reason_{code}" in messages(lang) and f"advice_{code}" in messages(lang), (lang, code)
        assert english[f"advice_{code}"] == (r.advice,), code
        if code in COUNTED:
            assert f"reason_{code}" in plural_ids("en")
            assert english[f"reason_{code}"] == (r.one, r.sentence), code
        else:
            assert english[f"reason_{code}"] == (r.sentence,), code
