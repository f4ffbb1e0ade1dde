"""Volunteer pages: today's upload form, my photos, the gallery, model releases, navigation."""
from __future__ import annotations

import pytest
from django.contrib.staticfiles import finders
from django.urls import reverse
from django.utils import timezone

from submissions.models import Photo
from tests.factories import UserFactory
from tests.pages.builders import make_model_version, make_photo, metrics

pytestmark = pytest.mark.django_db


def test_home_upload_form_is_enhanced_but_works_without_js(client, volunteer, challenge):
    client.force_login(volunteer)
    html = client.get("/").content.decode()
    # Plain form (no JS): posts one photo to the page view, with a CSRF token.
    assert f'action="/challenges/{challenge.pk}/photos/"' in html
    assert 'enctype="multipart/form-data"' in html and "csrfmiddlewaretoken" in html
    assert "Send photo" in html
    # Enhancement hooks: the API URL, the drop zone, a camera input, the script, the list to refresh.
    assert 'data-api-url="/api/v1/photos/"' in html and f'data-challenge="{challenge.pk}"' in html
    assert 'class="dropzone"' in html and 'capture="environment"' in html
    assert "submissions/upload.js" in html and 'id="my-photos"' in html
    assert finders.find("submissions/upload.js")


def test_upload_script_sends_idempotency_key_csrf_and_progress():
    script = open(finders.find("submissions/upload.js")).read()
    for needle in ("Idempotency-Key", "X-CSRFToken", "upload.onprogress", "multiple", "drop", "accepted"):
        assert needle in script


def test_navigation_links(client, volunteer, challenge):
    client.force_login(volunteer)
    html = client.get("/").content.decode()
    for name in ("home", "my-photos", "gallery", "releases"):
        assert f'href="{reverse(name)}"' in html, name
    assert 'aria-current="page"' in html


def test_navigation_renders_for_anonymous_visitors(client, challenge):
    html = client.get("/").content.decode()
    assert f'href="{reverse("gallery")}"' in html
    assert f'href="{reverse("my-photos")}"' not in html


def test_my_photos_needs_login(client):
    response = client.get(reverse("my-photos"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_my_photos_shows_status_reason_featured_and_paginates(client, volunteer, project):
    other = UserFactory()
    make_photo(project=project, volunteer=other)  # never shown to someone else
    rejected = make_photo(project=project, volunteer=volunteer, status=Photo.Status.REJECTED, reject_reason="Blurry")
    featured = make_photo(project=project, volunteer=volunteer, status=Photo.Status.APPROVED, featured=True)
    for _ in range(23):
        make_photo(project=project, volunteer=volunteer)
    newest = make_photo(project=project, volunteer=volunteer, thumbnail="photos/ants-bees/thumbs/x.jpg")
    client.force_login(volunteer)

    first = client.get(reverse("my-photos")).content.decode()
    assert "26 photos" in first and "Page 1 of 2" in first
    assert first.count(reverse("photo-image", args=["00000000-0000-0000-0000-000000000000"])[:8]) >= 24
    assert "Waiting for a check" in first and "points arrive when it is approved" in first  # not a bare "Pending"
    assert reverse("photo-thumbnail", args=[newest.public_id]) in first  # small copy when there is one

    second = client.get(reverse("my-photos") + "?page=2").content.decode()
    assert reverse("photo-image", args=[rejected.public_id]) in second
    assert "Reason: Blurry" in second
    assert reverse("photo-image", args=[featured.public_id]) in second and "Featured" in second
    assert "Approved" in second and "Rejected" in second


def test_gallery_is_public_and_shows_only_featured_approved_display_copies(client, project):
    shown = make_photo(project=project, status=Photo.Status.APPROVED, featured=True, featured_at=timezone.now())
    not_approved = make_photo(project=project, status=Photo.Status.PENDING, featured=True)
    not_featured = make_photo(project=project, status=Photo.Status.APPROVED)

    html = client.get(reverse("gallery")).content.decode()
    assert reverse("photo-display", args=[shown.public_id]) in html
    assert reverse("photo-thumbnail", args=[shown.public_id]) in html
    for hidden in (not_approved, not_featured):
        assert str(hidden.public_id) not in html
    # The full-size, owner-only image is never linked from the public gallery.
    assert reverse("photo-image", args=[shown.public_id]) not in html


def test_releases_lists_versions_newest_first_with_changes_and_artifacts(client, project):
    make_model_version(project=project, version=1, metrics_dict=metrics(0.75, {"ants": (0.7, 0.6, 0.65), "bees": (0.8, 0.9, 0.85)}))
    v2 = make_model_version(
        project=project, version=2, artifacts=2,
        metrics_dict=metrics(0.85, {"ants": (0.8, 0.9, 0.85), "bees": (0.9, 0.8, 0.85), "wasps": (0.5, 0.5, 0.5)}),
    )
    html = client.get(reverse("releases")).content.decode()
    assert html.index("Version 2") < html.index("Version 1")
    assert "0.850" in html and "+0.100" in html  # accuracy and its change
    # Every figure with its n and 95% interval (34 of 40 right; ants recall 18 of 20).
    assert "(95% CI 0.709&ndash;0.929, n=40)" in html
    assert "0.900 <span class=\"muted\">(95% CI 0.699&ndash;0.972)</span>" in html
    assert "+0.300" in html  # ants recall 0.6 -> 0.9
    assert "-0.100" in html  # bees recall 0.9 -> 0.8
    assert html.count(">new<") == 1  # wasps did not exist in v1; v1's labels are not "new"
    for artifact in v2.artifacts.all():
        assert artifact.sha256 in html
    assert "3.3\xa0MB" in html or "3.3 MB" in html
    assert "No model published yet" not in html


def test_releases_page_without_models(client, project):
    assert "No model published yet" in client.get(reverse("releases")).content.decode()


def test_home_shows_both_milestones_and_opening_hours(client, volunteer, challenge):
    from tests.moderation.conftest import make_photo as stored_photo

    stored_photo(project=challenge.project, label="ants", status=Photo.Status.APPROVED)
    ants = challenge.project.labels.get(name="ants")
    ants.target_count = 200
    ants.save()
    client.force_login(volunteer)
    html = client.get("/").content.decode()
    assert "Prototype: 1 / 30" in html and "Production: 1 / 200 approved photos" in html
    assert "Open all day (UTC)" in html
    assert 'class="upload-form"' in html


def test_home_says_when_the_challenge_is_closed_and_offers_no_form(client, volunteer, challenge):
    import datetime as dt

    # A one-hour window on the other half of the day from now: closed whenever the test runs.
    hour = 22 if timezone.localtime().hour < 12 else 1
    challenge.starts_at, challenge.ends_at = dt.time(hour, 0), dt.time(hour + 1, 0)
    challenge.save()
    client.force_login(volunteer)
    html = client.get("/").content.decode()
    assert f"Open {hour:02d}:00–{hour + 1:02d}:00 (UTC)" in html
    assert "closed right now" in html and 'class="upload-form"' not in html
