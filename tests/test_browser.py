"""The teacher's page in headless Chromium: gunicorn with two workers on
loopback, the agent serving the page's sync requests, the Moodle simulator."""

from __future__ import annotations

import os
import re

import pytest
import requests

from tests.browserkit import (CHROMIUM, EVENTS, TOKEN, Stack, check_dialog, expected_when, log_in, new_page, shot, stop,
                               top_run_id, wait_for_run_end)
from tests.helpers import MoodleReader

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing (apt install chromium)"),
]
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("browser"))
    yield stack
    stack.close()


def test_teacher_runs_a_sync_from_the_page(stack, browser):
    page = new_page(browser, 1280, 900)
    log_in(page, stack)
    shot(page, "desktop-1-page")

    # Sync off: the page says so and Start Sync Now is refused.
    page.get_by_label("Enable Sync").click()
    page.wait_for_selector("#sync-off-notice")
    assert "no sync runs, neither scheduled nor manual" in page.locator("#sync-off-notice").inner_text()
    assert "btn-off" in page.locator("#start").get_attribute("class")
    assert "sync-off-notice" in page.locator("#start").get_attribute("aria-describedby")
    page.locator("#start").click()
    page.wait_for_selector("#start-error:not([hidden])")
    assert "Sync is turned off" in page.locator("#start-error").inner_text()
    shot(page, "desktop-2-sync-off")
    with stack.db() as db:
        assert db.execute("SELECT COUNT(*) FROM syncrequest").fetchone()[0] == 0
    page.get_by_label("Enable Sync").click()
    page.wait_for_selector("#sync-off-notice", state="detached")
    assert "btn-off" not in page.locator("#start").get_attribute("class")

    # The daily time is kept after a reload.
    page.get_by_label("Daily at (UTC)").fill("14:35")
    page.locator('[data-region="schedule"] button[type="submit"]').click()
    playwright_api.expect(page.locator("#toast")).to_contain_text("14:35")
    page.reload()
    assert page.get_by_label("Daily at (UTC)").input_value() == "14:35"
    assert "only runs when the box is online" in page.locator('[data-region="schedule"]').inner_text()

    # Start Sync Now: live progress, then a new row with a check mark on top.
    assert stack.box.enqueue([
        {"type": "completion", "id": f"b{i}", "course_id": 2 if i % 2 else 3, "user": f"student{1 + i % 5}",
         "cmid": (1 + i % 3) if i % 2 else (4 + i % 3), "completed": True} for i in range(EVENTS)]).returncode == 0
    page.reload()
    assert page.locator("#queued").inner_text() == str(EVENTS)
    before = top_run_id(page)
    stack.sim.faults.set(latency_ms=120)  # slow enough to watch
    page.get_by_role("button", name="Start Sync Now").click()
    page.wait_for_selector("#progress:not([hidden])")
    assert page.locator("#start").is_disabled()
    seen = wait_for_run_end(page, before, on_sending=lambda p: shot(p, "desktop-3-progress", full=False))
    stack.sim.faults.set(latency_ms=0)
    phases = {s[0] for s in seen}
    assert phases & {"Checking connection", "Checking courses", "Sending events"}, seen
    assert phases <= {"Starting", "Checking connection", "Checking courses", "Sending events", "Done"}, seen
    assert all(s[3] for s in seen), "Start Sync Now must stay disabled while the run goes"
    sent = {int(s[2].split(" of ")[0]) for s in seen if s[0] == "Sending events" and s[2].endswith(f"of {EVENTS}")}
    assert sent & set(range(1, EVENTS)), f"no intermediate count of events seen: {seen}"
    assert any(s[1] == "3 of 3" for s in seen), seen
    assert not page.locator("#start").is_disabled()
    assert page.js_errors == []

    run = stack.history()[0]
    assert run["status"] == "completed" and (run["kind"], run["trigger"]) == ("sync", "page")
    assert run["actions"]["completions"] == EVENTS
    with stack.db() as db:  # the daemon served exactly the page's request
        assert db.execute("SELECT sync_id FROM syncrequest").fetchall() == [(run["id"],)]
    top = page.locator("#history tbody tr").first
    assert top.get_attribute("data-run-id") == run["id"]
    assert top.locator(".status-ok svg").count() == 1
    assert top.locator(".status-ok").inner_text() == "Success"  # the words a screen reader says
    assert page.locator("#latest-sync").inner_text().startswith(expected_when(run["started_at"]))
    assert page.locator("#queued").inner_text() == "0"

    # Information dialog: every field holds the run's true values.
    top.get_by_role("button", name=re.compile("^Information about the sync of")).click()
    check_dialog(page, run)
    shot(page, "desktop-4-information", full=False)
    page.keyboard.press("Escape")
    assert not page.locator(f"#run-{run['id']}").is_visible()
    # Keyboard only: the info button opens the dialog, Escape gives focus back.
    info = top.get_by_role("button", name=re.compile("^Information about"))
    info.focus()
    page.keyboard.press("Enter")
    assert page.locator(f"#run-{run['id']}").is_visible()
    page.keyboard.press("Escape")
    assert info.evaluate("e => e === document.activeElement")

    # Advanced settings: the server as it reported itself, notifications, Force Sync.
    page.get_by_text("Show Advanced Settings").click()
    site = MoodleReader(stack.sim.url, TOKEN).call("core_webservice_get_site_info")
    assert page.locator("#site-name").inner_text() == site["sitename"]
    assert page.locator("#site-url").inner_text() == site["siteurl"]
    assert page.get_by_role("switch", name="E-mail after each sync").is_visible()
    assert page.get_by_text("Hide Advanced Settings").is_visible()  # the toggle says what a press does
    assert not page.get_by_text("Show Advanced Settings").is_visible()
    assert "skips the check that the courses are identical" in page.locator("#force-warning").inner_text()
    page.get_by_label("E-mail address").fill("not an address")
    page.get_by_role("switch", name="E-mail after each sync").check()
    page.locator('[data-region="notify"] button[type="submit"]').click()
    page.wait_for_selector("#email-error:not([hidden])")
    assert page.get_by_label("E-mail address").get_attribute("aria-invalid") == "true"
    page.get_by_label("E-mail address").fill("head@school.example")
    page.locator('[data-region="notify"] button[type="submit"]').click()
    page.wait_for_selector("#email-error", state="hidden")
    shot(page, "desktop-5-advanced")

    # The language switch.
    page.get_by_role("link", name="FR", exact=True).click()
    assert page.get_by_role("heading", level=1).inner_text() == "Synchronisation"
    page.get_by_role("link", name="EN", exact=True).click()
    assert page.js_errors == []
    page.context.close()


def test_phone_width(stack, browser):
    page = new_page(browser, 360, 740)
    log_in(page, stack)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    shot(page, "phone-1-page")
    page.locator("#history tbody tr").first.get_by_role("button", name=re.compile("^Information about")).click()
    dialog = page.locator("dialog[open]")
    box = dialog.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 360
    shot(page, "phone-2-information", full=False)
    page.keyboard.press("Escape")
    page.get_by_text("Show Advanced Settings").click()
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    shot(page, "phone-3-advanced")
    assert page.js_errors == []
    page.context.close()


def test_the_sync_direction_is_set_on_the_page_in_english_french_and_german(stack, browser):
    page = new_page(browser, 1280, 900)
    log_in(page, stack)
    region = page.locator('[data-region="direction"]')
    select = page.locator("#direction")
    for lang, label, option, saved in (
            ("EN", "Direction", "Both ways", "It applies from the next sync on."),
            ("FR", "Sens", "Boîtier → serveur", "à partir de la prochaine synchronisation"),
            ("DE", "Richtung", "Server → Box", "ab der nächsten Synchronisierung")):
        page.get_by_role("link", name=lang, exact=True).click()
        assert region.locator("label[for=direction]").inner_text() == label
        select.select_option(label=option)
        region.locator('button[type="submit"]').click()
        playwright_api.expect(page.locator("#toast")).to_contain_text(saved)
        page.reload()
        assert select.evaluate("s => s.options[s.selectedIndex].text") == option
    shot(page, "desktop-direction-de")
    with stack.db() as db:
        assert db.execute("SELECT value FROM setting WHERE key = 'sync_direction'").fetchone()[0] == '"down"'
        db.execute("DELETE FROM setting WHERE key = 'sync_direction'")  # back to up for the tests after this one
    page.get_by_role("link", name="EN", exact=True).click()
    assert page.js_errors == []
    page.context.close()


def test_a_run_against_a_stopped_server_shows_the_alert_and_its_error(stack, browser):
    page = new_page(browser, 1280, 900)
    log_in(page, stack)
    before = top_run_id(page)
    stack.sim.stop()
    page.get_by_role("button", name="Start Sync Now").click()
    wait_for_run_end(page, before)
    run = stack.history()[0]
    assert run["status"] == "skipped_offline"
    assert run["errors"] and run["errors"][0].startswith("offline:")
    top = page.locator("#history tbody tr").first
    assert top.get_attribute("data-run-id") == run["id"]
    assert top.locator(".status-problem svg").count() == 1
    assert top.locator(".status-problem").inner_text() == "Skipped: server not reachable"
    top.get_by_role("button", name=re.compile("^Information about")).click()
    check_dialog(page, run)
    shot(page, "desktop-6-offline-information", full=False)
    page.keyboard.press("Escape")
    shot(page, "desktop-7-after-offline")
    assert page.js_errors == []

    # The access log has paths without query strings, and no secret anywhere.
    requests.get(stack.url + "/api/v1/syncs?limit=3", timeout=5)
    stop(stack.web)
    log = (stack.logs / "web.out").read_text()
    assert len(set(re.findall(r"Booting worker with pid: (\d+)", log))) >= 2
    assert '"GET /api/v1/syncs HTTP/1.1" 401' in log
    assert "limit=3" not in log
    for path in stack.logs.iterdir():
        assert TOKEN not in path.read_text()
    page.context.close()
