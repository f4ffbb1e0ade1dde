"""Sign-up and the impact page in a real headless browser, at a phone's and a desktop's size."""
from __future__ import annotations

import pytest

from tests.pages.conftest import log_in

PASSWORD = "a long enough passphrase 42"

pytestmark = pytest.mark.browser
BOTH = pytest.mark.parametrize(
    "browser_page", [{"viewport": "phone"}, {"viewport": "desktop"}], indirect=True, ids=["phone", "desktop"]
)


def _fill_signup(page, username, email):
    page.get_by_label("Username").fill(username)
    page.get_by_label("Email").fill(email)
    page.locator("#id_password1").fill(PASSWORD)
    page.locator("#id_password2").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()


@BOTH
def test_signup_works_and_a_refusal_keeps_what_was_typed(live_server, browser_page, settings, challenge):
    from django.contrib.auth import get_user_model
    from playwright.sync_api import expect

    settings.PLATFORM_SIGNUP_RATE = "1/hour"
    page = browser_page
    page.goto(f"{live_server.url}/accounts/signup/")
    _fill_signup(page, "first-pupil", "first@school.example")
    page.wait_for_url(f"{live_server.url}/")
    expect(page.get_by_text("Drop photos here")).to_be_visible()

    # The second pupil behind the same address: refused, the form comes back with what was typed.
    page.context.clear_cookies()
    page.goto(f"{live_server.url}/accounts/signup/")
    _fill_signup(page, "second-pupil", "second@school.example")
    expect(page.locator("#signup-refusal")).to_contain_text("try again in about")
    expect(page.get_by_label("Username")).to_have_value("second-pupil")
    expect(page.get_by_label("Email")).to_have_value("second@school.example")
    expect(page.locator("#id_password1")).to_have_value("")
    assert list(get_user_model().objects.values_list("username", flat=True)) == ["first-pupil"]


@BOTH
def test_the_impact_page_draws_bars_and_ranks(live_server, browser_page, project, staff):
    from playwright.sync_api import expect

    from submissions.services import photo_moderate
    from tests.factories import UserFactory
    from tests.leaderboards.test_impact import _entry, _publish
    from tests.moderation.conftest import make_photo

    volunteer = UserFactory(username="impact", password=PASSWORD)
    mine = [
        photo_moderate(photo=make_photo(project=project, volunteer=volunteer), moderator=staff, approve=True)
        for _ in range(2)
    ]
    _publish(project, 1, [_entry(mine[0], "train"), _entry(mine[1], "holdout")])
    page = browser_page
    log_in(page, live_server.url, "impact", PASSWORD)
    page.get_by_role("link", name="My impact").click()
    expect(page.get_by_role("heading", name="My impact")).to_be_visible()
    bar = page.get_by_role("img", name="1 photos learnt from, 1 tested on")
    expect(bar).to_be_visible()
    widths = page.evaluate(
        "Array.from(document.querySelectorAll('#impact-versions .bar span')).map(s => s.getBoundingClientRect().width)"
    )
    box = bar.bounding_box()
    assert len(widths) == 2 and all(abs(w - box["width"] / 2) < 2 for w in widths)  # half and half of the bar
    expect(page.locator(".ranks .big")).to_have_text(["#1", "#1", "#1"])
    # Nothing overflows the phone's screen.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
