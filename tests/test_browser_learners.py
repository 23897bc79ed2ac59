"""The Learners screen in headless Chromium (issue 19): gunicorn on loopback,
the box's Moodle and the school's as two simulators. A teacher adds a
learner, prints the login cards, and sets a password for a learner the sync
brought down from the server; each learner then logs in on the box's Moodle."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import requests

from tests.browserkit import CHROMIUM, CHROMIUM_ARGS, PASSWORD, new_page, serve_page, shot, stop
from tests.helpers import BOX_C1, BOX_TOKEN, C1, Box, MoodleReader, box_section

TOKEN = "b1e5a2c3d4e5f60718293a4b5c6d7e8f"  # a Moodle token: 32 hex digits

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing")]
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")


def can_log_in(sim, username: str, password: str) -> bool:
    answer = requests.post(f"{sim.url}/login/token.php", timeout=10,
                           data={"username": username, "password": password, "service": "moodle_mobile_app"}).json()
    return "token" in answer


class Stack:
    def __init__(self, tmp: Path):
        from moodle_simulator import start_simulator

        self.server = start_simulator(token=TOKEN, mobile_services=True)
        self.boxsim = start_simulator(token=BOX_TOKEN, box=True)
        self.box = Box(tmp, self.server.url, token=TOKEN,
                       extra=box_section(tmp, self.boxsim) + "\n[sync]\ndirection = both\n[schedule]\nenabled = no\n")
        assert self.box.cli("courses", "add", "C1", "C2").returncode == 0
        assert self.box.cli("set-password", "--stdin", input=PASSWORD + "\n").returncode == 0
        try:
            self.web, self.url = serve_page(self.box, tmp, tmp / "web.out")
        except BaseException:
            self.server.stop()
            self.boxsim.stop()
            raise

    def sync(self) -> dict:
        result = self.box.cli("sync", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def close(self) -> None:
        stop(self.web)
        self.server.stop()
        self.boxsim.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("learners"))
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def log_in(page, stack) -> None:
    page.goto(stack.url + "/login")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("#start")


def test_add_a_learner_print_the_cards_set_a_password(stack, browser):
    # A learner enrolled on the server comes down to the box (createpassword): they need a password.
    requests.post(f"{stack.server.url}/__sim/edit", json={"op": "add_user", "username": "noor", "firstname": "Noor",
                                                          "lastname": "Server"}, timeout=10).raise_for_status()
    requests.post(f"{stack.server.url}/__sim/edit", json={"op": "enrol_user", "username": "noor", "courseid": C1},
                  timeout=10).raise_for_status()
    stack.sync()
    stack.sync()  # its collection lists noor on the box

    page = new_page(browser, 1280, 900)
    log_in(page, stack)
    # Every request from loading the screen through the print view: the box's own page only.
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    page.click("#learners-link")
    page.wait_for_selector("h1:text('Learners')")
    noor = page.locator("tr[data-username='noor']")
    assert noor.locator("[data-needs-password]").inner_text() == "needs a password"

    # Add a learner, the password generated.
    page.fill("#add-username", "lea")
    page.fill("#add-firstname", "Lea")
    page.fill("#add-lastname", "Page")
    page.check(f"input[name='course'][value='{C1}']")
    page.get_by_role("button", name="Add the learner").click()
    page.wait_for_selector("#cards")
    card = page.locator(".login-card[data-username='lea']")
    password = card.locator(".login-card-password").inner_text()
    assert re.fullmatch(r"[A-Z][a-z]{3}[#*+-][2-9]{2}[a-z]{2}", password), password
    assert can_log_in(stack.boxsim, "lea", password)
    assert "lea" in MoodleReader(stack.boxsim.url, BOX_TOKEN).enrolled(BOX_C1)
    assert page.locator("tr[data-username='lea'] .account").inner_text() == "waiting for the next sync"
    shot(page, "learners-cards")

    # The print view: the cards alone, on A4, nothing from outside the box.
    page.emulate_media(media="print")
    assert page.locator(".login-card").is_visible() and not page.locator("#add-learner").is_visible()
    assert not page.locator(".topbar").is_visible() and not page.locator("#print-cards").is_visible()
    # (A sheet from elsewhere would not let its rules be read: skipped here, caught by the requests below.)
    page_sizes = page.evaluate("""() => [...document.styleSheets].flatMap(sheet => {
            try { return [...sheet.cssRules]; } catch (e) { return []; } })
        .filter(rule => rule.type === CSSRule.PAGE_RULE).map(rule => rule.style.getPropertyValue("size"))""")
    assert [size.lower() for size in page_sizes] == ["a4"], page_sizes  # the print CSS's @page { size: A4 }
    # No format asked: the PDF's pages are the size the CSS gives them (Chromium's default is Letter).
    pdf = page.pdf(print_background=True, prefer_css_page_size=True)
    assert pdf.startswith(b"%PDF")
    boxes = {tuple(round(float(v)) for v in m) for m in re.findall(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", pdf)}
    assert boxes == {(595, 842)}, boxes  # A4 in points
    assert asked and all(url.startswith(stack.url + "/") for url in asked), [u for u in asked
                                                                             if not u.startswith(stack.url + "/")]
    assert any(url.endswith("/learners.css") or "/learners.css?" in url for url in asked), asked
    page.emulate_media(media="screen")
    html = page.content()
    assert not [u for u in re.findall(r"(?:href|src)=\"(https?://[^\"]+)", html) if not u.startswith(stack.url)]
    assert page.js_errors == [], page.js_errors

    # Shown once: a reload shows the plain screen, without the password.
    page.reload()
    page.wait_for_selector("h1:text('Learners')")
    assert page.locator("#cards").count() == 0 and password not in page.content()

    # Noor's password generated, also on the server (the default: the agent made the account).
    assert page.locator("tr[data-username='noor'] input[name='also_server']").is_checked()
    assert page.locator("p", has_text="1 learner needs a password").count() == 1
    page.click("#generate-all")
    page.wait_for_selector(".login-card[data-username='noor']")
    noor_password = page.locator(".login-card[data-username='noor'] .login-card-password").inner_text()
    assert can_log_in(stack.boxsim, "noor", noor_password)
    assert page.locator("tr[data-username='noor'] [data-needs-password]").count() == 0
    page.reload()
    assert noor_password not in page.content() and page.locator("#generate-all").count() == 0

    # A password typed for a learner the agent did not make: on the box only, unless asked.
    row = page.locator("tr[data-username='student5']")
    assert not row.locator("input[name='also_server']").is_checked()
    row.locator("input[name='password']").fill("Typed#Pass2026")
    row.get_by_role("button", name="Set a password").click()
    page.wait_for_selector(".login-card[data-username='student5']")
    assert "Works on the classroom's Moodle." in page.locator(".login-card[data-username='student5']").inner_text()
    assert can_log_in(stack.boxsim, "student5", "Typed#Pass2026")

    # The next sync: both log in on the server with the same passwords.
    stack.sync()
    assert can_log_in(stack.server, "lea", password) and can_log_in(stack.server, "noor", noor_password)
    assert not can_log_in(stack.server, "student5", "Typed#Pass2026")

    # The screen in French and German.
    for code, heading, button in (("fr", "Apprenants", "Ajouter l'apprenant"), ("de", "Lernende", "Lernende hinzufügen")):
        page.goto(f"{stack.url}/lang/{code}?next=/learners")
        assert page.locator("h1").inner_text() == heading
        assert page.get_by_role("button", name=button).count() == 1
    page.goto(f"{stack.url}/lang/en?next=/learners")
    assert page.js_errors == [], page.js_errors
    page.context.close()


def test_a_refusal_is_shown_as_the_boxs_moodle_said_it_and_the_form_keeps_its_values(stack, browser):
    page = new_page(browser, 1280, 900)
    log_in(page, stack)
    page.goto(stack.url + "/learners")
    page.fill("#add-username", "weakling")
    page.fill("#add-firstname", "Weak")
    page.fill("#add-lastname", "Ling")
    page.fill("#add-password", "abc")
    page.check(f"input[name='course'][value='{C1}']")
    page.get_by_role("button", name="Add the learner").click()
    error = page.locator("#learners-error").inner_text()
    assert "Passwords must be at least 8 characters long." in error, error
    assert page.input_value("#add-username") == "weakling" and page.locator("#cards").count() == 0
    page.fill("#add-username", "student1")
    page.fill("#add-password", "")
    page.get_by_role("button", name="Add the learner").click()
    assert "'student1' already exists on the box's Moodle" in page.locator("#learners-error").inner_text()
    assert page.locator("#add-username").get_attribute("aria-invalid") == "true"
    page.context.close()
