"""Points ledger, materialised running totals, and leaderboard curation."""
from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import models

from challenges.models import Project

# The 'all' period has one row per volunteer and project; a fixed start date keeps
# the unique constraint simple (one key shape for every period).
ALL_TIME_START = dt.date(2000, 1, 1)


class PointsEntry(models.Model):
    """One append-only line of the ledger. Totals are derived from it (and kept in ScoreTotal)."""

    class Kind(models.TextChoices):
        PHOTO = "photo", "Approved photo"
        ADJUSTMENT = "adjustment", "Admin adjustment"
        REVOCATION = "revocation", "Revoked (photo rejected after approval)"
        VERIFICATION = "verification", "Verification vote that agreed"
        BONUS = "bonus", "Bonus: a photo the current model got wrong"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="points_entries")
    volunteer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="points_entries")
    photo = models.ForeignKey(
        "submissions.Photo", on_delete=models.SET_NULL, null=True, blank=True, related_name="points_entries"
    )
    points = models.IntegerField(help_text="Whole points (negative for revocations).")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    reason = models.CharField(max_length=300, blank=True)
    day = models.DateField(help_text="Project-local day the points count for (day/week boards).")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "points entries"
        indexes = [models.Index(fields=["project", "volunteer"]), models.Index(fields=["photo", "kind"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.points:+} for {self.volunteer_id} in {self.project_id}"


class ScoreTotal(models.Model):
    """Running totals per project, volunteer and period; boards read only these rows.

    Updated with F() expressions by leaderboards.services, never recomputed from photos.
    The streak fields are only maintained on the 'all' row.
    """

    class Period(models.TextChoices):
        DAY = "day", "Day"
        WEEK = "week", "Week (Monday to Sunday)"
        ALL = "all", "All time"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="score_totals")
    volunteer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="score_totals")
    period = models.CharField(max_length=8, choices=Period.choices)
    period_start = models.DateField(help_text="Project-local; Monday for weeks; 2000-01-01 for 'all'.")
    points = models.IntegerField(default=0)
    photos = models.IntegerField(default=0)
    streak_current = models.PositiveIntegerField(default=0, help_text="Days in the run ending on streak_last_day.")
    streak_best = models.PositiveIntegerField(default=0)
    streak_last_day = models.DateField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project", "period", "-period_start", "-points"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "volunteer", "period", "period_start"], name="score_total_unique"
            )
        ]
        indexes = [models.Index(fields=["project", "period", "period_start", "-points"], name="score_board")]

    def __str__(self) -> str:
        return f"{self.project_id}/{self.volunteer_id} {self.period} {self.period_start}: {self.points}"


class LeaderboardFlag(models.Model):
    """Current curation state of one volunteer in one project (history: CurationAction)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="leaderboard_flags")
    volunteer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="leaderboard_flags"
    )
    pinned = models.BooleanField(default=False, help_text="Shown first on every board of the project.")
    hidden = models.BooleanField(default=False, help_text="Left off every board; still earns points.")
    disqualified = models.BooleanField(default=False, help_text="Left off every board and earns no new points.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project", "volunteer"]
        constraints = [models.UniqueConstraint(fields=["project", "volunteer"], name="leaderboard_flag_unique")]

    def __str__(self) -> str:
        states = [name for name in ("pinned", "hidden", "disqualified") if getattr(self, name)]
        return f"{self.project_id}/{self.volunteer_id}: {', '.join(states) or 'normal'}"


class CurationAction(models.Model):
    """Append-only audit log: who changed a board, when, and why."""

    class Action(models.TextChoices):
        PIN = "pin", "Pin"
        UNPIN = "unpin", "Unpin"
        HIDE = "hide", "Hide"
        UNHIDE = "unhide", "Unhide"
        DISQUALIFY = "disqualify", "Disqualify"
        REQUALIFY = "requalify", "Requalify"
        ADJUST = "adjust", "Adjust points"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="curation_actions")
    volunteer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    action = models.CharField(max_length=16, choices=Action.choices)
    reason = models.CharField(max_length=300)
    points = models.IntegerField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.action} {self.volunteer_id} in {self.project_id}: {self.reason}"
