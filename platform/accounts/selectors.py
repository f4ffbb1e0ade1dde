"""Reads about accounts."""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone


def signup_active_count(*, address: str) -> int:
    """Accounts signed up from ``address`` recently that have since sent a photo not rejected.

    "Real activity" is a photo: an empty account made by a script adds nothing, a class whose
    pupils start sending photos widens its school's budget for the next pupils.
    """
    since = timezone.now() - timedelta(days=settings.PLATFORM_SIGNUP_ACTIVE_DAYS)
    return (
        get_user_model()
        # One filter() call: "some photo that is pending or approved" (an exclude() would drop an
        # account for any rejected photo, even next to approved ones).
        .objects.filter(
            profile__signup_address=address, date_joined__gte=since, photos__status__in=("pending", "approved")
        )
        .distinct()
        .count()
    )
