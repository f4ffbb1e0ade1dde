"""Photos sent by volunteers (or imported), and their moderation state."""
from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from challenges.models import Challenge, Label, Project
from common.models import TimeStampedModel


def photo_upload_to(instance: "Photo", filename: str) -> str:
    """Generated storage names only: the client's file name never reaches storage."""
    return f"photos/{instance.project.slug}/{instance.public_id.hex}.jpg"


class Photo(TimeStampedModel):
    """One contributed photo. Its label is weak until staff approve it."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    class Source(models.TextChoices):
        VOLUNTEER = "volunteer", "Volunteer upload"
        IMPORT = "import", "Imported data set"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="photos")
    label = models.ForeignKey(Label, on_delete=models.PROTECT, related_name="photos")
    challenge = models.ForeignKey(
        Challenge, on_delete=models.SET_NULL, null=True, blank=True, related_name="photos"
    )
    volunteer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="photos"
    )
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.VOLUNTEER)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    reject_reason = models.CharField(max_length=300, blank=True)
    moderated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    moderated_at = models.DateTimeField(null=True, blank=True)

    image = models.FileField(upload_to=photo_upload_to, max_length=300)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    source_format = models.CharField(max_length=16)
    upload_sha256 = models.CharField(max_length=64, help_text="Of the bytes sent: exact duplicates.")
    sha256 = models.CharField(max_length=64, help_text="Of the stored, re-encoded JPEG.")
    phash = models.CharField(max_length=32, help_text="Perceptual hash: near duplicates.")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "upload_sha256"], name="photo_exact_duplicate"),
        ]
        indexes = [models.Index(fields=["project", "status"])]

    def __str__(self) -> str:
        return f"photo {self.pk} ({self.label}, {self.status})"
