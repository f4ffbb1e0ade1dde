"""The upload page in a real headless browser: log in, pick photos, watch per-file progress."""
from __future__ import annotations

import re
from pathlib import Path

import pytest


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
PASSWORD = "a long enough passphrase 42"
SCREENSHOT = Path("/tmp/upload_page.png")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"Debian's chromium is not installed at {CHROMIUM}"),
]


@pytest.fixture
def browser_page(request, monkeypatch):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements.txt)")
    # Playwright's sync API runs an event loop in this thread; the test's ORM calls are still synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        # A phone-sized screen: 420 px wide, touch.
        javascript = getattr(request, "param", True)
        context = browser.new_context(
            viewport={"width": 420, "height": 900}, has_touch=True, is_mobile=True, java_script_enabled=javascript
        )
        page = context.new_page()
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()


def test_upload_several_photos_with_progress_then_listed(live_server, browser_page, challenge, hymenoptera):
    from playwright.sync_api import expect

    from submissions.models import Photo, UploadIdempotencyKey
    from tests.factories import UserFactory

    volunteer = UserFactory(username="browser", password=PASSWORD)
    ants = sorted((hymenoptera / "train" / "ants").glob("*.jpg"))[:2]
    page = browser_page

    page.goto(f"{live_server.url}/accounts/login/?next=/")
    page.get_by_label("Username").fill("browser")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Drop photos here")).to_be_visible()
    expect(page.locator(".no-js-submit")).to_be_hidden()

    form = page.locator("form.upload-form").first
    form.get_by_label("What is in the photo?").select_option("ants")
    form.locator("input[name=image]").set_input_files([str(path) for path in ants])

    results = form.locator(".uploads .result")
    expect(results).to_have_count(2)
    for index in range(2):
        expect(results.nth(index)).to_have_text("accepted")
    expect(form.locator(".uploads progress").first).to_have_attribute("value", "100")
    expect(page.locator("#my-photos li")).to_have_count(2)
    expect(page.locator("#my-photos img").first).to_have_attribute("src", re.compile(r"/photos/[0-9a-f-]{36}/thumbnail"))

    # The same file again: refused, and the API's message is shown next to it.
    form.locator("input[name=image]").set_input_files(str(ants[0]))
    expect(results).to_have_count(3)
    expect(results.nth(2)).to_contain_text("Not accepted")

    page.screenshot(path=str(SCREENSHOT), full_page=True)

    photos = Photo.objects.filter(volunteer=volunteer)
    assert photos.count() == 2 and set(photos.values_list("label__name", flat=True)) == {"ants"}
    # Every file went with its own Idempotency-Key.
    assert UploadIdempotencyKey.objects.filter(volunteer=volunteer).count() >= 2

    page.goto(f"{live_server.url}/me/photos/")
    expect(page.get_by_role("heading", name="My photos")).to_be_visible()
    expect(page.locator("#my-photos li")).to_have_count(2)
    expect(page.locator("#my-photos").get_by_text("Pending").first).to_be_visible()
    # The owner's thumbnails load (the image route answers the session).
    loaded = page.evaluate("Array.from(document.querySelectorAll('#my-photos img')).every(i => i.complete && i.naturalWidth > 0)")
    assert loaded


@pytest.mark.parametrize("browser_page", [False], indirect=True, ids=["no-javascript"])
def test_plain_form_still_uploads_without_javascript(live_server, browser_page, challenge, hymenoptera):
    from playwright.sync_api import expect

    from submissions.models import Photo
    from tests.factories import UserFactory

    volunteer = UserFactory(username="nojs", password=PASSWORD)
    page = browser_page
    page.goto(f"{live_server.url}/accounts/login/?next=/")
    page.get_by_label("Username").fill("nojs")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Drop photos here")).to_be_hidden()
    page.locator("input[name=image]").first.set_input_files(str(sorted((hymenoptera / "train" / "ants").glob("*.jpg"))[0]))
    page.get_by_role("button", name="Send photo").first.click()
    expect(page.get_by_text("waiting for moderation")).to_be_visible()
    assert Photo.objects.filter(volunteer=volunteer).count() == 1
