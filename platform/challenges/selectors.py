"""Reads for projects and challenges."""
from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from challenges.models import Challenge, Label, Project
from common.errors import NotFound, ValidationFailed


def project_list_active() -> QuerySet[Project]:
    """Projects volunteers can contribute to."""
    return Project.objects.filter(is_active=True).prefetch_related("labels")


def project_get(*, slug: str | None) -> Project:
    """The active project named `slug`; without a slug, the only active project."""
    projects = Project.objects.filter(is_active=True)
    if slug:
        project = projects.filter(slug=slug).first()
        if project is None:
            raise NotFound(f"No active project named {slug!r}.", code="project_not_found")
        return project
    candidates = list(projects[:2])
    if len(candidates) != 1:
        raise ValidationFailed("Name the project (?project=<slug>).", code="project_required")
    return candidates[0]


def project_now(*, project: Project, now: dt.datetime | None = None) -> dt.datetime:
    """The current moment as a timezone-aware datetime in the project's time zone."""
    now = now or timezone.now()
    return now.astimezone(zoneinfo.ZoneInfo(project.time_zone))


def project_today(*, project: Project, now: dt.datetime | None = None) -> dt.date:
    """Today's date in the project's time zone."""
    return project_now(project=project, now=now).date()


def label_list_with_approved_counts(*, project: Project) -> QuerySet[Label]:
    """The project's labels, each annotated with `approved_count`."""
    return project.labels.annotate(approved_count=Count("photos", filter=Q(photos__status="approved")))


def label_list_with_progress(*, project: Project) -> list[Label]:
    """The project's labels with both milestones, for progress bars.

    Each label carries `approved_count`, `prototype_target` (about 30 photos make a
    prototype), `target_count` (about 200 make a production model) and the fractions
    `prototype_fraction` and `target_fraction`, capped at 1.0 so a bar never overflows.
    """
    labels = list(label_list_with_approved_counts(project=project))
    for label in labels:
        label.prototype_target = Label.PROTOTYPE_TARGET
        label.prototype_fraction = _fraction(label.approved_count, Label.PROTOTYPE_TARGET)
        label.target_fraction = _fraction(label.approved_count, label.target_count)
    return labels


def _fraction(count: int, target: int) -> float:
    # A target of 0 means "nothing needed": the bar is full.
    return 1.0 if target <= 0 else round(min(1.0, count / target), 4)


def challenge_get_for_day(*, project: Project, day: dt.date) -> Challenge | None:
    """The challenge scheduled (or generated) for `day`, if any."""
    challenges = Challenge.objects.filter(project=project, day=day)
    return challenges.select_related("project").prefetch_related("labels").first()


@dataclass(frozen=True)
class ChallengeWindow:
    """When a challenge accepts uploads, as aware datetimes in the project's time zone."""

    opens_at: dt.datetime
    closes_at: dt.datetime


def challenge_window(*, challenge: Challenge) -> ChallengeWindow:
    """The challenge's opening hours on its day; empty times mean midnight and end of day."""
    tz = zoneinfo.ZoneInfo(challenge.project.time_zone)
    opens_at = dt.datetime.combine(challenge.day, challenge.starts_at or dt.time.min, tzinfo=tz)
    if challenge.ends_at is None:
        closes_at = dt.datetime.combine(challenge.day + dt.timedelta(days=1), dt.time.min, tzinfo=tz)
    else:
        closes_at = dt.datetime.combine(challenge.day, challenge.ends_at, tzinfo=tz)
    return ChallengeWindow(opens_at=opens_at, closes_at=closes_at)


def challenge_is_open(*, challenge: Challenge, now: dt.datetime | None = None) -> bool:
    """Whether the challenge accepts uploads now: its own day, inside its opening hours."""
    window = challenge_window(challenge=challenge)
    now = now or timezone.now()
    return window.opens_at <= now < window.closes_at


def challenge_calendar_month(
    *, year: int, month: int, project_id: int | str | None = None
) -> dict[dt.date, list[Challenge]]:
    """The challenges of a month (a little padding for the grid's edges), grouped by day."""
    first = dt.date(year, month, 1)
    challenges = (
        Challenge.objects.filter(day__gte=first - dt.timedelta(days=7), day__lte=first + dt.timedelta(days=38))
        .select_related("project")
        .prefetch_related("labels")
        .order_by("day", "project__slug")
    )
    if project_id:
        challenges = challenges.filter(project_id=project_id)
    by_day: dict[dt.date, list[Challenge]] = {}
    for challenge in challenges:
        by_day.setdefault(challenge.day, []).append(challenge)
    return by_day
