"""Moderation services: bulk reject with a reason, relabel, feature, suspicious volume."""
import datetime as dt

import pytest
from django.contrib.admin.models import LogEntry

from common.errors import ValidationFailed
from submissions.models import Photo
from submissions.moderation import (
    photo_approve_many,
    photo_feature,
    photo_reject_many,
    photo_relabel,
)
from submissions.services import photo_flag_suspicious_volume
from tests.factories import LabelFactory, ProjectFactory

pytestmark = pytest.mark.django_db


def test_reject_many_applies_one_reason_to_all(photo_factory, staff):
    photos = [photo_factory(), photo_factory()]
    assert photo_reject_many(photos=photos, moderator=staff, reason="  Blurry  ") == 2
    assert {(p.status, p.reject_reason, p.moderated_by_id) for p in Photo.objects.all()} == {
        ("rejected", "Blurry", staff.pk)
    }


def test_reject_many_without_a_reason_changes_nothing(photo_factory, staff):
    photos = [photo_factory(), photo_factory()]
    with pytest.raises(ValidationFailed) as error:
        photo_reject_many(photos=photos, moderator=staff, reason=" ")
    assert error.value.code == "reason_required"
    assert set(Photo.objects.values_list("status", flat=True)) == {"pending"}


def test_approve_many(photo_factory, staff):
    photo_approve_many(photos=[photo_factory(), photo_factory()], moderator=staff)
    assert set(Photo.objects.values_list("status", flat=True)) == {"approved"}


def test_relabel_within_the_project_is_recorded_and_clears_the_old_score(photo_factory, staff, project):
    photo = photo_factory(label="ants", model_confidence=0.05, flag_model_disagreement=True)
    bees = project.labels.get(name="bees")

    photo_relabel(photo=photo, label=bees, moderator=staff)

    photo.refresh_from_db()
    assert photo.label == bees and photo.model_confidence is None and not photo.flag_model_disagreement
    entry = LogEntry.objects.get(object_id=str(photo.pk))
    assert entry.user == staff and entry.change_message == "Relabelled from ants to bees."


def test_relabel_to_another_projects_label_is_refused(photo_factory, staff):
    wasps = LabelFactory(project=ProjectFactory(slug="wasps"), name="wasps")
    photo = photo_factory(label="ants")
    with pytest.raises(ValidationFailed) as error:
        photo_relabel(photo=photo, label=wasps, moderator=staff)
    assert error.value.code == "label_not_in_project"
    photo.refresh_from_db()
    assert photo.label.name == "ants" and not LogEntry.objects.exists()


def test_only_approved_photos_can_be_featured(photo_factory, staff):
    pending = photo_factory()
    with pytest.raises(ValidationFailed) as error:
        photo_feature(photo=pending, featured=True, moderator=staff)
    assert error.value.code == "photo_not_approved"

    approved = photo_factory(status=Photo.Status.APPROVED)
    photo_feature(photo=approved, featured=True, moderator=staff)
    approved.refresh_from_db()
    assert approved.featured and approved.featured_at is not None

    photo_feature(photo=approved, featured=False, moderator=staff)
    approved.refresh_from_db()
    assert not approved.featured and approved.featured_at is None


def test_rejecting_a_featured_photo_unfeatures_it(photo_factory, staff):
    photo = photo_factory(status=Photo.Status.APPROVED)
    photo_feature(photo=photo, featured=True, moderator=staff)
    photo_reject_many(photos=[photo], moderator=staff, reason="Shows a face")
    photo.refresh_from_db()
    assert photo.status == "rejected" and not photo.featured


def test_more_uploads_than_the_hourly_limit_are_flagged(photo_factory, settings, volunteer):
    settings.PLATFORM_SUSPICIOUS_UPLOADS_PER_HOUR = 3
    photos = [photo_factory() for _ in range(3)]
    # Uploads older than an hour do not count.
    Photo.objects.filter(pk=photos[0].pk).update(created_at=photos[0].created_at - dt.timedelta(hours=2))
    fourth = photo_factory()
    assert photo_flag_suspicious_volume(photo=fourth) is False

    fifth = photo_factory()
    assert photo_flag_suspicious_volume(photo=fifth) is True
    fifth.refresh_from_db()
    assert fifth.flag_suspicious_volume
    # Other volunteers' uploads are not this volunteer's volume.
    from tests.factories import UserFactory

    assert photo_flag_suspicious_volume(photo=photo_factory(volunteer=UserFactory())) is False


def test_the_default_limit_is_60(photo_factory):
    photo = photo_factory()
    assert photo_flag_suspicious_volume(photo=photo) is False
