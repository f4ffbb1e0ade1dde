"""Volunteer profiles: the public face of an account on leaderboards."""
from __future__ import annotations

from django.conf import settings
from django.db import models

from common.models import TimeStampedModel


class Profile(TimeStampedModel):
    """One per user. Boards show `display_name` only: never the username, a real name or an email."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    display_name = models.CharField(
        max_length=40, unique=True, help_text="Public name on leaderboards; generated at sign-up."
    )
    public_on_leaderboards = models.BooleanField(default=True, help_text="Opt-out: hidden from every board.")
    newsletter_opt_in = models.BooleanField(default=False)
    signup_address = models.GenericIPAddressField(
        null=True, blank=True, db_index=True,
        help_text="The address the account signed up from: active accounts widen that address's sign-up budget.",
    )

    class Meta:
        ordering = ["display_name"]

    def __str__(self) -> str:
        return self.display_name
