"""Dataset snapshots, training runs and the registry of published model versions."""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from challenges.models import Project
from common.models import TimeStampedModel


class DatasetSnapshot(TimeStampedModel):
    """An immutable list of the approved photos one run used (photo, sha256, label, split)."""

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="snapshots")
    manifest_sha256 = models.CharField(max_length=64, db_index=True)
    manifest = models.JSONField(help_text="Canonical JSON; its sha256 is manifest_sha256.")
    label_counts = models.JSONField(help_text="{label: {train: n, holdout: n}}")
    balance = models.JSONField(
        default=dict, blank=True,
        help_text="Class balance per split: {split: {min, max, ratio}}; ratio = smallest / largest label.",
    )
    photo_count = models.PositiveIntegerField()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["project", "manifest_sha256"], name="snapshot_unique_manifest")
        ]

    def __str__(self) -> str:
        return f"{self.project.slug} snapshot {self.manifest_sha256[:12]} ({self.photo_count} photos)"


class TrainingRun(TimeStampedModel):
    """One attempt to train and publish a model for a project."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded (published)"
        SKIPPED = "skipped", "Skipped (nothing to do)"
        REFUSED = "refused", "Refused by the gate (worse than the current release)"
        UNPUBLISHED = "unpublished", "Not published (no file passed the checks)"
        CANCELLED = "cancelled", "Cancelled by an admin"
        FAILED = "failed", "Failed"

    class Trigger(models.TextChoices):
        NIGHTLY = "nightly", "Nightly schedule"
        MANUAL = "manual", "Manual (train_now)"
        IMPORT = "import", "Imported (trained elsewhere)"

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="training_runs")
    night = models.DateField(help_text="The night (project time zone) this run belongs to.")
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING, db_index=True)
    stage = models.CharField(max_length=32, blank=True)
    progress = models.FloatField(default=0.0, help_text="0..1 within the whole run.")
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid that claimed the run.")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    snapshot = models.ForeignKey(
        DatasetSnapshot, on_delete=models.PROTECT, null=True, blank=True, related_name="runs"
    )
    decision = models.JSONField(default=dict, blank=True, help_text="Strategy, inputs and reason.")
    config = models.JSONField(default=dict, blank=True, help_text="Seeds and configs: enough to reproduce.")
    metrics = models.JSONField(default=dict, blank=True)
    history = models.JSONField(default=list, blank=True)
    gate = models.JSONField(
        default=dict, blank=True, help_text="Champion/challenger comparison: outcome, reason, both scores."
    )
    cancel_requested = models.BooleanField(
        default=False, help_text="Set by an admin; the worker stops at its next progress report."
    )
    model_card = models.JSONField(
        default=dict, blank=True,
        help_text="Every compressed file that was attempted, measured on the holdout, and the policy's verdict.",
    )
    message = models.TextField(
        blank=True, help_text="Why it was skipped, refused, not published, cancelled or failed."
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # The nightly claim: one live nightly run per project and night. A failed one
            # does not count, so a redelivered task can try again.
            models.UniqueConstraint(
                fields=["project", "night"],
                condition=Q(trigger="nightly") & ~Q(status="failed"),
                name="one_nightly_run_per_project_night",
            ),
            # The lock: never two runs of a project at once, whatever triggered them.
            models.UniqueConstraint(
                fields=["project"], condition=Q(status="running"), name="one_running_run_per_project"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug} run {self.pk} ({self.trigger} {self.night}, {self.status})"


class TrainingPolicy(TimeStampedModel):
    """Per-project training settings an admin may override (the nightly job reads them)."""

    class Strategy(models.TextChoices):
        AUTO = "", "Automatic (size x similarity rule)"
        LINEAR_PROBE = "linear_probe", "Linear probe on frozen features"
        LOWER_LAYER_PROBE = "lower_layer_probe", "Probe on lower layers"
        FINE_TUNE = "fine_tune", "Fine-tune the backbone"
        FROM_SCRATCH = "from_scratch", "Train from scratch"

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="training_policy")
    strategy_override = models.CharField(max_length=32, choices=Strategy.choices, default="", blank=True)
    note = models.TextField(blank=True, help_text="Why the override (shown in each run's decision record).")
    compression_variants = models.JSONField(
        default=list, blank=True,
        help_text='Compressed variants to build, e.g. ["fp32", "int8"] (fp32 is required); empty: the site default.',
    )
    max_accuracy_loss_points = models.FloatField(
        null=True, blank=True,
        help_text="Holdout accuracy points a compressed file may lose against the float model; "
        "empty: the site default (1 point).",
    )
    coreml_variants = models.JSONField(
        default=list, blank=True,
        help_text='Core ML packages to build, e.g. ["fp16", "pal4"] (fp16, pal8, pal6, pal4, pal2: k-means '
        "palettized weights of that many bits); empty: none. Core ML cannot run on the Linux workers: "
        "each file is checked in structure and its accuracy estimated in torch.",
    )
    coreml_offer = models.BooleanField(
        default=False,
        help_text="Offer Core ML files to apps although they were only checked in structure, not executed "
        "(turn on after trying them on an Apple device).",
    )

    class Meta:
        verbose_name_plural = "training policies"

    def clean(self) -> None:
        from training.ml.config import COMPRESSION_VARIANTS, COREML_VARIANTS  # pure Python, no torch

        errors = {}
        if self.compression_variants is None:  # an emptied admin field: the site default
            self.compression_variants = []
        variants = self.compression_variants
        if variants:
            if not isinstance(variants, list) or not all(isinstance(v, str) for v in variants):
                errors["compression_variants"] = "A list of variant names."
            else:
                unknown = sorted(set(variants) - set(COMPRESSION_VARIANTS))
                if unknown:
                    errors["compression_variants"] = (
                        f"Unknown variants {unknown}; known: {', '.join(COMPRESSION_VARIANTS)}."
                    )
                elif "fp32" not in variants:
                    errors["compression_variants"] = "fp32 (the float model itself) is always built: include it."
        if self.coreml_variants is None:
            self.coreml_variants = []
        coreml = self.coreml_variants
        if not isinstance(coreml, list) or not all(isinstance(v, str) for v in coreml):
            errors["coreml_variants"] = "A list of Core ML variant names."
        elif sorted(set(coreml) - set(COREML_VARIANTS)):
            errors["coreml_variants"] = (
                f"Unknown Core ML variants {sorted(set(coreml) - set(COREML_VARIANTS))}; "
                f"known: {', '.join(COREML_VARIANTS)}."
            )
        points = self.max_accuracy_loss_points
        if points is not None and not 0.0 <= points < 100.0:
            errors["max_accuracy_loss_points"] = "Between 0 and 100 (exclusive) points."
        if errors:
            raise ValidationError(errors)

    def __str__(self) -> str:
        return f"{self.project.slug} policy ({self.strategy_override or 'auto'})"


class ModelVersion(models.Model):
    """A published model: immutable, numbered upwards per project."""

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="model_versions")
    version = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    run = models.OneToOneField(TrainingRun, on_delete=models.PROTECT, related_name="model_version")
    snapshot = models.ForeignKey(DatasetSnapshot, on_delete=models.PROTECT, related_name="model_versions")
    labels = models.JSONField(help_text="Output index -> label name.")
    preprocessing = models.JSONField(help_text="Exactly how to feed the model.")
    metrics = models.JSONField(help_text="Holdout metrics of the float model.")
    model_card = models.JSONField(
        default=dict, blank=True, help_text="Every compressed file measured on the holdout (the run's model card)."
    )

    class Source(models.TextChoices):
        TRAINED = "trained", "Trained by the platform (nightly or train_now)"
        IMPORTED = "imported", "Imported (trained elsewhere)"

    # Provenance: a trained version's run says which night; an imported one who uploaded which file.
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.TRAINED)
    imported_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    source_sha256 = models.CharField(max_length=64, blank=True, help_text="sha256 of the uploaded file (imports).")
    source_filename = models.CharField(max_length=255, blank=True, help_text="The uploaded file's name (imports).")
    release_notes = models.TextField(blank=True, help_text="Notes given with an imported version.")

    class Meta:
        ordering = ["project", "-version"]
        get_latest_by = "version"
        constraints = [models.UniqueConstraint(fields=["project", "version"], name="model_version_unique")]

    def __str__(self) -> str:
        return f"{self.project.slug} v{self.version}"

    @property
    def provenance(self) -> str:
        """Where the version came from, in one line (admin, card, /releases/)."""
        if self.source == self.Source.IMPORTED:
            who = self.imported_by.get_username() if self.imported_by else "a deleted user"
            return f"imported by {who} from {self.source_filename or 'a file'} (sha256 {self.source_sha256[:12]})"
        return f"trained by the platform (run {self.run_id})"


class ModelArtifact(models.Model):
    """One file of a version: one variant (fp32, int8, pruned, ...) in one format, measured by its runtime."""

    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="artifacts")
    format = models.CharField(max_length=16, help_text="onnx, pte, tflite or mlpackage (training.ml.formats)")
    variant = models.CharField(
        max_length=32, default="fp32", help_text="fp32, fp16, int8, pruned, pruned-int8, distilled, distilled-int8"
    )
    precision = models.CharField(max_length=16, help_text="fp32, fp16, int8, or pal8/pal6/pal4/pal2 (Core ML)")
    recommended = models.BooleanField(default=False, help_text="The smallest offered file of its format.")
    file = models.FileField(max_length=300)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    preprocessing = models.JSONField(
        default=dict, blank=True, help_text="How to feed this file (a distilled student may take smaller images)."
    )
    companions = models.JSONField(default=list, blank=True, help_text="Other files this one needs ([]: none).")
    measurements = models.JSONField(default=dict, blank=True, help_text="Its model card row (holdout measurements).")
    verification = models.JSONField(help_text="What loading the stored bytes with the runtime showed.")

    class Meta:
        ordering = ["version", "format", "-recommended", "size", "variant"]
        constraints = [
            models.UniqueConstraint(fields=["version", "format", "variant"], name="artifact_unique_format_variant")
        ]

    def __str__(self) -> str:
        return f"{self.version} {self.format}/{self.variant}"
