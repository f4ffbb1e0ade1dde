"""Distribution state: app keys, channels, releases on them, and the append-only history of moves.

A channel's releases are pointers to immutable ModelVersions. An install resolves to the
first live release whose targeting matches it and whose rollout covers its bucket (see
``mobile_api.rollout``); every move of those pointers appends a ``ReleaseEvent`` that carries
the channel's whole resulting state, so "what did bucket 17 get at time T" replays exactly.
"""
from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from challenges.models import Project
from training.models import ModelVersion

APP_VERSION_PATTERN = r"^\d{1,6}(\.\d{1,6}){0,3}$"
app_version_validator = RegexValidator(APP_VERSION_PATTERN, "A dotted version of 1 to 4 numbers, e.g. 2.13.0.")


class AppKey(models.Model):
    """A per-app credential (one per app build flavour) that staff create and revoke.

    Only the sha256 of the key is stored; the key itself is shown once, at creation.
    """

    name = models.CharField(max_length=100, unique=True, help_text="e.g. 'Android app (Play Store)'.")
    prefix = models.CharField(max_length=16, unique=True, help_text="The key's first characters, to recognise it.")
    key_sha256 = models.CharField(max_length=64, unique=True)
    rate_limit_per_minute = models.PositiveIntegerField(
        default=600, help_text="Requests per minute per install id and key on the app endpoints."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        state = "revoked" if self.revoked_at else "active"
        return f"{self.name} ({self.prefix}..., {state})"


class Channel(models.Model):
    """A named stream of releases of one project's model: stable, beta, or one an admin defines."""

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="channels")
    name = models.SlugField(max_length=40)
    auto_promote = models.BooleanField(
        default=False, help_text="Every newly published version is released here automatically."
    )
    auto_rollout_percent = models.PositiveSmallIntegerField(
        default=100, validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="The rollout an automatic release starts at (100: everyone at once).",
    )
    poll_interval_seconds = models.PositiveIntegerField(
        default=6 * 3600, validators=[MinValueValidator(60)], help_text="How often apps should check."
    )
    wifi_only = models.BooleanField(default=False, help_text="Apps download only on unmetered networks.")
    charging_only = models.BooleanField(default=False, help_text="Apps download only while charging.")
    max_cellular_bytes = models.PositiveBigIntegerField(
        default=20 * 1024 * 1024, help_text="Larger downloads wait for Wi-Fi (0: never on cellular)."
    )
    generation = models.PositiveBigIntegerField(
        default=0, help_text="Bumped on every change; part of every ETag and of the static manifest."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "name"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="channel_unique_name")]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.name}"


class Release(models.Model):
    """One version on one channel, with targeting and a staged rollout percentage.

    Releases are never deleted. ``state`` says whether the release is still offered:
    ACTIVE (to its rollout), PAUSED (no new installs; installs already on it keep it) or
    ROLLED_BACK / SUPERSEDED (withdrawn; installs fall through to the next live release).
    """

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused (no new installs)"
        ROLLED_BACK = "rolled_back", "Rolled back"
        SUPERSEDED = "superseded", "Superseded by a full rollout"

    channel = models.ForeignKey(Channel, on_delete=models.PROTECT, related_name="releases")
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="releases")
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE, db_index=True)
    rollout_percent = models.PositiveSmallIntegerField(
        default=100, validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="Installs whose bucket (0..99) is below this number get the release.",
    )
    platforms = models.JSONField(default=list, blank=True, help_text='e.g. ["android"]; empty: every platform.')
    formats = models.JSONField(default=list, blank=True, help_text='e.g. ["pte"]; empty: every format.')
    min_app_version = models.CharField(max_length=32, blank=True, validators=[app_version_validator])
    max_app_version = models.CharField(max_length=32, blank=True, validators=[app_version_validator])
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["channel", "-created_at", "-id"]
        constraints = [
            # A version is live on a channel at most once.
            models.UniqueConstraint(
                fields=["channel", "version"],
                condition=Q(state__in=["active", "paused"]),
                name="release_one_live_per_channel_version",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel} v{self.version.version} ({self.state}, {self.rollout_percent}%)"


class ReleaseEvent(models.Model):
    """Append-only history of every pointer move on a channel: who, when, why, from what to what.

    ``state`` is the channel's complete resolution input after the move (its live releases,
    newest first, with rollout and targeting), so resolving an install at any past time needs
    only the last event before that time.
    """

    class Action(models.TextChoices):
        PROMOTE = "promote", "Promote"
        ROLLOUT = "rollout", "Change rollout"
        PAUSE = "pause", "Pause"
        RESUME = "resume", "Resume"
        ROLLBACK = "rollback", "Roll back"
        AUTO_PAUSE = "auto_pause", "Paused automatically (load failures)"
        AUTO_ROLLBACK = "auto_rollback", "Rolled back automatically (load failures)"
        SETTINGS = "settings", "Channel settings changed"

    channel = models.ForeignKey(Channel, on_delete=models.PROTECT, related_name="events")
    release = models.ForeignKey(Release, on_delete=models.PROTECT, null=True, blank=True, related_name="events")
    action = models.CharField(max_length=16, choices=Action.choices)
    from_version = models.PositiveIntegerField(null=True, blank=True, help_text="Fully rolled-out version before.")
    to_version = models.PositiveIntegerField(null=True, blank=True, help_text="The release's version.")
    rollout_percent = models.PositiveSmallIntegerField(null=True, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        help_text="Empty: the system (nightly auto-promote, telemetry guard).",
    )
    reason = models.TextField(blank=True)
    state = models.JSONField(help_text="The channel's live releases after this move (see mobile_api.rollout).")
    generation = models.PositiveBigIntegerField()
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["channel", "-at", "-id"]

    def __str__(self) -> str:
        return f"{self.channel} {self.action} v{self.to_version} at {self.at:%Y-%m-%d %H:%M}"


class ArtifactDelta(models.Model):
    """A binary patch that turns a file of an earlier version into a file of this one.

    Built at publish time when it is under half the full file; offered to installs that run
    ``from_artifact``. Applying it must give bytes whose sha256 is ``artifact.sha256``.
    """

    artifact = models.ForeignKey("training.ModelArtifact", on_delete=models.PROTECT, related_name="deltas")
    from_artifact = models.ForeignKey("training.ModelArtifact", on_delete=models.PROTECT, related_name="+")
    algorithm = models.CharField(max_length=16, default="bsdiff4")
    file = models.FileField(max_length=300)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64, help_text="Of the patch file.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["artifact", "-from_artifact"]
        constraints = [
            models.UniqueConstraint(fields=["artifact", "from_artifact", "algorithm"], name="delta_unique_pair")
        ]

    def __str__(self) -> str:
        return f"{self.artifact} from v{self.from_artifact.version.version} ({self.size} bytes)"


class ReleaseHealth(models.Model):
    """What apps reported about one release: counts, load failures by error class, latency histogram."""

    release = models.OneToOneField(Release, on_delete=models.PROTECT, related_name="health")
    downloaded = models.PositiveBigIntegerField(default=0)
    loaded = models.PositiveBigIntegerField(default=0)
    load_failed = models.PositiveBigIntegerField(default=0)
    failures_by_class = models.JSONField(default=dict, blank=True, help_text="{error class: count}")
    latency_histogram = models.JSONField(
        default=dict, blank=True, help_text="{upper bound in ms: count} of reported inference latencies."
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.release} health"


class VersionDistribution(models.Model):
    """How handing one published version to apps went: its patches, then the auto-promote channels.

    Created (pending) when training's ``version_published`` event arrives; the distribution task
    on the light queue ends it done, retrying (a transient storage or database error, retried
    with backoff) or failed, with the error. Staff see it in the admin and on the operations
    page, and can run it again (every step is idempotent). The version stays published whatever
    happens here: apps keep resolving to the releases they had.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        RETRYING = "retrying"
        DONE = "done"
        FAILED = "failed"

    version = models.OneToOneField(ModelVersion, on_delete=models.CASCADE, related_name="distribution")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, help_text="The last attempt's error, when it failed.")
    patches = models.PositiveIntegerField(default=0, help_text="Patches towards its files (bsdiff4).")
    channels = models.JSONField(default=list, blank=True, help_text="Channels the version was released on.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.version} distribution: {self.status}"
