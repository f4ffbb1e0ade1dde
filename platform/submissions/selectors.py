"""Reads for photos."""
from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Prefetch, QuerySet

from common.errors import NotFound
from leaderboards.models import PointsEntry
from submissions.models import Photo


def photo_list_for_volunteer(*, volunteer: AbstractBaseUser) -> QuerySet[Photo]:
    """A volunteer's own photos, newest first, each with its bonus ledger lines (``bonus_entries``)."""
    bonuses = Prefetch(
        "points_entries", queryset=PointsEntry.objects.filter(kind=PointsEntry.Kind.BONUS, points__gt=0),
        to_attr="bonus_entries",
    )
    return Photo.objects.filter(volunteer=volunteer).select_related("label", "project", "challenge").prefetch_related(
        bonuses
    )


def photo_list_for_moderation(*, status: str | None = Photo.Status.PENDING) -> QuerySet[Photo]:
    """Photos for staff, oldest first so the queue drains in order."""
    photos = Photo.objects.select_related("label", "project", "challenge", "volunteer").order_by("created_at", "id")
    return photos.filter(status=status) if status else photos


def photo_list_approved(*, project_id: int) -> QuerySet[Photo]:
    """The approved photos of a project: the only ones that enter training."""
    return Photo.objects.filter(project_id=project_id, status=Photo.Status.APPROVED).select_related("label")


def photo_get_for_volunteer(*, volunteer: AbstractBaseUser, public_id) -> Photo:
    """One of the volunteer's own photos; someone else's is as unknown as a missing one (404)."""
    photo = photo_list_for_volunteer(volunteer=volunteer).filter(public_id=public_id).first()
    if photo is None:
        raise NotFound("No such photo.", code="not_found")
    return photo


def photo_get_viewable(*, user: AbstractBaseUser, public_id) -> Photo:
    """A photo `user` may look at: their own, any for staff, and the public gallery.

    The public gallery (approved and featured photos) is open to everyone, anonymous
    visitors included. Any other photo is a 404, so its existence does not leak.
    """
    photo = Photo.objects.filter(public_id=public_id).first()
    if photo is None:
        raise NotFound("No such photo.", code="not_found")
    if photo.status == Photo.Status.APPROVED and photo.featured:
        return photo
    if user.is_authenticated and (user.is_staff or photo.volunteer_id == user.pk):
        return photo
    raise NotFound("No such photo.", code="not_found")


def photo_list_featured() -> QuerySet[Photo]:
    """Approved photos staff featured, most recently featured first (public)."""
    return (
        Photo.objects.filter(featured=True, status=Photo.Status.APPROVED)
        .select_related("label", "project")
        .order_by("-featured_at", "-created_at", "-id")
    )
