"""Scheduling challenges in the admin: validation and the month calendar."""
import datetime as dt
import io

import pytest
from django.urls import reverse

from challenges.admin import ChallengeAdminForm
from tests.factories import ChallengeFactory, LabelFactory, ProjectFactory

pytestmark = pytest.mark.django_db


def form_data(project, labels, **extra):
    return {
        "project": project.pk, "day": "2026-12-01", "title": "Mugs", "instructions": "",
        "labels": [label.pk for label in labels], "points_multiplier": "2", "starts_at": "", "ends_at": "",
        "generated_reason": "", **extra,
    }


def test_labels_must_belong_to_the_project(project):
    wasps = LabelFactory(project=ProjectFactory(slug="wasps"), name="wasps")
    form = ChallengeAdminForm(data=form_data(project, [project.labels.get(name="ants"), wasps]))
    assert not form.is_valid() and "Not labels of ants-bees: wasps" in str(form.errors["labels"])


def test_ends_after_it_starts(project):
    form = ChallengeAdminForm(data=form_data(project, project.labels.all(), starts_at="18:00", ends_at="09:00"))
    assert not form.is_valid() and "ends_at" in form.errors

    form = ChallengeAdminForm(data=form_data(project, project.labels.all(), starts_at="09:00", ends_at="18:00"))
    assert form.is_valid(), form.errors


def test_calendar_lists_the_months_challenges_with_links(client, staff, project):
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    challenge = ChallengeFactory(project=project, day=dt.date(2026, 12, 24), title="Ants under the tree")
    ChallengeFactory(project=project, day=dt.date(2027, 1, 24), title="Next month")

    response = client.get(reverse("admin:challenges_challenge_calendar"), {"year": 2026, "month": 12})

    body = response.content.decode()
    assert response.status_code == 200 and "December 2026" in body
    assert "Ants under the tree" in body and "Next month" not in body
    assert reverse("admin:challenges_challenge_change", args=[challenge.pk]) in body
    assert f"{reverse('admin:challenges_challenge_add')}?day=2026-12-01" in body
    assert client.get(reverse("admin:challenges_challenge_changelist")).status_code == 200
    add = client.get(reverse("admin:challenges_challenge_add"), {"day": "2026-12-01"})
    assert add.status_code == 200 and add.context["adminform"].form.initial["day"] == "2026-12-01"


def test_project_page_shows_label_progress(client, staff, project):
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    response = client.get(reverse("admin:challenges_project_change", args=[project.pk]))
    assert response.status_code == 200 and "0 (prototype 30, target 30)" in response.content.decode()


def test_example_photo_is_stored_without_metadata_and_served_publicly(client, project):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from PIL import Image

    from challenges.admin import LabelForm
    from tests.submissions.hostile import jpeg_with_gps

    label = project.labels.get(name="ants")
    upload = SimpleUploadedFile("ant-on-a-leaf.jpg", jpeg_with_gps(), content_type="image/jpeg")
    form = LabelForm(
        {"project": project.pk, "name": "ants", "description": "An ant", "target_count": 200},
        {"example_photo": upload}, instance=label,
    )
    assert form.is_valid(), form.errors
    form.save()

    response = client.get(reverse("label-example-photo", args=[label.pk]))
    assert response.status_code == 200
    with Image.open(io.BytesIO(b"".join(response.streaming_content))) as served:
        assert served.format == "JPEG"
        assert not served.getexif() and "comment" not in served.info


def test_example_photo_must_be_an_image(project):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from challenges.admin import LabelForm

    upload = SimpleUploadedFile("ant.jpg", b"<svg onload='alert(1)'/>", content_type="image/jpeg")
    form = LabelForm(
        {"project": project.pk, "name": "ants", "target_count": 200}, {"example_photo": upload},
        instance=project.labels.get(name="ants"),
    )
    assert not form.is_valid()
    assert "example_photo" in form.errors
