"""Swagger UI and Django's admin under the Content-Security-Policy, in a real headless browser.

The policy allows no inline script; a page that still needed one would break silently in
production. Chromium reports each violation on the console; none may appear, and the
pages must work: Swagger UI lists the operations, the admin calendar's project filter
(a script file since the policy) still submits on change.
"""
from __future__ import annotations

import pytest

from tests.pages.test_upload_browser import PASSWORD

pytestmark = pytest.mark.browser


def _violations(page) -> list[str]:
    found: list[str] = []
    page.on("console", lambda message: found.append(message.text)
            if "Content Security Policy" in message.text else None)
    return found


def test_swagger_ui_and_the_admin_run_under_the_policy(live_server, browser_page, project):
    from playwright.sync_api import expect

    from tests.factories import UserFactory

    page = browser_page
    violations = _violations(page)
    page.goto(f"{live_server.url}/api/docs/")
    expect(page.locator(".opblock").first).to_be_visible()

    UserFactory(username="csp-admin", password=PASSWORD, is_staff=True, is_superuser=True)
    page.goto(f"{live_server.url}/admin/login/?next=/admin/challenges/challenge/calendar/")
    page.fill("#id_username", "csp-admin")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    select = page.locator("select[name=project]")
    expect(select).to_be_visible()
    select.select_option(str(project.pk))
    page.wait_for_url(f"**project={project.pk}**")
    assert violations == []
