"""Issue 23 in headless Chromium: the page tells a teacher what happened and
what to do, in English, French and German, on a desktop and a 360-px phone.
The stack: the school's Moodle simulator, the box's own Moodle simulator
(its own ids), gunicorn with the agent daemon, syncs both ways."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

import pytest

from tests.browserkit import CHROMIUM, PASSWORD, new_page, serve_page, shot, stop
from tests.helpers import BOX_TOKEN, OFFSET_CM, TOKEN as SERVER_TOKEN, Box, MoodleReader

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing")]
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")
WIDTHS = {"desktop": (1280, 900), "phone": (360, 740)}
WORDS = {  # what each language's page must say
    "en": {"status": "Completed with warnings", "box": "The box's Moodle", "todo": "What to do:",
           "box_advice": "Check that the box's Moodle is running",
           "token": "The school's Moodle rejected the box's token.",
           "token_advice": "Ask the Moodle administrator for a new web service token",
           "down": "The school's Moodle could not be reached.",
           "down_advice": "Check the box's network connection."},
    "fr": {"status": "Terminée avec avertissements", "box": "Le Moodle du boîtier", "todo": "Que faire :",
           "box_advice": "Vérifiez que le Moodle du boîtier fonctionne",
           "token": "Le Moodle de l'établissement a refusé le jeton du boîtier.",
           "token_advice": "Demandez un nouveau jeton de service web à l'administrateur Moodle",
           "down": "Le Moodle de l'établissement est injoignable.",
           "down_advice": "Vérifiez la connexion réseau du boîtier."},
    "de": {"status": "Abgeschlossen mit Warnungen", "box": "Das Moodle der Box", "todo": "Was tun:",
           "box_advice": "Prüfen, ob das Moodle der Box läuft",
           "token": "Das Moodle der Schule hat das Token der Box abgelehnt.",
           "token_advice": "Beim Moodle-Administrator ein neues Webservice-Token anfordern",
           "down": "Das Moodle der Schule war nicht erreichbar.",
           "down_advice": "Die Netzwerkverbindung der Box prüfen."},
}


class Stack:
    def __init__(self, tmp: Path):
        from moodle_simulator import start_simulator

        self.sim = start_simulator(token=SERVER_TOKEN)
        self.boxsim = start_simulator(token=BOX_TOKEN, box=True)
        (tmp / "box-token").write_text(BOX_TOKEN + "\n")
        self.box = Box(tmp, self.sim.url, extra=(
            f"[box]\nurl = {self.boxsim.url}\ntoken_file = {tmp / 'box-token'}\ntimeout = 3\ncollect_minutes = 60\n\n"
            "[sync]\ndirection = both\n\n[schedule]\nenabled = no\n"))
        assert self.box.cli("courses", "add", "C1", "C2").returncode == 0
        assert self.box.cli("set-password", "--stdin", input=PASSWORD + "\n").returncode == 0
        env = self.box.env()
        env.pop("MOODLE_SYNC_AGENT_WORKERS", None)
        self.logs = tmp / "logs"
        self.logs.mkdir()
        try:
            self.web, self.url = serve_page(self.box, tmp, self.logs / "web.out", env)
        except BaseException:
            self.sim.stop()
            self.boxsim.stop()
            raise

    def sync(self) -> dict:
        """One sync from the command line (as a teacher's Start Sync Now would run it)."""
        for _ in range(100):
            result = self.box.cli("sync", "--json")
            if result.returncode != 4:  # 4: a collection was running: try again
                break
            time.sleep(0.2)
        assert result.stdout.startswith("{"), result.stdout + result.stderr
        return json.loads(result.stdout)

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.box.database)

    def close(self) -> None:
        stop(self.web)
        self.sim.stop()
        self.boxsim.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("reasons"))
    yield stack
    stack.close()


def open_page(browser, stack, lang: str, width: str):
    page = new_page(browser, *WIDTHS[width])
    page.goto(f"{stack.url}/lang/{lang}?next=/login")
    page.locator("#password").fill(PASSWORD)
    page.locator('form[action="/login"] button[type="submit"]').click()
    page.wait_for_selector("#start")
    assert page.locator("html").get_attribute("lang") == lang
    return page


def open_top_dialog(page):
    top = page.locator("#history tbody tr").first
    top.locator("[data-dialog]").click()
    dialog = page.locator("dialog[open]")
    assert dialog.is_visible()
    return top, dialog


def fits(page, width: str) -> None:
    limit = WIDTHS[width][0]
    assert page.evaluate("document.documentElement.scrollWidth") <= limit
    box = page.locator("dialog[open]").bounding_box() if page.locator("dialog[open]").count() else None
    if box:
        assert box["x"] >= 0 and box["x"] + box["width"] <= limit + 1


def activity_name(stack, cmid: int) -> str:
    with stack.db() as db:
        return db.execute("SELECT name FROM activity WHERE cmid = ?", (cmid,)).fetchone()[0]


# -- the tests, in order: the last stops the servers ----------------------------------------------

def test_the_dialog_names_the_learner_and_both_activities_of_a_sync_up_and_down(stack, browser):
    first = stack.sync()
    assert first["status"] == "completed", first
    # Up: student1 (box id 23, server id 3) marks the box's cmid 101 (the server's 1) done on the box.
    learner = MoodleReader(stack.boxsim.url, _learner_token(stack, "student1"))
    assert learner.call("core_completion_update_activity_completion_status_manually", cmid=1 + OFFSET_CM,
                        completed=1)["status"] is True
    # Down: a teacher grades student1's assignment (cmid 3) on the school's Moodle.
    MoodleReader(stack.sim.url, SERVER_TOKEN).call(
        "core_grades_update_grades", source="teacher", courseid=2, component="mod_assign", activityid=3,
        itemnumber=0, **{"grades[0][studentid]": 3, "grades[0][grade]": 77})
    run = stack.sync()
    assert run["actions"]["completions"] == 1 and run["actions"]["grades_down"] == 1, run
    up, down = activity_name(stack, 1), activity_name(stack, 3)
    assert up != down

    page = open_page(browser, stack, "en", "desktop")
    top, dialog = open_top_dialog(page)
    assert top.get_attribute("data-run-id") == run["id"]
    sent = dialog.locator('[data-field="moved_up"] li[data-kind="completion"]')
    assert sent.count() == 1
    assert "student1" in sent.inner_text() and up in sent.inner_text(), sent.inner_text()
    written = dialog.locator('[data-field="moved_down"] li[data-kind="grade"]')
    assert written.count() == 1
    assert "student1" in written.inner_text() and down in written.inner_text() and "77" in written.inner_text()
    # The bytes in a neutral colour (not the red of an error), and the id with a copy button.
    colours = {dialog.locator(f'[data-field="{f}"]').evaluate("e => getComputedStyle(e).color")
               for f in ("bytes_sent", "bytes_received")}
    assert len(colours) == 1
    r, g, b = map(int, re.findall(r"\d+", colours.pop())[:3])
    assert max(r, g, b) - min(r, g, b) < 40, (r, g, b)  # a grey, neither red nor green
    assert dialog.locator('[data-field="id"] code').inner_text() == run["id"]
    dialog.locator('[data-field="id"] button[data-copy]').click()
    playwright_api.expect(page.locator("#toast")).to_have_text("Sync Event ID copied.")  # the clipboard is async
    shot(page, "reasons-1-named", full=False)
    assert page.js_errors == []
    page.context.close()


def _learner_token(stack, username: str) -> str:
    import requests

    answer = requests.post(f"{stack.boxsim.url}/__sim/tokens", json={"username": username}, timeout=10)
    return answer.json()["token"]


def test_the_box_moodle_stopped_is_amber_with_a_banner_and_what_to_do_in_each_language(stack, browser):
    with stack.db() as db:  # the demo's direction, up (both ways, the way down fails too: red)
        db.execute("""INSERT OR REPLACE INTO setting (key, value) VALUES ('sync_direction', '"up"')""")
    stack.boxsim.stop()
    stopped_at = time.time()
    run = stack.sync()
    assert run["status"] == "completed_with_warnings", run
    assert {"code": "box_down"} in run["reasons"]
    with stack.db() as db:
        since = db.execute("SELECT value FROM setting WHERE key = 'box_down_since'").fetchone()[0].strip('"')
    when = since.replace("T", " ").replace("Z", " UTC")
    assert abs(time.mktime(time.strptime(since, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone - stopped_at) < 120

    for lang, words in WORDS.items():
        for width in WIDTHS:
            page = open_page(browser, stack, lang, width)
            fits(page, width)
            top = page.locator("#history tbody tr").first
            assert top.get_attribute("data-run-id") == run["id"]
            status = top.locator(".status-warn")
            assert status.inner_text().strip() == words["status"], (lang, width)
            colour = status.locator(".status-text").evaluate("e => getComputedStyle(e).color")
            r, g, b = map(int, re.findall(r"\d+", colour)[:3])
            assert r > g > b and r > 100, (lang, colour)  # amber: red above green above blue
            assert page.locator("#latest-sync .status-warn").inner_text().strip() == words["status"]
            banner = page.locator('[data-banner="box-down"]')
            assert banner.is_visible()
            assert words["box"] in banner.inner_text() and when in banner.inner_text(), banner.inner_text()
            assert words["todo"] in banner.inner_text()
            _, dialog = open_top_dialog(page)
            reason = dialog.locator('[data-reason="box_down"]')
            assert words["todo"] in reason.inner_text() and words["box_advice"] in reason.inner_text(), \
                (lang, reason.inner_text())
            fits(page, width)
            shot(page, f"reasons-2-box-down-{lang}-{width}", full=False)
            page.keyboard.press("Escape")
            if width == "phone":  # the long sections start folded on a phone
                assert page.locator("#health-card").evaluate("d => d.open") is False
                assert page.locator("#advanced").evaluate("d => d.open") is False
            else:
                assert page.locator("#health-card").evaluate("d => d.open") is True
            assert page.js_errors == []
            page.context.close()


@pytest.mark.parametrize("width", list(WIDTHS))
def test_the_token_rejected_and_the_server_down_say_what_to_do_in_french(stack, browser, width):
    words = WORDS["fr"]
    stack.sim.faults.set(reject_token=True)
    run = stack.sync()
    stack.sim.faults.clear()
    assert run["status"] == "failed" and {"code": "token_rejected"} in run["reasons"], run
    page = open_page(browser, stack, "fr", width)
    banner = page.locator('[data-banner="token"]')
    assert words["token_advice"] in banner.inner_text()
    _, dialog = open_top_dialog(page)
    reason = dialog.locator('[data-reason="token_rejected"]')
    assert words["token"] in reason.inner_text() and words["token_advice"] in reason.inner_text()
    # The raw error stays there, behind "Détails".
    raw = dialog.locator('[data-field="errors"] details')
    assert raw.locator("summary").inner_text() == "Détails"
    raw.locator("summary").click()
    assert "the server rejected the token" in raw.inner_text()
    fits(page, width)
    shot(page, f"reasons-3-token-fr-{width}", full=False)
    page.context.close()

    stack.sim.stop()
    try:
        run = stack.sync()
        assert run["status"] == "skipped_offline" and {"code": "server_unreachable"} in run["reasons"], run
        page = open_page(browser, stack, "fr", width)
        _, dialog = open_top_dialog(page)
        reason = dialog.locator('[data-reason="server_unreachable"]')
        assert words["down"] in reason.inner_text() and words["down_advice"] in reason.inner_text()
        fits(page, width)
        shot(page, f"reasons-4-server-down-fr-{width}", full=False)
        page.keyboard.press("Escape")
        page.locator("#advanced summary").click()
        assert page.locator("#server-reachable").get_attribute("data-reachable") == "no"
        assert page.locator("#server-last-contact time").count() == 1
        assert page.js_errors == []
        page.context.close()
    finally:
        _restart(stack)


def _restart(stack) -> None:
    """The school's simulator again, on a new port (for the next parameter)."""
    from moodle_simulator import start_simulator

    text = Path(stack.box.config).read_text()
    stack.sim = start_simulator(token=SERVER_TOKEN)
    stack.box.write_config(stack.sim.url, extra=text[text.index("[box]"):])
