"""Writes for verification: hand out tasks, record votes, decide by consensus, reverse.

Automatic decisions go through ``submissions.services.photo_moderate`` (moderator None),
so points, the ledger, leaderboards and snapshots behave as for a staff decision.
"""
from __future__ import annotations

import math
import random

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from challenges.models import Project
from common.errors import Conflict, DomainError, NotFound
from leaderboards.models import PointsEntry
from leaderboards.services import points_entry_add
from submissions.models import Photo
from submissions.services import photo_flag_suspicious_volume, photo_moderate, photo_reopen
from verification.models import VerificationDecision, VerificationTask
from verification.selectors import (
    decision_active_for,
    photo_list_gold,
    photo_list_to_verify,
    photo_tally,
    project_ids_taking_part,
    reputation_get,
    task_open_get,
)

# Gold choices need no cryptographic strength, only to be unpredictable to a volunteer;
# the benchmark seeds this generator to make its runs repeatable.
rng = random.Random()


class NotTakingPart(DomainError):
    status_code = 403
    code = "not_taking_part"


def task_next(*, volunteer: AbstractBaseUser, project: Project) -> VerificationTask | None:
    """The volunteer's current task in the project: the open one, or a new one; None if nothing is left.

    A share of new tasks (PLATFORM_VERIFY_GOLD_SHARE) are gold: a staff-approved photo, asked
    with its own label or (half of the time) with another label of the project. Nothing in
    the task says which.
    """
    if project.pk not in project_ids_taking_part(volunteer=volunteer):
        raise NotTakingPart(
            f"You can verify photos of projects you take part in; send a photo to {project.slug!r} first.",
        )
    with transaction.atomic():
        task = task_open_get(volunteer=volunteer, project=project)
        if task is not None:
            if task.is_gold or task.photo.status == Photo.Status.PENDING:
                return task
            task.delete()  # decided meanwhile: an unanswered task carries nothing
        gold = rng.random() < settings.PLATFORM_VERIFY_GOLD_SHARE
        photo = _pick_gold(volunteer=volunteer, project=project) if gold else None
        if photo is None:
            gold = False
            photo = photo_list_to_verify(volunteer=volunteer, project=project).first()
        if photo is None:
            photo = _pick_gold(volunteer=volunteer, project=project)
            gold = photo is not None
        if photo is None:
            return None
        label = photo.label
        if gold:
            others = list(project.labels.exclude(pk=photo.label_id))
            if others and rng.random() < 0.5:
                label = rng.choice(others)
        try:
            with transaction.atomic():
                return VerificationTask.objects.create(
                    project=project, volunteer=volunteer, photo=photo, label_asked=label, is_gold=gold
                )
        except IntegrityError:  # the same volunteer's concurrent request gave them this photo first
            return task_open_get(volunteer=volunteer, project=project)


def _pick_gold(*, volunteer: AbstractBaseUser, project: Project) -> Photo | None:
    candidates = photo_list_gold(volunteer=volunteer, project=project)
    count = candidates.count()
    if not count:
        return None
    return candidates.order_by("id")[rng.randrange(count)]


def task_vote(*, task_id, volunteer: AbstractBaseUser, answer: str) -> VerificationTask:
    """Record a volunteer's answer to their task; decide the photo if consensus is reached.

    Someone else's task is as unknown as a missing one (404); a second answer is a 409.
    """
    if answer not in VerificationTask.Answer.values:
        raise DomainError(f"answer must be one of: {', '.join(VerificationTask.Answer.values)}.", code="invalid_answer")
    with transaction.atomic():
        task = (
            VerificationTask.objects.select_for_update()
            .select_related("photo", "label_asked", "project")
            .filter(public_id=task_id, volunteer=volunteer)
            .first()
        )
        if task is None:
            raise NotFound("No such verification task.", code="not_found")
        if task.answered_at is not None:
            raise Conflict("You already answered this one.", code="already_voted")
        # Locks the photo: two last votes at once decide it once.
        photo = Photo.objects.select_for_update().select_related("label", "project").get(pk=task.photo_id)
        reputation = reputation_get(project_id=task.project_id, volunteer_id=volunteer.pk)
        task.answer = answer
        task.answered_at = timezone.now()
        task.weight = reputation.weight
        if task.is_gold and answer != VerificationTask.Answer.UNSURE:
            task.correct = (answer == VerificationTask.Answer.YES) == (task.label_asked_id == photo.label_id)
        task.save(update_fields=["answer", "answered_at", "weight", "correct"])
        if task.is_gold:
            if task.correct and _gold_points_allowed(task=task):
                _award(task=task, reason="verification vote (answer confirmed)")
            if task.correct is not None:
                _decide_voted(volunteer=volunteer, project_id=task.project_id)
        elif photo.status == Photo.Status.PENDING:
            photo_decide_if_consensus(photo=photo)
    return task


def _decide_voted(*, volunteer: AbstractBaseUser, project_id: int, limit: int = 20) -> None:
    """A gold answer moved the voter's weight: look again at the pending photos they voted on."""
    photo_ids = (
        VerificationTask.objects.filter(
            volunteer=volunteer, project_id=project_id, is_gold=False, photo__status=Photo.Status.PENDING,
            answer__in=[VerificationTask.Answer.YES, VerificationTask.Answer.NO],
        )
        .order_by("-answered_at")
        .values_list("photo_id", flat=True)[:limit]
    )
    for photo in Photo.objects.select_for_update().select_related("label", "project").filter(pk__in=list(photo_ids)):
        photo_decide_if_consensus(photo=photo)


def _gold_points_allowed(*, task: VerificationTask) -> bool:
    """Gold votes earn only up to their share of the volunteer's answered tasks."""
    answered = VerificationTask.objects.filter(
        volunteer_id=task.volunteer_id, project_id=task.project_id, answered_at__isnull=False
    )
    paid_gold = answered.filter(is_gold=True, points__gt=0).count()
    return paid_gold < math.ceil(settings.PLATFORM_VERIFY_GOLD_SHARE * answered.count())


def _award(*, task: VerificationTask, reason: str) -> None:
    points = settings.PLATFORM_VERIFY_POINTS
    if points <= 0:
        return
    points_entry_add(
        project=task.project, volunteer_id=task.volunteer_id, points=points, kind=PointsEntry.Kind.VERIFICATION,
        reason=reason, photo=task.photo,
    )
    VerificationTask.objects.filter(pk=task.pk).update(points=points)


def photo_decide_if_consensus(*, photo: Photo) -> VerificationDecision | None:
    """Approve or reject a pending photo when the weighted votes agree; else leave it to staff.

    Decided when the yes and no weights together reach PLATFORM_VERIFY_MIN_WEIGHT and one
    side holds at least PLATFORM_VERIFY_MAJORITY of them. Flagged photos (near duplicate,
    model disagreement, suspicious volume) and photos whose automatic decision staff
    reversed are never decided here.
    """
    if photo.status != Photo.Status.PENDING or _needs_staff(photo=photo):
        return None
    tally = photo_tally(photo=photo)
    total = tally.total
    if total < settings.PLATFORM_VERIFY_MIN_WEIGHT or total <= 0:
        return None
    majority = settings.PLATFORM_VERIFY_MAJORITY
    if tally.yes_weight / total >= majority:
        outcome = VerificationDecision.Outcome.APPROVED
    elif tally.no_weight / total >= majority:
        outcome = VerificationDecision.Outcome.REJECTED
    else:
        return None
    suggested = _suggested_label(photo=photo) if outcome == VerificationDecision.Outcome.REJECTED else ""
    with transaction.atomic():
        if outcome == VerificationDecision.Outcome.APPROVED:
            photo_moderate(photo=photo, moderator=None, approve=True)
        else:
            reason = f"Volunteers who checked this photo said it does not show {photo.label.name}."
            photo_moderate(photo=photo, moderator=None, approve=False, reason=reason)
        decision = VerificationDecision.objects.create(
            photo=photo, outcome=outcome, yes_weight=round(tally.yes_weight, 4), no_weight=round(tally.no_weight, 4),
            votes=tally.votes, suggested_label=suggested,
        )
        agreeing = VerificationTask.Answer.YES if outcome == VerificationDecision.Outcome.APPROVED else "no"
        for task in VerificationTask.objects.filter(photo=photo, is_gold=False, answer=agreeing).select_related(
            "project", "photo"
        ):
            _award(task=task, reason=f"verification vote agreed with the consensus ({outcome})")
    return decision


def _needs_staff(*, photo: Photo) -> bool:
    flagged = photo.near_duplicate_of_id is not None or photo.flag_model_disagreement or photo.flag_suspicious_volume
    return flagged or VerificationDecision.objects.filter(photo=photo).exists()


def _suggested_label(*, photo: Photo) -> str:
    """The model's top label when it is not the claimed one (two-label projects: the other)."""
    if photo.model_confidence is None or photo.model_confidence >= 0.5:
        return ""
    others = list(photo.project.labels.exclude(pk=photo.label_id).values_list("name", flat=True))
    return others[0] if len(others) == 1 else ""


def decision_reverse(
    *, decision: VerificationDecision, moderator: AbstractBaseUser, reason: str
) -> VerificationDecision:
    """Staff take an automatic decision back: the photo is pending again, points reversed in the ledger.

    The photo then waits for staff (it is never decided automatically again).
    """
    reason = (reason or "").strip() or "reversed by staff"
    with transaction.atomic():
        decision = VerificationDecision.objects.select_for_update().get(pk=decision.pk)
        if decision.reversed_at is not None:
            raise Conflict("This decision was already reversed.", code="already_reversed")
        photo_reopen(photo=decision.photo, moderator=moderator)
        _withdraw(decision=decision, moderator=moderator, reason=reason)
    return decision


def _withdraw(*, decision: VerificationDecision, moderator: AbstractBaseUser, reason: str) -> None:
    """Mark a decision reversed and take back the points its agreeing voters earned."""
    for task in VerificationTask.objects.filter(photo_id=decision.photo_id, is_gold=False, points__gt=0).select_related(
        "project", "photo"
    ):
        points_entry_add(
            project=task.project, volunteer_id=task.volunteer_id, points=-task.points,
            kind=PointsEntry.Kind.REVOCATION, reason=f"verification decision reversed: {reason}", photo=task.photo,
            created_by=moderator,
        )
        VerificationTask.objects.filter(pk=task.pk).update(points=0)
    decision.reversed_at = timezone.now()
    decision.reversed_by = moderator
    decision.reverse_reason = reason[:300]
    decision.save(update_fields=["reversed_at", "reversed_by", "reverse_reason"])


def on_photo_moderated(*, photo: Photo, moderator: AbstractBaseUser | None, **_) -> None:
    """A staff decision that contradicts an automatic one overrides it (points withdrawn)."""
    if moderator is None:
        return
    decision = decision_active_for(photo=photo)
    if decision is not None and decision.outcome != photo.status:
        _withdraw(decision=decision, moderator=moderator, reason=f"overridden by staff ({photo.status})")


def photo_trust_uploader(*, photo_id: int) -> VerificationDecision | None:
    """Approve a new upload at once when PLATFORM_VERIFY_TRUSTED_UPLOADS is on and its volunteer is proven.

    Proven: the 5% quantile of their accuracy on gold in the project reaches
    PLATFORM_VERIFY_TRUSTED_ACCURACY. Near duplicates and bursts (suspicious volume) still
    wait for staff. Recorded as a reversible decision like any automatic one.
    """
    if not settings.PLATFORM_VERIFY_TRUSTED_UPLOADS:
        return None
    with transaction.atomic():
        photo = Photo.objects.select_for_update().select_related("label", "project").filter(pk=photo_id).first()
        if photo is None or photo.volunteer_id is None or photo.status != Photo.Status.PENDING:
            return None
        reputation = reputation_get(project_id=photo.project_id, volunteer_id=photo.volunteer_id)
        if reputation.lower < settings.PLATFORM_VERIFY_TRUSTED_ACCURACY:
            return None
        if photo_flag_suspicious_volume(photo=photo) or _needs_staff(photo=photo):
            return None
        photo_moderate(photo=photo, moderator=None, approve=True)
        return VerificationDecision.objects.create(
            photo=photo, outcome=VerificationDecision.Outcome.APPROVED, yes_weight=0, no_weight=0,
            votes=[{"trusted_uploader": photo.volunteer_id, "gold_right": reputation.right,
                    "gold_wrong": reputation.wrong, "accuracy_lower_bound": round(reputation.lower, 4)}],
        )


def on_photo_created(*, instance: Photo, created: bool, **_) -> None:
    """After a volunteer's upload commits: the trusted-uploader shortcut (when switched on)."""
    if created and instance.volunteer_id is not None and settings.PLATFORM_VERIFY_TRUSTED_UPLOADS:
        transaction.on_commit(lambda: photo_trust_uploader(photo_id=instance.pk))
