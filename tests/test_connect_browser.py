"""The advanced settings' "Connect to Moodle" in headless Chromium: gunicorn on loopback, the
Moodle simulator with its non-admin sync account; the box starts with an administrator's token
and the teacher replaces it with the sync account's (issue 20)."""

from __future__ import annotations


import pytest

from tests.helpers import Box
from tests.browserkit import CHROMIUM_ARGS, CHROMIUM, new_page, serve_page, shot, stop
from tests.helpers import ADMIN_TOKEN, NEVER_CALLED, sim_accounts

pytestmark = [pytest.mark.browser]
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")
PASSWORD = "teacher-pass-1"


def test_the_teacher_connects_the_sync_account_from_the_advanced_settings(tmp_path):
    from moodle_simulator import start_simulator

    acc = sim_accounts()
    with start_simulator(token=ADMIN_TOKEN, sync_account=True, without_functions=NEVER_CALLED) as sim:
        box = Box(tmp_path, sim.url, token=ADMIN_TOKEN, extra="[schedule]\nenabled = no\n")
        assert box.cli("set-password", "--stdin", input=PASSWORD + "\n").returncode == 0
        assert "a site administrator" in box.cli("check").stdout  # the page shows what check found
        web, url = serve_page(box, tmp_path, tmp_path / "web.out")
        try:
            with playwright_api.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = new_page(browser, 1280, 900)
                page.goto(url + "/login")
                page.get_by_label("Password").fill(PASSWORD)
                page.get_by_role("button", name="Log in").click()
                page.wait_for_selector("#start")
                page.locator("#advanced summary").click()
                assert page.locator("#server-account").inner_text().endswith("account admin, a site administrator")
                assert page.locator('[data-rights="server"]').first.inner_text().startswith(
                    "The token belongs to a site administrator")
                page.get_by_label("Moodle account").fill(acc.SYNC_USERNAME)
                page.get_by_label("Its Moodle password").fill(acc.SYNC_PASSWORD)
                page.get_by_label("This page's admin password").fill(PASSWORD)
                page.get_by_role("button", name="Connect", exact=True).click()
                page.wait_for_selector(".flash-info")
                assert page.locator(".flash-info").inner_text().strip() == (
                    "Connected to Moodle Reference Server: account syncagent, not a site administrator.")
                page.locator("#advanced summary").click()
                assert page.locator("#server-account").inner_text().endswith(
                    "account syncagent, not a site administrator")
                assert page.locator('[data-rights="server"]').count() == 0
                shot(page, "connect-sync-account")
                # The Moodle password is in no field or text of the page after the form was sent.
                assert acc.SYNC_PASSWORD not in page.content()
                assert page.js_errors == []
                browser.close()
            assert box.dir.joinpath("token").read_text().strip() != ADMIN_TOKEN
        finally:
            stop(web)
        assert acc.SYNC_PASSWORD not in (tmp_path / "web.out").read_text()
