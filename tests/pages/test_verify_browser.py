"""The verification page in a real headless Chromium: vote by button on a phone, by keyboard on a desktop."""
from __future__ import annotations

import pytest

from tests.pages.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.pages.test_upload_browser import PASSWORD

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"Debian's chromium is not installed at {CHROMIUM}"),
]

PHONE = {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}


@pytest.fixture
def chromium(monkeypatch):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements.txt)")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def two_to_check(project, settings):
    """A volunteer taking part in the project, and two photos of others waiting for a check."""
    from submissions.models import Photo
    from tests.factories import UserFactory
    from tests.moderation.conftest import make_photo

    settings.PLATFORM_VERIFY_GOLD_SHARE = 0.0
    volunteer = UserFactory(username="checker", password=PASSWORD)
    make_photo(project=project, volunteer=volunteer, status=Photo.Status.APPROVED)
    for index in range(2):
        make_photo(project=project, volunteer=UserFactory(), label="ants", color=(30 * index, 90, 160))
    return volunteer


def _log_in(page, base_url: str) -> None:
    page.goto(f"{base_url}/accounts/login/?next=/verify/")
    page.get_by_label("Username").fill("checker")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


@pytest.mark.parametrize("device", ["phone", "desktop"])
def test_vote_by_button_and_by_keyboard(live_server, chromium, two_to_check, device):
    from playwright.sync_api import expect

    from verification.models import VerificationTask

    context = chromium.new_context(**(PHONE if device == "phone" else DESKTOP))
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        _log_in(page, live_server.url)
        expect(page.get_by_role("heading", name="Is this ants?")).to_be_visible()
        image = page.get_by_role("img", name="A photo another volunteer sent")
        expect(image).to_be_visible()
        assert page.evaluate("img => img.complete && img.naturalWidth > 0", image.element_handle())
        yes = page.get_by_role("button", name="Yes")
        box = yes.bounding_box()
        assert box["height"] >= 44 and box["width"] >= 80  # a thumb-sized target
        if device == "phone":
            assert box["x"] + box["width"] <= 390  # no sideways scrolling
        yes.click()
        expect(page.get_by_text("Thank you! Here is the next one.")).to_be_visible()
        expect(page.get_by_role("heading", name="Is this ants?")).to_be_visible()
        page.keyboard.press("n")
        expect(page.get_by_role("heading", name="Nothing to check right now")).to_be_visible()
    finally:
        context.close()
    answers = list(VerificationTask.objects.filter(volunteer=two_to_check).order_by("answered_at")
                   .values_list("answer", flat=True))
    assert answers == ["yes", "no"]
