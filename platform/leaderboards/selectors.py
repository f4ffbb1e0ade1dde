"""Reads for leaderboards and volunteer impact.

Boards read only ScoreTotal rows (with the profile and curation flags joined in the
same query): their cost does not grow with the number of photos.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Exists, IntegerField, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce

from challenges.models import Project
from challenges.selectors import project_today
from common.errors import ValidationFailed
from leaderboards.models import ALL_TIME_START, LeaderboardFlag, ScoreTotal
from submissions.models import Photo
from training.selectors import model_version_photo_splits

PERIODS = tuple(ScoreTotal.Period.values)


@dataclass(frozen=True)
class BoardEntry:
    rank: int
    display_name: str
    points: int
    photos: int
    streak: int
    pinned: bool


@dataclass(frozen=True)
class Board:
    project: Project
    period: str
    period_start: dt.date
    entries: list[BoardEntry]


def period_start_for(*, period: str, day: dt.date) -> dt.date:
    """The first day of the `period` containing `day` (weeks start on Monday)."""
    if period == ScoreTotal.Period.DAY:
        return day
    if period == ScoreTotal.Period.WEEK:
        return day - dt.timedelta(days=day.weekday())
    if period == ScoreTotal.Period.ALL:
        return ALL_TIME_START
    raise ValidationFailed(f"Unknown period {period!r}; choose day, week or all.", code="invalid_period")


def leaderboard_get(*, project: Project, period: str, day: dt.date | None = None, limit: int = 100) -> Board:
    """The ranked board of one project and period: one query whatever the number of photos.

    Left out: volunteers who opted out, hidden or disqualified ones, and rows without
    points. Pinned entries come first; `rank` is by points (ties share a rank, "1224").
    The streak shown is the current one: 0 once a day was missed since the last photo.
    """
    today = project_today(project=project)
    start = period_start_for(period=period, day=day or today)
    flags = LeaderboardFlag.objects.filter(project=project, volunteer=OuterRef("volunteer"))
    all_time = ScoreTotal.objects.filter(
        project=project, volunteer=OuterRef("volunteer"), period=ScoreTotal.Period.ALL, period_start=ALL_TIME_START
    )
    rows = (
        _board_rows(project=project, period=period, start=start)
        .annotate(
            is_pinned=Exists(flags.filter(pinned=True)),
            streak_now=Coalesce(Subquery(all_time.values("streak_current")[:1]), Value(0), output_field=IntegerField()),
            streak_day=Subquery(all_time.values("streak_last_day")[:1]),
        )
        .select_related("volunteer__profile")
        .order_by("-points", "-photos", "volunteer_id")[:limit]
    )
    ranked: list[BoardEntry] = []
    previous_points, rank = None, 0
    for position, row in enumerate(rows, start=1):
        if row.points != previous_points:
            rank, previous_points = position, row.points
        alive = row.streak_day is not None and row.streak_day >= today - dt.timedelta(days=1)
        ranked.append(
            BoardEntry(
                rank=rank, display_name=row.volunteer.profile.display_name, points=row.points, photos=row.photos,
                streak=row.streak_now if alive else 0, pinned=row.is_pinned,
            )
        )
    # Pinned first, each group in rank order (sorted() is stable).
    entries = sorted(ranked, key=lambda entry: not entry.pinned)
    return Board(project=project, period=period, period_start=start, entries=entries)


def _board_rows(*, project: Project, period: str, start: dt.date):
    """The ScoreTotal rows a board shows: points, public profile, neither hidden nor disqualified."""
    flags = LeaderboardFlag.objects.filter(project=project, volunteer=OuterRef("volunteer"))
    return (
        ScoreTotal.objects.filter(project=project, period=period, period_start=start, points__gt=0)
        .filter(volunteer__profile__public_on_leaderboards=True)
        .exclude(Exists(flags.filter(Q(hidden=True) | Q(disqualified=True))))
    )


@dataclass(frozen=True)
class MyRank:
    """A volunteer's own place on a board, even outside its top `limit`.

    ``rank`` counts the shown volunteers with more points, plus one (ties share a rank, as on
    the board); None without points in the period. ``on_board`` is False for a volunteer who
    opted out or was hidden: they still see where they would stand, the others do not see them.
    """

    rank: int | None
    points: int
    photos: int
    on_board: bool
    ranked: int


def leaderboard_rank_for(
    *, project: Project, period: str, volunteer: AbstractBaseUser, day: dt.date | None = None
) -> MyRank:
    """The volunteer's rank and points on one board (three small queries whatever the board's size)."""
    start = period_start_for(period=period, day=day or project_today(project=project))
    rows = _board_rows(project=project, period=period, start=start)
    mine = ScoreTotal.objects.filter(
        project=project, period=period, period_start=start, volunteer=volunteer
    ).only("points", "photos").first()
    ranked = rows.count()
    if mine is None or mine.points <= 0:
        return MyRank(rank=None, points=0, photos=mine.photos if mine else 0, on_board=False, ranked=ranked)
    above = rows.filter(points__gt=mine.points).exclude(volunteer=volunteer).count()
    on_board = rows.filter(volunteer=volunteer).exists()
    return MyRank(rank=above + 1, points=mine.points, photos=mine.photos, on_board=on_board, ranked=ranked)


@dataclass(frozen=True)
class ImpactRow:
    model: str
    version: int
    created_at: dt.datetime
    photos_in_training: int
    photos_in_holdout: int


def volunteer_impact(*, volunteer: AbstractBaseUser) -> list[ImpactRow]:
    """How many of the volunteer's photos each published model version learned from or was tested on.

    Two queries: the volunteer's photo ids, and the versions (with their snapshot
    manifests) of the projects the volunteer contributed to (``training.selectors``).
    """
    mine = {str(public_id) for public_id in Photo.objects.filter(volunteer=volunteer).values_list("public_id", flat=True)}
    if not mine:
        return []
    splits = model_version_photo_splits(
        photo_ids=mine, project_ids=Photo.objects.filter(volunteer=volunteer).values("project_id")
    )
    return [
        ImpactRow(model=split.model, version=split.version, created_at=split.created_at,
                  photos_in_training=split.train, photos_in_holdout=split.holdout)
        for split in splits
    ]
