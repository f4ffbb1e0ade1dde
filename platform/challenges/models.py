"""Projects (one model each), their labels, and daily challenges."""
from __future__ import annotations

import zoneinfo

from django.core.exceptions import ValidationError
from django.db import models

from common.models import TimeStampedModel


def _validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"Unknown time zone {value!r}.")


class Project(TimeStampedModel):
    """A model to improve: owns the model name (its slug) and the labels it predicts."""

    slug = models.SlugField(unique=True, help_text="Also the model name apps ask for.")
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    time_zone = models.CharField(max_length=64, default="UTC", validators=[_validate_time_zone])
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Label(TimeStampedModel):
    """One class of the project's model, with the number of photos it aims for."""

    PROTOTYPE_TARGET = 30   # about 30 photos per class make a prototype
    PRODUCTION_TARGET = 200  # about 200 per class make a robust production model

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="labels")
    name = models.SlugField(max_length=64)
    description = models.TextField(blank=True)
    target_count = models.PositiveIntegerField(default=PRODUCTION_TARGET)
    example_photo = models.ImageField(upload_to="labels/examples/", blank=True, max_length=300)

    class Meta:
        ordering = ["project", "name"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="label_unique_per_project")]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.name}"


class Challenge(TimeStampedModel):
    """The task of one day in the project's time zone ("a mug on a cluttered desk")."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="challenges")
    day = models.DateField(help_text="The day in the project's time zone.")
    title = models.CharField(max_length=200)
    instructions = models.TextField(blank=True)
    labels = models.ManyToManyField(Label, related_name="challenges")
    points_multiplier = models.DecimalField(max_digits=4, decimal_places=2, default=1)
    starts_at = models.TimeField(null=True, blank=True, help_text="Local time it opens; empty: midnight.")
    ends_at = models.TimeField(null=True, blank=True, help_text="Local time it closes; empty: end of day.")
    generated_reason = models.CharField(
        max_length=300, blank=True, help_text="Why the platform generated it; empty when scheduled by an admin."
    )

    class Meta:
        ordering = ["-day"]
        constraints = [models.UniqueConstraint(fields=["project", "day"], name="one_challenge_per_project_day")]

    def __str__(self) -> str:
        return f"{self.project.slug} {self.day}: {self.title}"
