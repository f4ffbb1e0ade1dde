"""The upload page in a real headless browser (phone and desktop): previews, a label per photo,
per-file progress, the next step in plain words, and the model's opinion once it is there."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from tests.conftest import jpeg_bytes
from tests.pages.conftest import log_in

PASSWORD = "a long enough passphrase 42"
SCREENSHOT = Path("/tmp/upload_page.png")
PREVIEWS_SCREENSHOT = Path("/tmp/upload_previews.png")

pytestmark = pytest.mark.browser
BOTH = pytest.mark.parametrize(
    "browser_page", [{"viewport": "phone"}, {"viewport": "desktop"}], indirect=True, ids=["phone", "desktop"]
)


@BOTH
def test_previews_need_a_label_each_and_labels_are_sent_per_photo(live_server, browser_page, challenge, hymenoptera):
    from playwright.sync_api import expect

    from submissions.models import Photo, UploadIdempotencyKey
    from tests.factories import UserFactory

    volunteer = UserFactory(username="browser", password=PASSWORD)
    ant = sorted((hymenoptera / "train" / "ants").glob("*.jpg"))[0]
    bee = sorted((hymenoptera / "train" / "bees").glob("*.jpg"))[0]
    page = browser_page
    log_in(page, live_server.url, "browser", PASSWORD)
    expect(page.get_by_text("Drop photos here")).to_be_visible()
    expect(page.locator(".no-js-submit")).to_be_hidden()

    form = page.locator("form.upload-form").first
    form.locator("input[name=image]").set_input_files([str(ant), str(bee)])
    # Previews, nothing sent yet, no label chosen for anyone.
    previews = form.locator(".previews li")
    expect(previews).to_have_count(2)
    expect(previews.locator("img.preview").first).to_have_attribute("src", re.compile(r"^blob:"))
    assert page.evaluate("Array.from(document.querySelectorAll('.previews img.preview')).every(i => i.complete && i.naturalWidth > 0)")
    send = form.locator(".send-button")
    expect(send).to_be_disabled()
    expect(send).to_have_text("Choose a label for photos 1, 2")
    assert Photo.objects.count() == 0

    form.get_by_label(f"Label of {ant.name}").select_option("ants")
    expect(send).to_have_text("Choose a label for photo 2")
    page.screenshot(path=str(PREVIEWS_SCREENSHOT), full_page=True)
    expect(send).to_be_disabled()
    form.get_by_label(f"Label of {bee.name}").select_option("bees")
    expect(send).to_have_text("Send 2 photos")
    send.click()

    results = form.locator(".uploads .result")
    expect(results).to_have_count(2)
    for index in range(2):
        expect(results.nth(index)).to_have_text("Received.")
    expect(form.locator(".uploads .next-step").first).to_contain_text("points arrive when it is approved")
    expect(previews).to_have_count(0)
    expect(page.locator("#my-photos li")).to_have_count(2)
    expect(page.locator("#my-photos img").first).to_have_attribute("src", re.compile(r"/photos/[0-9a-f-]{36}/thumbnail"))
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    photos = Photo.objects.filter(volunteer=volunteer)
    # Each file went with its own label.
    sent = {hashlib.sha256(path.read_bytes()).hexdigest(): label for path, label in [(ant, "ants"), (bee, "bees")]}
    assert {p.upload_sha256: p.label.name for p in photos} == sent
    assert UploadIdempotencyKey.objects.filter(volunteer=volunteer).count() == 2

    # The same file again: refused, and the API's message is shown next to it.
    form.locator("input[name=image]").set_input_files(str(ant))
    form.get_by_label(f"Label of {ant.name}").select_option("ants")
    send.click()
    expect(results).to_have_count(3)
    expect(results.nth(2)).to_contain_text("Not accepted")

    page.goto(f"{live_server.url}/me/photos/")
    expect(page.get_by_role("heading", name="My photos")).to_be_visible()
    expect(page.locator("#my-photos li")).to_have_count(2)
    expect(page.locator("#my-photos").get_by_text("Waiting for a check").first).to_be_visible()
    # Every thumbnail loads (scrolled into view first: a phone's screen shows one at a time, and
    # the page may still be fetching them); a broken one times out here.
    for image in page.locator("#my-photos img").all():
        image.scroll_into_view_if_needed()
    page.wait_for_function("Array.from(document.querySelectorAll('#my-photos img')).every(i => i.complete && i.naturalWidth > 0)")


def test_the_page_shows_the_models_opinion_when_the_follow_up_has_scored(live_server, browser_page, challenge, tmp_path):
    """The follow-up runs after commit; the page polls the photo until the opinion is there."""
    from playwright.sync_api import expect

    from submissions.models import Photo
    from tests.factories import UserFactory

    UserFactory(username="opinion", password=PASSWORD)
    page = browser_page
    log_in(page, live_server.url, "opinion", PASSWORD)
    form = page.locator("form.upload-form").first
    ant = tmp_path / "red-ant.jpg"
    ant.write_bytes(jpeg_bytes(size=(320, 240)))
    form.locator("input[name=image]").set_input_files(str(ant))
    form.get_by_label(f"Label of {ant.name}").select_option("ants")
    form.locator(".send-button").click()
    expect(form.locator(".uploads .result")).to_have_text("Received.")
    # Stand in for the scoring task (it needs a published model): the page is still polling.
    Photo.objects.update(model_top_label="bees", model_top_confidence=0.83)
    expect(form.locator(".uploads .model-opinion")).to_have_text(
        "The model thought this was bees (83%): thank you, this is the kind of photo it learns most from."
    )


@pytest.mark.parametrize("browser_page", [{"javascript": False}], indirect=True, ids=["no-javascript"])
def test_plain_form_still_uploads_without_javascript_and_needs_a_label(live_server, browser_page, challenge, hymenoptera):
    from playwright.sync_api import expect

    from submissions.models import Photo
    from tests.factories import UserFactory

    volunteer = UserFactory(username="nojs", password=PASSWORD)
    page = browser_page
    log_in(page, live_server.url, "nojs", PASSWORD)
    expect(page.get_by_text("Drop photos here")).to_be_hidden()
    page.locator("input[name=image]").first.set_input_files(str(sorted((hymenoptera / "train" / "ants").glob("*.jpg"))[0]))
    label = page.get_by_label("What is in the photo?")
    expect(label).to_have_value("")  # no silent default
    page.get_by_role("button", name="Send photo").first.click()
    assert Photo.objects.filter(volunteer=volunteer).count() == 0  # the browser refuses the empty label
    label.select_option("ants")
    page.get_by_role("button", name="Send photo").first.click()
    expect(page.locator("li.success")).to_contain_text("your points arrive when it is approved")
    assert Photo.objects.filter(volunteer=volunteer).get().label.name == "ants"
