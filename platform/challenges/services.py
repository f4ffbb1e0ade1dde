"""Writes for challenges: today's challenge (generated from need when none is scheduled)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from challenges.models import Challenge, Label, Project
from challenges.selectors import (
    challenge_get_for_day,
    challenge_is_open,
    challenge_window,
    label_list_with_approved_counts,
    project_today,
)
from common.errors import NotFound, ValidationFailed
from training.selectors import model_version_latest_metrics

_VARIETY = (
    "Odd angles, clutter, bad light and unusual backgrounds teach the model the most. "
    "One object per photo, filling a good part of the frame."
)


@dataclass(frozen=True)
class ChallengeNeed:
    """What a generated challenge asks for, and why."""

    labels: list[Label]
    title: str
    instructions: str
    reason: str


def challenge_get_or_generate_today(*, project: Project, now: dt.datetime | None = None) -> Challenge:
    """Today's challenge; when admins scheduled none, one is generated from need.

    The returned challenge may be closed (outside its opening hours): callers show it
    with `challenge_is_open`, and uploads go through `challenge_assert_open`.
    """
    day = project_today(project=project, now=now)
    challenge = challenge_get_for_day(project=project, day=day)
    if challenge is not None:
        return challenge
    need = challenge_need_for(project=project)
    try:
        with transaction.atomic():
            challenge = Challenge.objects.create(
                project=project,
                day=day,
                title=need.title,
                instructions=need.instructions,
                generated_reason=need.reason[:300],
            )
            challenge.labels.set(need.labels)
    except IntegrityError:
        # Another request generated it first: use theirs.
        challenge = challenge_get_for_day(project=project, day=day)
    return challenge


def challenge_need_for(*, project: Project) -> ChallengeNeed:
    """Decide what the project needs most, in this order.

    1. Data: the label furthest below its target of approved photos, while any is below.
    2. Quality: the label with the lowest recall (below the recall target) in the latest
       published model's holdout evaluation: the model misses it most.
    3. Confusion: the two labels the latest model mixes up most often (largest
       off-diagonal count of its confusion matrix): photos of both, to tell them apart.
    4. Otherwise variety for the label with the fewest approved photos.
    """
    labels = list(label_list_with_approved_counts(project=project))
    if not labels:
        raise NotFound(f"Project {project.slug!r} has no labels yet.", code="no_labels")
    by_name = {label.name: label for label in labels}

    below = [label for label in labels if label.approved_count < label.target_count]
    if below:
        neediest = max(below, key=lambda label: (label.target_count - label.approved_count, -label.pk))
        return ChallengeNeed(
            labels=[neediest],
            title=f"Photograph {_words(neediest.name)} somewhere unusual",
            instructions=_VARIETY,
            reason=(
                f"{neediest.name} has {neediest.approved_count} of {neediest.target_count} approved photos, "
                "the furthest below its target."
            ),
        )

    metrics = model_version_latest_metrics(project=project)
    version_name = f"model v{metrics['version']}" if metrics else ""

    weakest = _weakest_label(metrics=metrics, by_name=by_name)
    if weakest is not None:
        label, recall = weakest
        return ChallengeNeed(
            labels=[label],
            title=f"Photograph {_words(label.name)} the model misses",
            instructions=(
                f"The model often fails to recognise {_words(label.name)}. Hard cases help most: "
                "partly hidden, far away, unusual colours or shapes. " + _VARIETY
            ),
            reason=f"{label.name} has the lowest recall ({recall:.0%}) in {version_name}'s evaluation.",
        )

    pair = _most_confused_pair(metrics=metrics, by_name=by_name)
    if pair is not None:
        true_label, predicted_label, count = pair
        a, b = _words(true_label.name), _words(predicted_label.name)
        return ChallengeNeed(
            labels=[true_label, predicted_label],
            title=f"Tell {a} and {b} apart",
            instructions=(
                f"The model mixes up {a} and {b}. Send photos of either, label each carefully, and "
                "show what makes them different. " + _VARIETY
            ),
            reason=(
                f"{version_name} mistook {true_label.name} for {predicted_label.name} {count} times "
                "on the holdout, its most confused pair."
            ),
        )

    fewest = min(labels, key=lambda label: (label.approved_count, label.pk))
    return ChallengeNeed(
        labels=[fewest],
        title=f"Photograph {_words(fewest.name)} somewhere unusual",
        instructions=_VARIETY,
        reason=(
            f"Every label reached its target and no model weakness stands out; "
            f"{fewest.name} has the fewest approved photos ({fewest.approved_count})."
        ),
    )


def challenge_assert_open(*, challenge: Challenge, now: dt.datetime | None = None) -> None:
    """Refuse an upload to a challenge that is not open right now (another day, or out of hours)."""
    now = now or timezone.now()
    if challenge_is_open(challenge=challenge, now=now):
        return
    window = challenge_window(challenge=challenge)
    raise ValidationFailed(
        f"This challenge is not open now: it runs on {challenge.day.isoformat()} from "
        f"{window.opens_at:%H:%M} until {window.closes_at:%H:%M} ({challenge.project.time_zone}).",
        code="challenge_closed",
        extra={"opens_at": window.opens_at.isoformat(), "closes_at": window.closes_at.isoformat()},
    )


def _words(name: str) -> str:
    return name.replace("-", " ").replace("_", " ")


def _weakest_label(*, metrics: dict | None, by_name: dict[str, Label]) -> tuple[Label, float] | None:
    per_label = (metrics or {}).get("per_label") or {}
    target = settings.PLATFORM_CHALLENGE_RECALL_TARGET
    candidates = [
        (float(values["recall"]), name)
        for name, values in per_label.items()
        # Labels removed since, or absent from the holdout, say nothing about today's need.
        if name in by_name and values.get("recall") is not None and values.get("support", 1)
    ]
    if not candidates:
        return None
    recall, name = min(candidates)
    return (by_name[name], recall) if recall < target else None


def _most_confused_pair(*, metrics: dict | None, by_name: dict[str, Label]) -> tuple[Label, Label, int] | None:
    confusion = (metrics or {}).get("confusion") or []
    names = (metrics or {}).get("labels") or []
    best: tuple[int, str, str] | None = None
    for i, row in enumerate(confusion):
        for j, count in enumerate(row):
            if i == j or not count or i >= len(names) or j >= len(names):
                continue
            if names[i] not in by_name or names[j] not in by_name:
                continue
            if best is None or count > best[0]:
                best = (int(count), names[i], names[j])
    if best is None:
        return None
    count, true_name, predicted_name = best
    return by_name[true_name], by_name[predicted_name], count
