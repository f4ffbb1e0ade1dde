"""Reads for the weekly digest: featured photos, movers, release notes and subscribers.

Volunteers appear by their public display name only (accounts.Profile), never by email,
username or real name.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.apps import apps
from django.contrib.auth import get_user_model
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from challenges.models import Project
from submissions.models import Photo
from training.selectors import ProjectRelease, model_version_latest_releases

FEATURED_LIMIT = 6
MOVERS_LIMIT = 5


def week_start_for(day: dt.date) -> dt.date:
    """The Monday of the week containing `day`."""
    return day - dt.timedelta(days=day.weekday())


def week_bounds(week_start: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[Monday 00:00, next Monday 00:00) in the site's time zone, as aware datetimes."""
    start = timezone.make_aware(dt.datetime.combine(week_start, dt.time.min))
    return start, start + dt.timedelta(days=7)


def _profile_model():
    """accounts.Profile (display name, opt-ins), or None on an install without it."""
    try:
        return apps.get_model("accounts", "Profile")
    except LookupError:
        return None


def display_name_for(user) -> str | None:
    """A volunteer's public name, or None when they have none (then they are not shown)."""
    profile = getattr(user, "profile", None)
    return getattr(profile, "display_name", None) or None


def newsletter_featured_photos(*, week_start: dt.date, limit: int = FEATURED_LIMIT) -> list[Photo]:
    """Approved photos featured during the week (or sent that week, when featured without a date)."""
    start, end = week_bounds(week_start)
    return list(
        Photo.objects.filter(featured=True, status=Photo.Status.APPROVED)
        .filter(Q(featured_at__gte=start, featured_at__lt=end) | Q(featured_at__isnull=True, created_at__gte=start, created_at__lt=end))
        .select_related("label", "project")
        .order_by("-featured_at", "-created_at")[:limit]
    )


@dataclass(frozen=True)
class Mover:
    display_name: str
    this_week: int
    last_week: int

    @property
    def change(self) -> int:
        return self.this_week - self.last_week


def newsletter_movers(*, week_start: dt.date, limit: int = MOVERS_LIMIT) -> list[Mover]:
    """Volunteers whose approved photos grew most from the week before to this week.

    Counts photos sent in each week that are approved now; volunteers without a public
    display name, or who left the leaderboards, are never named.
    """
    start, end = week_bounds(week_start)
    previous_start = start - dt.timedelta(days=7)
    in_week = Q(photos__status=Photo.Status.APPROVED, photos__created_at__gte=start, photos__created_at__lt=end)
    in_previous = Q(
        photos__status=Photo.Status.APPROVED, photos__created_at__gte=previous_start, photos__created_at__lt=start
    )
    users = (
        get_user_model()
        .objects.filter(is_active=True)
        .annotate(this_week=Count("photos", filter=in_week), last_week=Count("photos", filter=in_previous))
        .filter(this_week__gt=0)
    )
    profile_model = _profile_model()
    if profile_model is not None:
        users = users.select_related("profile")
        if any(f.name == "public_on_leaderboards" for f in profile_model._meta.fields):
            users = users.filter(profile__public_on_leaderboards=True)
    movers = []
    for user in users:
        name = display_name_for(user)
        if name and user.this_week > user.last_week:
            movers.append(Mover(display_name=name, this_week=user.this_week, last_week=user.last_week))
    movers.sort(key=lambda mover: (-mover.change, -mover.this_week, mover.display_name))
    return movers[:limit]


def newsletter_release_notes() -> list[ProjectRelease]:
    """For each active project with a model: its newest version compared with the one before."""
    return model_version_latest_releases(projects=Project.objects.filter(is_active=True).order_by("slug"))


def newsletter_subscriber_list() -> QuerySet:
    """Active users with an email address who opted in (nobody, without accounts.Profile)."""
    users = get_user_model().objects.filter(is_active=True).exclude(email="")
    profile_model = _profile_model()
    if profile_model is None or not any(f.name == "newsletter_opt_in" for f in profile_model._meta.fields):
        return users.none()
    return users.filter(profile__newsletter_opt_in=True).order_by("pk")
