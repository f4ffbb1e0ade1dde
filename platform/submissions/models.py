"""Photos sent by volunteers, imported, or sent back by apps as misprediction feedback; their moderation state."""
from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from challenges.models import Challenge, Label, Project
from common.models import TimeStampedModel


def photo_upload_to(instance: Photo, filename: str) -> str:
    """Generated storage names only: the client's file name never reaches storage.

    ``filename`` only chooses the extension of the private copy (".png" or ".jpg", from
    ``SanitizedImage.content_extension``); photos stored before issue 16 are all ".jpg".
    """
    extension = ".png" if filename.lower().endswith(".png") else ".jpg"
    return f"photos/{instance.project.slug}/{instance.public_id.hex}{extension}"


def photo_display_to(instance: Photo, filename: str) -> str:
    return f"photos/{instance.project.slug}/display/{instance.public_id.hex}.jpg"


def photo_thumbnail_to(instance: Photo, filename: str) -> str:
    return f"photos/{instance.project.slug}/thumbs/{instance.public_id.hex}.jpg"


class Photo(TimeStampedModel):
    """One contributed photo. Its label is weak until staff approve it."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    class Source(models.TextChoices):
        VOLUNTEER = "volunteer", "Volunteer upload"
        IMPORT = "import", "Imported data set"
        APP = "app", "App feedback"

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

    # App feedback (source APP): which app sent it and what its model said. Plain fields, not
    # a foreign key to mobile_api.AppKey: submissions stays below mobile_api (no migration or
    # import dependency on it), and keys are revoked, never deleted, so the id stays meaningful.
    app_name = models.CharField(max_length=100, blank=True, help_text="The app key's name (app feedback).")
    app_key_id = models.PositiveIntegerField(null=True, blank=True, help_text="The app key's id (app feedback).")
    predicted_label = models.CharField(
        max_length=64, blank=True, help_text="What the app's model predicted; `label` is what the user chose."
    )
    model_version = models.PositiveIntegerField(
        null=True, blank=True, help_text="The model version that made the prediction (app feedback)."
    )

    # Every stored copy is re-encoded without metadata. `image` is the full-size copy
    # (private: its volunteer and staff); display and thumbnail are made once at upload.
    image = models.FileField(upload_to=photo_upload_to, max_length=300)
    display_image = models.FileField(upload_to=photo_display_to, max_length=300, blank=True)
    thumbnail = models.FileField(upload_to=photo_thumbnail_to, max_length=300, blank=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    source_format = models.CharField(max_length=16)
    upload_sha256 = models.CharField(max_length=64, help_text="Of the bytes sent: exact duplicates.")
    sha256 = models.CharField(max_length=64, help_text="Of the stored, re-encoded JPEG.")
    phash = models.CharField(max_length=32, help_text="Perceptual hash: near duplicates.")
    split_key = models.CharField(
        max_length=64, blank=True,
        help_text="The content hash that decides its train/holdout split, kept from the instance it was "
        "imported from; empty: its near-duplicate group's root decides.",
    )

    # Moderation flags and curation.
    near_duplicate_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="near_duplicates",
        help_text="An earlier photo this one nearly repeats: accepted, flagged, earns no points.",
    )
    model_confidence = models.FloatField(
        null=True, blank=True, help_text="The current published model's probability for the claimed label."
    )
    model_top_label = models.CharField(
        max_length=64, blank=True, help_text="The label the published model scored highest (empty: not scored yet)."
    )
    model_top_confidence = models.FloatField(
        null=True, blank=True, help_text="The published model's probability for `model_top_label`."
    )
    flag_model_disagreement = models.BooleanField(default=False)
    flag_suspicious_volume = models.BooleanField(default=False)
    featured = models.BooleanField(default=False, db_index=True)
    featured_at = models.DateTimeField(null=True, blank=True)
    # The database, not the broker, remembers the queued work: set with the upload (or a
    # relabel), cleared when the scoring task is done; photo_followups_resume re-queues what
    # a broker outage lost.
    followups_pending = models.BooleanField(
        default=False, help_text="Its queued follow-ups (scoring with the current model) have not run yet."
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "upload_sha256"], name="photo_exact_duplicate"),
        ]
        indexes = [
            models.Index(fields=["project", "status"]),
            # Only the few pending rows: the resume task's query stays cheap on any history.
            models.Index(
                fields=["updated_at"], condition=models.Q(followups_pending=True), name="photo_followups_pending"
            ),
        ]

    def __str__(self) -> str:
        return f"photo {self.pk} ({self.label}, {self.status})"


class UploadIdempotencyKey(models.Model):
    """A client's Idempotency-Key: a retried upload returns the first result."""

    volunteer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=100)
    photo = models.ForeignKey(Photo, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["volunteer", "key"], name="idempotency_key_unique")]
