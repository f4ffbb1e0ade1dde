"""Reads for projects and challenges."""
from __future__ import annotations

import datetime as dt
import zoneinfo

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


def project_today(*, project: Project, now: dt.datetime | None = None) -> dt.date:
    """Today's date in the project's time zone."""
    now = now or timezone.now()
    return now.astimezone(zoneinfo.ZoneInfo(project.time_zone)).date()


def label_list_with_approved_counts(*, project: Project) -> QuerySet[Label]:
    """The project's labels, each annotated with `approved_count`."""
    return project.labels.annotate(approved_count=Count("photos", filter=Q(photos__status="approved")))


def challenge_get_for_day(*, project: Project, day: dt.date) -> Challenge | None:
    """The challenge scheduled (or generated) for `day`, if any."""
    return Challenge.objects.filter(project=project, day=day).prefetch_related("labels").first()
