"""Writes for challenges."""
from __future__ import annotations

import datetime as dt

from django.db import IntegrityError, transaction

from challenges.models import Challenge, Project
from challenges.selectors import challenge_get_for_day, label_list_with_approved_counts, project_today
from common.errors import NotFound


def challenge_get_or_generate_today(*, project: Project, now: dt.datetime | None = None) -> Challenge:
    """Today's challenge; when admins scheduled none, one is generated from need.

    Need is the label furthest below its target number of approved photos, so the
    platform keeps asking for what the model lacks most. The reason is stored.
    """
    day = project_today(project=project, now=now)
    challenge = challenge_get_for_day(project=project, day=day)
    if challenge is not None:
        return challenge
    labels = list(label_list_with_approved_counts(project=project))
    if not labels:
        raise NotFound(f"Project {project.slug!r} has no labels yet.", code="no_labels")
    neediest = max(labels, key=lambda label: (label.target_count - label.approved_count, -label.pk))
    reason = (
        f"{neediest.name} has {neediest.approved_count} of {neediest.target_count} approved photos, "
        "the furthest below its target."
    )
    try:
        with transaction.atomic():
            challenge = Challenge.objects.create(
                project=project,
                day=day,
                title=f"Photograph {neediest.name.replace('-', ' ')} somewhere unusual",
                instructions=(
                    "Odd angles, clutter, bad light and unusual backgrounds teach the model the most. "
                    "One object per photo, filling a good part of the frame."
                ),
                generated_reason=reason,
            )
            challenge.labels.set([neediest])
    except IntegrityError:
        # Another request generated it first: use theirs.
        challenge = challenge_get_for_day(project=project, day=day)
    return challenge
