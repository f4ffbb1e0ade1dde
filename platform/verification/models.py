"""Verification by volunteers: one task per (volunteer, photo), and the automatic decisions.

A task is handed out ("Is this <label>?") and becomes a vote once answered. Gold tasks
ask about a photo staff approved, sometimes with another label of the project (the right
answer is then "no"), so a volunteer who always says "yes" scores chance on gold. Whether
a task is gold is never sent to the volunteer.
"""
from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from challenges.models import Label, Project
from submissions.models import Photo


class VerificationTask(models.Model):
    """One question to one volunteer about one photo; the answer is their vote."""

    class Answer(models.TextChoices):
        YES = "yes", "Yes"
        NO = "no", "No"
        UNSURE = "unsure", "Not sure"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    volunteer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="verification_tasks")
    photo = models.ForeignKey(Photo, on_delete=models.CASCADE, related_name="verification_tasks")
    label_asked = models.ForeignKey(Label, on_delete=models.CASCADE, related_name="+")
    is_gold = models.BooleanField(default=False, help_text="A staff-approved photo: the answer is known.")
    answer = models.CharField(max_length=8, choices=Answer.choices, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    correct = models.BooleanField(null=True, blank=True, help_text="Gold only: the answer was right.")
    weight = models.FloatField(
        null=True, blank=True,
        help_text="The voter's weight when the vote was cast (a record; tallies use the current one).",
    )
    points = models.IntegerField(default=0, help_text="Points this vote earned (net of reversals).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Never the same photo twice for one volunteer.
            models.UniqueConstraint(fields=["volunteer", "photo"], name="verification_task_once"),
        ]
        indexes = [
            models.Index(fields=["volunteer", "project", "answered_at"]),
            models.Index(fields=["photo", "is_gold"]),
        ]

    def __str__(self) -> str:
        return f"task {self.pk}: {self.volunteer_id} on photo {self.photo_id} ({self.answer or 'open'})"


class VerificationDecision(models.Model):
    """An automatic approval or rejection, with the votes that made it (reversible by staff)."""

    class Outcome(models.TextChoices):
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected as mislabelled"

    photo = models.ForeignKey(Photo, on_delete=models.CASCADE, related_name="verification_decisions")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    yes_weight = models.FloatField()
    no_weight = models.FloatField()
    votes = models.JSONField(help_text="Snapshot: every vote with its voter, answer and weight, and the model's.")
    suggested_label = models.CharField(max_length=64, blank=True, help_text="Rejections: the model's top label.")
    created_at = models.DateTimeField(auto_now_add=True)
    reversed_at = models.DateTimeField(null=True, blank=True)
    reversed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reverse_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        state = " (reversed)" if self.reversed_at else ""
        return f"photo {self.photo_id} {self.outcome}{state}"
