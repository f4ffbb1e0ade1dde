"""Reads for photos."""
from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from submissions.models import Photo


def photo_list_for_volunteer(*, volunteer: AbstractBaseUser) -> QuerySet[Photo]:
    """A volunteer's own photos, newest first."""
    return Photo.objects.filter(volunteer=volunteer).select_related("label", "project", "challenge")


def photo_list_for_moderation(*, status: str | None = Photo.Status.PENDING) -> QuerySet[Photo]:
    """Photos for staff, oldest first so the queue drains in order."""
    photos = Photo.objects.select_related("label", "project", "challenge", "volunteer").order_by("created_at", "id")
    return photos.filter(status=status) if status else photos


def photo_list_approved(*, project_id: int) -> QuerySet[Photo]:
    """The approved photos of a project: the only ones that enter training."""
    return Photo.objects.filter(project_id=project_id, status=Photo.Status.APPROVED).select_related("label")
