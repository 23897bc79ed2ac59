"""The Health panel and the Verify button in headless Chromium, on the same
stack as the page's other browser tests (gunicorn, the agent, the simulator)."""

from __future__ import annotations

import pytest

from tests.browserkit import Stack, log_in, new_page, shot, top_run_id, wait_for_run_end

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("health-page"))
    yield stack
    stack.close()


def test_health_panel_and_verify_button(stack, browser):  # noqa: F811
    events = [{"type": "completion", "id": f"c{i}", "course_id": 2, "user": f"student{i}", "cmid": 1,
               "completed": True} for i in (1, 2, 3)]
    assert stack.box.enqueue(events).returncode == 0
    assert stack.box.cli("sync").returncode == 0
    stack.sim.state.forget(userid=4, cmid=1)  # student2's completion, lost on the server

    page = new_page(browser, 390, 844)
    log_in(page, stack)
    panel = page.locator('[data-region="health"]')
    assert panel.get_by_role("heading", name="Box health").is_visible()
    # On a phone the section starts folded: its heading unfolds it.
    assert not panel.locator('[data-health="network"]').is_visible()
    panel.get_by_role("heading", name="Box health").click()
    assert panel.locator('[data-health="disk"]').inner_text().strip().endswith("%)")
    assert panel.locator('[data-health="network"]').is_visible()
    shot(page, "health-phone")

    before = top_run_id(page)
    page.locator("#advanced summary").click()
    page.locator("#verify").scroll_into_view_if_needed()
    shot(page, "verify-advanced", full=False)
    page.get_by_role("button", name="Verify Now").click()
    wait_for_run_end(page, before)
    row = page.locator("#history tbody tr").first
    assert "Verify" in row.locator(".trigger").inner_text()
    row.locator("[data-dialog]").click()
    dialog = page.locator("dialog[open]")
    assert dialog.locator('[data-kind="checked"] strong').inner_text() == "3"
    assert dialog.locator('[data-kind="requeued"] strong').inner_text() == "1"
    assert page.js_errors == []

    with stack.db() as db:
        assert db.execute("SELECT key FROM event WHERE status = 'queued'").fetchall() == [("c2",)]
