"""The weekly digest: one issue per week, and one delivery row per recipient (the send claim)."""
from __future__ import annotations

from django.conf import settings
from django.db import models


class NewsletterIssue(models.Model):
    """The digest of one week (Monday `week_start` to Sunday), drafted then sent once."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        SENT = "sent", "Sent"

    week_start = models.DateField(unique=True, help_text="Monday of the week the digest covers.")
    subject = models.CharField(max_length=200)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.DRAFT, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    sent_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-week_start"]

    def __str__(self) -> str:
        return f"{self.subject} ({self.get_status_display()})"


class NewsletterDelivery(models.Model):
    """One recipient of one issue. The row is claimed before the email goes out, so a re-run
    or a redelivered task never emails anyone twice (at most once per issue and user)."""

    issue = models.ForeignKey(NewsletterIssue, on_delete=models.CASCADE, related_name="deliveries")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    claimed_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True, help_text="Empty while the email is being sent.")

    class Meta:
        ordering = ["issue", "user"]
        constraints = [models.UniqueConstraint(fields=["issue", "user"], name="newsletter_delivery_once")]

    def __str__(self) -> str:
        return f"{self.issue.week_start} -> user {self.user_id}"
