"""Moderation writes beyond approve/reject: bulk decisions, relabel and feature.

Approve and reject themselves stay in ``submissions.services.photo_moderate`` (scoring
hangs off it); this module adds what staff do around it. The automatic flags a moderator
filters the queue by are set by the upload's follow-ups: suspicious volume in
``submissions.services``, disagreement with the current model by ``training.scoring``
(queued through the ``photo_followups_due`` signal, so nothing here imports training).
"""
from __future__ import annotations

from collections.abc import Iterable

from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.utils import timezone

from challenges.models import Label
from common.errors import ValidationFailed
from submissions.models import Photo
from submissions.services import photo_followups_announce, photo_moderate

# --- bulk decisions ---------------------------------------------------------------------


def photo_approve_many(*, photos: Iterable[Photo], moderator: AbstractBaseUser) -> int:
    """Approve every photo (each through ``photo_moderate``, so scores follow); return how many."""
    count = 0
    with transaction.atomic():
        for photo in photos:
            photo_moderate(photo=photo, moderator=moderator, approve=True)
            count += 1
    return count


def photo_reject_many(*, photos: Iterable[Photo], moderator: AbstractBaseUser, reason: str) -> int:
    """Reject every photo with the same reason the volunteers will see; return how many.

    A rejected photo cannot stay featured, so rejection unfeatures it.
    """
    reason = (reason or "").strip()
    if not reason:
        # Checked before the first write: all or nothing.
        raise ValidationFailed("A rejection needs a reason.", code="reason_required")
    count = 0
    with transaction.atomic():
        for photo in photos:
            photo_moderate(photo=photo, moderator=moderator, approve=False, reason=reason)
            if photo.featured:
                _set_featured(photo=photo, featured=False)
            count += 1
    return count


# --- relabel and feature ----------------------------------------------------------------


def photo_relabel(*, photo: Photo, label: Label, moderator: AbstractBaseUser) -> Photo:
    """Move a photo to another label of its own project, and record who did it and why.

    The record is an admin log entry on the photo ("Relabelled from a to b"), visible in its
    history. The old model score was for the old label, so it is cleared and the photo is
    scored again after commit.
    """
    if label.project_id != photo.project_id:
        raise ValidationFailed(
            f"{label.name!r} is not a label of project {photo.project.slug!r}.", code="label_not_in_project"
        )
    if label.pk == photo.label_id:
        return photo
    previous = photo.label
    photo.label = label
    photo.model_confidence = None
    photo.model_top_label, photo.model_top_confidence = "", None
    photo.flag_model_disagreement = False
    photo.followups_pending = True
    with transaction.atomic():
        photo.save(
            update_fields=[
                "label", "model_confidence", "model_top_label", "model_top_confidence", "flag_model_disagreement",
                "followups_pending", "updated_at",
            ]
        )
        _log_change(photo=photo, user=moderator, message=f"Relabelled from {previous.name} to {label.name}.")
        transaction.on_commit(lambda: photo_followups_announce(photo_id=photo.pk))
    return photo


def photo_feature(*, photo: Photo, featured: bool, moderator: AbstractBaseUser) -> Photo:
    """Feature (or unfeature) a photo on the public pages; only approved photos can be featured."""
    if featured and photo.status != Photo.Status.APPROVED:
        raise ValidationFailed("Only approved photos can be featured.", code="photo_not_approved")
    if photo.featured == featured:
        return photo
    with transaction.atomic():
        _set_featured(photo=photo, featured=featured)
        _log_change(photo=photo, user=moderator, message="Featured." if featured else "Unfeatured.")
    return photo


def _set_featured(*, photo: Photo, featured: bool) -> None:
    photo.featured = featured
    photo.featured_at = timezone.now() if featured else None
    photo.save(update_fields=["featured", "featured_at", "updated_at"])


def _log_change(*, photo: Photo, user: AbstractBaseUser, message: str) -> None:
    LogEntry.objects.create(
        user_id=user.pk,
        content_type=ContentType.objects.get_for_model(Photo),
        object_id=str(photo.pk),
        object_repr=str(photo)[:200],
        action_flag=CHANGE,
        change_message=message,
    )
