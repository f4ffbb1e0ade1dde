"""Writes for points and leaderboards: the ledger, running totals, streaks, curation.

Every change of points appends a PointsEntry and moves the materialised ScoreTotal rows
(day, week, all) with F() expressions in the same transaction, so boards never scan photos
and concurrent approvals never lose an increment.
"""
from __future__ import annotations

import datetime as dt
import zoneinfo
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from challenges.models import Project
from common.errors import ValidationFailed
from leaderboards.models import ALL_TIME_START, CurationAction, LeaderboardFlag, PointsEntry, ScoreTotal

BASE_POINTS = Decimal(10)
# Points are whole numbers everywhere (formula results are rounded half up).
_WHOLE = Decimal(1)
_APPROVED = "approved"


def project_local_date(*, project: Project, when: dt.datetime) -> dt.date:
    """The calendar day of `when` in the project's time zone."""
    return when.astimezone(zoneinfo.ZoneInfo(project.time_zone)).date()


def period_starts(*, day: dt.date) -> list[tuple[str, dt.date]]:
    """The (period, period_start) keys a day's points count towards; weeks start on Monday."""
    return [
        (ScoreTotal.Period.DAY, day),
        (ScoreTotal.Period.WEEK, day - dt.timedelta(days=day.weekday())),
        (ScoreTotal.Period.ALL, ALL_TIME_START),
    ]


def photo_points(*, photo) -> int:
    """Points an approved photo earns, fixed at approval time.

    points = 10 x multiplier x (1 + max(0, target - approved_before) / target)

    - multiplier: the photo's challenge `points_multiplier` (1 without a challenge);
    - target: the label's `target_count`; approved_before: the label's approved photos
      other than this one. A photo of a label that still needs data is worth up to twice
      as much; once the label reached its target it earns the base 10.
    """
    multiplier = photo.challenge.points_multiplier if photo.challenge_id else Decimal(1)
    target = photo.label.target_count
    need = Decimal(1)
    if target:
        approved_before = (
            type(photo).objects.filter(label_id=photo.label_id, status=_APPROVED).exclude(pk=photo.pk).count()
        )
        need += Decimal(max(0, target - approved_before)) / Decimal(target)
    return _whole(BASE_POINTS * Decimal(multiplier) * need)


def _whole(value) -> int:
    """Points are whole numbers: half up, as people round."""
    return int(Decimal(value).quantize(_WHOLE, rounding=ROUND_HALF_UP))


def score_photo_moderated(*, photo, previous_status: str) -> None:
    """Keep the running point totals right after a photo's moderation state changed.

    Called by submissions.services.photo_moderate inside its transaction. Approving adds a
    'photo' ledger entry (unless the photo is a near duplicate, has no volunteer, or its
    volunteer is disqualified in the project); leaving 'approved' revokes whatever the
    photo still holds. The day credited is the project-local day the photo was sent, so a
    slow moderator does not break a volunteer's streak.
    """
    if photo.volunteer_id is None:
        return
    now_approved = photo.status == _APPROVED
    was_approved = previous_status == _APPROVED
    with transaction.atomic():
        if now_approved and not was_approved:
            _photo_award(photo=photo)
        elif was_approved and not now_approved:
            _photo_revoke(photo=photo)


def _photo_award(*, photo) -> None:
    if photo.near_duplicate_of_id is not None:
        return  # near duplicates are accepted for training but earn nothing
    if LeaderboardFlag.objects.filter(
        project_id=photo.project_id, volunteer_id=photo.volunteer_id, disqualified=True
    ).exists():
        return
    # Already holding points (approved twice without a rejection in between): nothing to add.
    if _photo_net_points(photo=photo) is not None:
        return
    from accounts.services import profile_get_or_create  # boards need a public name

    profile_get_or_create(user=photo.volunteer)
    day = project_local_date(project=photo.project, when=photo.created_at)
    points = photo_points(photo=photo)
    PointsEntry.objects.create(
        project_id=photo.project_id, volunteer_id=photo.volunteer_id, photo=photo, points=points,
        kind=PointsEntry.Kind.PHOTO, day=day, created_by=photo.moderated_by,
        reason=f"approved {photo.label.name}",
    )
    _totals_move(project=photo.project, volunteer_id=photo.volunteer_id, day=day, points=points, photos=1)
    bonus_reason = photo_model_miss_reason(photo=photo)
    if bonus_reason and settings.PLATFORM_MODEL_MISS_BONUS > 0:
        bonus = settings.PLATFORM_MODEL_MISS_BONUS
        PointsEntry.objects.create(
            project_id=photo.project_id, volunteer_id=photo.volunteer_id, photo=photo, points=bonus,
            kind=PointsEntry.Kind.BONUS, day=day, created_by=photo.moderated_by, reason=bonus_reason[:300],
        )
        _totals_move(project=photo.project, volunteer_id=photo.volunteer_id, day=day, points=bonus, photos=0)


def photo_model_miss_reason(*, photo) -> str:
    """Why an approved photo earns the bonus: the current model got it wrong; else "".

    "Wrong" is the model's probability for the (approved) label below one half. With two
    labels the model's guess is the other one and is named.
    """
    confidence = photo.model_confidence
    if confidence is None or confidence >= 0.5:
        return ""
    label = photo.label.name
    others = [name for name in photo.project.labels.values_list("name", flat=True) if name != label]
    guess = f"this was {others[0]}" if len(others) == 1 else f"this was not {label}"
    return (f"Bonus: the model thought {guess} ({100 * (1 - confidence):.0f}% sure), "
            f"and it is {label}: exactly the photo it needs.")


def points_entry_add(
    *, project: Project, volunteer_id: int, points: int, kind: str, reason: str, photo=None,
    day: dt.date | None = None, created_by: AbstractBaseUser | None = None,
) -> PointsEntry:
    """Append a whole-number ledger entry (verification votes and their reversals) and move the totals."""
    points = _whole(points)
    day = day or project_local_date(project=project, when=timezone.now())
    from accounts.services import profile_get_or_create  # boards need a public name

    with transaction.atomic():
        profile_get_or_create(user=get_user_model().objects.get(pk=volunteer_id))
        entry = PointsEntry.objects.create(
            project=project, volunteer_id=volunteer_id, photo=photo, points=points, kind=kind,
            reason=reason[:300], day=day, created_by=created_by,
        )
        _totals_move(project=project, volunteer_id=volunteer_id, day=day, points=points, photos=0)
    return entry


def _photo_net_points(*, photo) -> int | None:
    """Net points a photo holds for its volunteer now; None when none (never awarded or revoked).

    Verifiers' ledger entries point at the photo too; they are theirs, not the uploader's.
    """
    net = PointsEntry.objects.filter(photo=photo, volunteer_id=photo.volunteer_id).aggregate(net=Sum("points"))["net"]
    return net if net else None


def _photo_revoke(*, photo) -> None:
    net = _photo_net_points(photo=photo)
    if net is None:
        return
    award = PointsEntry.objects.filter(photo=photo, kind=PointsEntry.Kind.PHOTO).order_by("-id").first()
    PointsEntry.objects.create(
        project_id=photo.project_id, volunteer_id=photo.volunteer_id, photo=photo, points=-net,
        kind=PointsEntry.Kind.REVOCATION, day=award.day, created_by=photo.moderated_by,
        reason=f"rejected after approval: {photo.reject_reason}"[:300],
    )
    _totals_move(project=photo.project, volunteer_id=photo.volunteer_id, day=award.day, points=-net, photos=-1)


def _totals_move(*, project: Project, volunteer_id: int, day: dt.date, points: int, photos: int) -> None:
    """Add to the day, week and all-time totals with F() (no read-modify-write race)."""
    for period, start in period_starts(day=day):
        total, _ = ScoreTotal.objects.get_or_create(
            project=project, volunteer_id=volunteer_id, period=period, period_start=start
        )
        ScoreTotal.objects.filter(pk=total.pk).update(
            points=F("points") + points, photos=F("photos") + photos, updated_at=timezone.now()
        )
    if photos:
        _streak_refresh(project=project, volunteer_id=volunteer_id)


def _streak_refresh(*, project: Project, volunteer_id: int) -> None:
    """Recompute the streak from the volunteer's day totals (not from photos).

    Cheap (one row per active day of one volunteer) and right even when photos are
    approved out of order or revoked. A day counts when it still holds an approved photo.
    """
    days = list(
        ScoreTotal.objects.filter(
            project=project, volunteer_id=volunteer_id, period=ScoreTotal.Period.DAY, photos__gt=0
        ).order_by("period_start").values_list("period_start", flat=True)
    )
    best = run = 0
    previous = None
    for day in days:
        run = run + 1 if previous is not None and day - previous == dt.timedelta(days=1) else 1
        best = max(best, run)
        previous = day
    ScoreTotal.objects.filter(
        project=project, volunteer_id=volunteer_id, period=ScoreTotal.Period.ALL, period_start=ALL_TIME_START
    ).update(streak_current=run, streak_best=best, streak_last_day=previous)


# --- curation -----------------------------------------------------------------------

_FLAG_ACTIONS = {
    CurationAction.Action.PIN: ("pinned", True),
    CurationAction.Action.UNPIN: ("pinned", False),
    CurationAction.Action.HIDE: ("hidden", True),
    CurationAction.Action.UNHIDE: ("hidden", False),
    CurationAction.Action.DISQUALIFY: ("disqualified", True),
    CurationAction.Action.REQUALIFY: ("disqualified", False),
}


def _reason_required(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise ValidationFailed("Curation needs a reason for the audit log.", code="reason_required")
    return reason[:300]


def leaderboard_flag_set(
    *, project: Project, volunteer: AbstractBaseUser, action: str, reason: str, actor: AbstractBaseUser
) -> LeaderboardFlag:
    """Pin/unpin, hide/unhide or disqualify/requalify a volunteer in a project, logged with why.

    Disqualified volunteers are left off every board of the project and earn no points
    from photos approved later (points already earned stay in the ledger; adjust them
    explicitly if they must go).
    """
    if action not in _FLAG_ACTIONS:
        raise ValidationFailed(f"Unknown curation action {action!r}.", code="invalid_action")
    reason = _reason_required(reason)
    field, value = _FLAG_ACTIONS[action]
    with transaction.atomic():
        flag, _ = LeaderboardFlag.objects.select_for_update().get_or_create(project=project, volunteer=volunteer)
        setattr(flag, field, value)
        flag.save(update_fields=[field, "updated_at"])
        CurationAction.objects.create(
            project=project, volunteer=volunteer, action=action, reason=reason, created_by=actor
        )
    return flag


def points_adjust(
    *, project: Project, volunteer: AbstractBaseUser, points: int, reason: str, actor: AbstractBaseUser,
    day: dt.date | None = None,
) -> PointsEntry:
    """Add (or, negative, remove) points by hand: a ledger entry, moved totals, an audit line."""
    reason = _reason_required(reason)
    points = _whole(points)
    if not points:
        raise ValidationFailed("An adjustment of 0 points changes nothing.", code="invalid_points")
    day = day or project_local_date(project=project, when=timezone.now())
    from accounts.services import profile_get_or_create

    with transaction.atomic():
        profile_get_or_create(user=volunteer)
        entry = PointsEntry.objects.create(
            project=project, volunteer=volunteer, points=points, kind=PointsEntry.Kind.ADJUSTMENT,
            reason=reason, day=day, created_by=actor,
        )
        _totals_move(project=project, volunteer_id=volunteer.pk, day=day, points=points, photos=0)
        CurationAction.objects.create(
            project=project, volunteer=volunteer, action=CurationAction.Action.ADJUST, reason=reason,
            points=points, created_by=actor,
        )
    return entry
