"""Writes for distribution: app keys, channels, and the pointer moves of releases.

Every move (promote, rollout, pause, resume, roll back, settings) runs the same way:
inside one transaction it locks the channel row, changes release rows, bumps
``Channel.generation`` and appends a ``ReleaseEvent`` carrying the channel's complete
resolution state; once the transaction commits, the channel's document is rebuilt, put in
the cache the update endpoint answers from, and written to storage as the static manifest.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from challenges.models import Project
from common.errors import DATABASE_ERRORS, Conflict, DomainError, ValidationFailed
from mobile_api import auth, rollout, selectors, update
from mobile_api.models import AppKey, ArtifactDelta, Channel, Release, ReleaseEvent, VersionDistribution
from training.models import ModelVersion

logger = logging.getLogger(__name__)

# Created on first publish (or first promote through the API); both follow every publish.
DEFAULT_CHANNELS = {"stable": {"auto_promote": True}, "beta": {"auto_promote": True}}
# What an admin may change on a channel (each change is a SETTINGS event apps see at once).
CHANNEL_SETTINGS = ("auto_promote", "auto_rollout_percent", "poll_interval_seconds", "wifi_only", "charging_only",
                    "max_cellular_bytes")


class DistributionInterrupted(Exception):
    """A transient error stopped an attempt at distributing a version: the task tries again."""


# --- app keys ----------------------------------------------------------------------------

def app_key_create(*, name: str, rate_limit_per_minute: int = 600, actor=None) -> tuple[AppKey, str]:
    """A new app key: (its row, the key itself, to show once; only its sha256 is stored)."""
    key, prefix, digest = auth.key_generate()
    app_key = AppKey.objects.create(
        name=name, prefix=prefix, key_sha256=digest, rate_limit_per_minute=rate_limit_per_minute, created_by=actor
    )
    transaction.on_commit(lambda: auth.app_key_forget(digest))  # a cached "unknown key" answer
    return app_key, key


def app_key_revoke(*, app_key: AppKey, actor=None) -> AppKey:
    """Revoke a key: every app sending it gets 401 (within PLATFORM_UPDATE_LOCAL_TTL seconds)."""
    if app_key.revoked_at is None:
        app_key.revoked_at = timezone.now()
        app_key.revoked_by = actor
        app_key.save(update_fields=["revoked_at", "revoked_by"])
    digest = app_key.key_sha256
    auth.app_key_forget(digest)
    transaction.on_commit(lambda: auth.app_key_forget(digest))
    return app_key


# --- channels ----------------------------------------------------------------------------

def channel_create(*, project: Project, name: str, actor=None, **fields) -> Channel:
    """A new channel (admin-defined, or a default one); its static manifest is written at once."""
    with transaction.atomic():
        channel = Channel.objects.create(project=project, name=name, **fields)
        _event_append(channel=channel, action=ReleaseEvent.Action.SETTINGS, release=None, actor=actor,
                      reason="channel created", from_version=None, to_version=None)
    return channel


def channel_defaults_ensure(*, project: Project) -> list[Channel]:
    """The project's default channels (stable, beta), created when missing."""
    channels = []
    for name, fields in DEFAULT_CHANNELS.items():
        channel = Channel.objects.filter(project=project, name=name).select_related("project").first()
        if channel is None:
            channel = channel_create(project=project, name=name, **fields)
        channels.append(channel)
    return channels


def channel_settings_save(*, channel: Channel, actor=None, reason: str = "") -> Channel:
    """Save changed channel settings (poll interval, download conditions, auto-promote).

    ``channel`` carries the new values; apps see them on their next poll (a SETTINGS event).
    """
    with transaction.atomic():
        locked = _channel_lock(channel)
        # Only the settings: the generation belongs to the moves, not to the form that edited them.
        for field in CHANNEL_SETTINGS:
            setattr(locked, field, getattr(channel, field))
        locked.save(update_fields=list(CHANNEL_SETTINGS))
        _event_append(channel=locked, action=ReleaseEvent.Action.SETTINGS, release=None, actor=actor,
                      reason=reason or "settings changed", from_version=None, to_version=None)
    channel.generation = locked.generation
    return channel


# --- releases: the pointer moves -----------------------------------------------------------

def release_promote(
    *,
    channel: Channel,
    version: ModelVersion,
    rollout_percent: int = 100,
    platforms: list[str] = (),
    formats: list[str] = (),
    min_app_version: str = "",
    max_app_version: str = "",
    actor=None,
    reason: str = "",
) -> Release:
    """Release a version on a channel, to ``rollout_percent`` of the installs it targets.

    The new release is the channel's newest, so it wins for the installs it covers; the rest
    keep resolving to older releases. At 100% without targeting it supersedes the older
    releases it hides. A version already live on the channel is refused (change its rollout).
    """
    platforms, formats = list(platforms or []), list(formats or [])
    _targeting_check(rollout_percent=rollout_percent, platforms=platforms, formats=formats,
                     min_app_version=min_app_version, max_app_version=max_app_version)
    if version.project_id != channel.project_id:
        raise ValidationFailed("The version belongs to another model.", code="invalid_parameter",
                               extra={"fields": {"version": "not a version of this channel's model"}})
    offered = {a.format for a in version.artifacts.all()}
    if not offered or (formats and not offered.intersection(formats)):
        raise ValidationFailed(f"Version {version.version} has no file in the formats asked for.",
                               code="invalid_parameter", extra={"fields": {"formats": "no such file"}})
    with transaction.atomic():
        channel = _channel_lock(channel)
        before = _default_version(channel)
        if Release.objects.filter(channel=channel, version=version, state__in=selectors.LIVE_STATES).exists():
            raise Conflict(f"Version {version.version} is already live on {channel}; change its rollout instead.",
                           code="release_exists")
        release = Release.objects.create(
            channel=channel, version=version, rollout_percent=rollout_percent, platforms=platforms,
            formats=formats, min_app_version=min_app_version, max_app_version=max_app_version, created_by=actor,
        )
        _supersede_hidden(channel=channel, release=release)
        _event_append(channel=channel, action=ReleaseEvent.Action.PROMOTE, release=release, actor=actor,
                      reason=reason, from_version=before, to_version=version.version)
    return release


def release_rollout(*, release: Release, rollout_percent: int, actor=None, reason: str = "") -> Release:
    """Change how many installs (buckets) a live release covers (0..100)."""
    _targeting_check(rollout_percent=rollout_percent)

    def move(release: Release) -> None:
        release.rollout_percent = rollout_percent
        release.save(update_fields=["rollout_percent"])

    return _move(release=release, action=ReleaseEvent.Action.ROLLOUT, allowed=selectors.LIVE_STATES,
                 change=move, actor=actor, reason=reason)


def release_pause(*, release: Release, actor=None, reason: str = "", automatic: bool = False) -> Release:
    """Stop a release from spreading; installs already running it keep it."""
    action = ReleaseEvent.Action.AUTO_PAUSE if automatic else ReleaseEvent.Action.PAUSE
    return _move(release=release, action=action, allowed=(Release.State.ACTIVE,),
                 change=_state_setter(Release.State.PAUSED), actor=None if automatic else actor, reason=reason)


def release_resume(*, release: Release, actor=None, reason: str = "") -> Release:
    """Let a paused release spread again to its rollout."""
    return _move(release=release, action=ReleaseEvent.Action.RESUME, allowed=(Release.State.PAUSED,),
                 change=_state_setter(Release.State.ACTIVE), actor=actor, reason=reason)


def release_rollback(*, release: Release, actor=None, reason: str = "", automatic: bool = False) -> Release:
    """Withdraw a live release: its installs fall back to the previous release.

    When no fully rolled-out release remains below it, the release it superseded (the newest
    superseded one older than it) becomes active again, so "previous" means what everyone had.
    """
    action = ReleaseEvent.Action.AUTO_ROLLBACK if automatic else ReleaseEvent.Action.ROLLBACK

    def move(release: Release) -> None:
        release.state = Release.State.ROLLED_BACK
        release.save(update_fields=["state"])
        remaining = selectors.channel_live_releases(channel=release.channel)
        if selectors.channel_default_version(releases=remaining) is not None:
            return
        previous = (
            Release.objects.filter(channel=release.channel, state=Release.State.SUPERSEDED, id__lt=release.id)
            .exclude(version=release.version)
            .exclude(version__in=[r.version_id for r in remaining])
            .order_by("-created_at", "-id")
            .first()
        )
        if previous is not None:
            previous.state = Release.State.ACTIVE
            previous.save(update_fields=["state"])

    return _move(release=release, action=action, allowed=selectors.LIVE_STATES, change=move,
                 actor=None if automatic else actor, reason=reason, rollback=True)


def _state_setter(state: str) -> Callable[[Release], None]:
    def change(release: Release) -> None:
        release.state = state
        release.save(update_fields=["state"])

    return change


def _move(*, release: Release, action: str, allowed: tuple, change: Callable[[Release], None], actor,
          reason: str, rollback: bool = False) -> Release:
    """One pointer move on a live release, under the channel lock, with its history event."""
    with transaction.atomic():
        channel = _channel_lock(release.channel)
        release = Release.objects.select_related("version").get(pk=release.pk)
        release.channel = channel
        if release.state not in allowed:
            raise Conflict(
                f"The release of version {release.version.version} on {channel} is {release.state}; "
                f"{action} needs it {' or '.join(allowed)}.",
                code="release_state_conflict",
            )
        before = _default_version(channel)
        change(release)
        _supersede_hidden(channel=channel, release=release)
        if rollback:
            after = _default_version(channel)
            from_version, to_version = release.version.version, after
        else:
            from_version, to_version = before, release.version.version
        _event_append(channel=channel, action=action, release=release, actor=actor, reason=reason,
                      from_version=from_version, to_version=to_version)
    return release


def _channel_lock(channel: Channel) -> Channel:
    """The channel row, locked until the transaction ends: moves on a channel are serialised."""
    return Channel.objects.select_for_update().select_related("project").get(pk=channel.pk)


def _default_version(channel: Channel) -> int | None:
    return selectors.channel_default_version(releases=selectors.channel_live_releases(channel=channel))


def _supersede_hidden(*, channel: Channel, release: Release) -> None:
    """Retire older live releases that a full, untargeted release now hides from every install.

    Only those offering no format the new release lacks: an install that accepts only such
    a format would still resolve to them.
    """
    if not selectors.release_is_full(release=release):
        return
    releases = selectors.channel_live_releases(channel=channel)
    newer = next((r for r in releases if r.pk == release.pk), None)
    if newer is None:
        return
    covered = set(selectors.release_effective_formats(release=newer))
    hidden = [
        r.pk for r in releases
        if (r.created_at, r.pk) < (newer.created_at, newer.pk)
        and set(selectors.release_effective_formats(release=r)) <= covered
    ]
    if hidden:
        Release.objects.filter(pk__in=hidden).update(state=Release.State.SUPERSEDED)


def _event_append(*, channel: Channel, action: str, release: Release | None, actor, reason: str,
                  from_version: int | None, to_version: int | None) -> ReleaseEvent:
    """Bump the generation, record the move with the resulting state, republish after commit."""
    channel.generation += 1
    Channel.objects.filter(pk=channel.pk).update(generation=channel.generation)
    event = ReleaseEvent.objects.create(
        channel=channel, release=release, action=action, from_version=from_version, to_version=to_version,
        rollout_percent=release.rollout_percent if release is not None else None,
        actor=actor if getattr(actor, "is_authenticated", False) else None, reason=reason or "",
        state=selectors.channel_state(channel=channel), generation=channel.generation,
    )
    channel_id = channel.pk
    transaction.on_commit(lambda: channel_publish(channel_id=channel_id))
    return event


def _targeting_check(*, rollout_percent: int, platforms: list[str] = (), formats: list[str] = (),
                     min_app_version: str = "", max_app_version: str = "") -> None:
    fields = {}
    if not isinstance(rollout_percent, int) or isinstance(rollout_percent, bool) or not 0 <= rollout_percent <= 100:
        fields["rollout_percent"] = "an integer from 0 to 100"
    if any(p not in update.PLATFORMS for p in platforms):
        fields["platforms"] = f"each one of {', '.join(update.PLATFORMS)}"
    if any(f not in update.FORMATS for f in formats):
        fields["formats"] = f"each one of {', '.join(update.FORMATS)}"
    for name, value in (("min_app_version", min_app_version), ("max_app_version", max_app_version)):
        if value and not rollout.APP_VERSION.match(value):
            fields[name] = "a dotted version of 1 to 4 numbers, e.g. 2.13.0"
    if (not fields and min_app_version and max_app_version
            and rollout.app_version_key(min_app_version) > rollout.app_version_key(max_app_version)):
        fields["max_app_version"] = "not below min_app_version"
    if fields:
        raise ValidationFailed(f"{next(iter(fields))}: {next(iter(fields.values()))}", code="invalid_parameter",
                               extra={"fields": fields})


# --- publishing the channel document -------------------------------------------------------

def channel_publish(*, channel_id: int) -> dict | None:
    """Rebuild a channel's document, cache it, and write its static manifest (after a commit).

    A storage failure is logged, never raised: the database and the cache already hold the
    move, and the next move (or the channel admin's "Republish" action) rewrites the object.
    """
    channel = Channel.objects.select_related("project").filter(pk=channel_id).first()
    if channel is None:
        return None
    document = update.channel_document_build(channel=channel)
    update.channel_document_store(document=document)
    try:
        static_manifest_write(document=document)
    except Exception:
        logger.exception("could not write the static manifest of %s", channel)
    return document


def static_manifest_name(*, model: str, channel: str) -> str:
    """Where a channel's static manifest lives in storage."""
    return f"{settings.PLATFORM_MANIFEST_PREFIX.strip('/')}/{model}/{channel}.json"


def static_manifest_write(*, document: dict) -> str:
    """Overwrite the static manifest object of a channel with its document, atomically.

    Readers (nginx, a CDN) must never see a missing or half-written file: on local storage
    the file is written beside its final name and renamed over it; on S3 a PUT replaces the
    object in one step.
    """
    name = static_manifest_name(model=document["model"], channel=document["channel"])
    body = json.dumps(document, indent=1, sort_keys=True).encode()
    try:
        path = Path(default_storage.path(name))
    except NotImplementedError:  # object storage: no local path
        path = None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
            tmp.write(body)
        os.chmod(tmp.name, 0o644)  # served by another user (nginx)
        os.replace(tmp.name, path)
        return name
    bucket = getattr(default_storage, "bucket", None)
    if bucket is not None and hasattr(default_storage, "_normalize_name"):
        # S3 (django-storages): one PUT replaces the object. Storage.save would pick another
        # name (file_overwrite is off for model files) and a delete first leaves a gap.
        key = default_storage._normalize_name(name)  # with the storage's location prefix
        bucket.Object(key).put(Body=body, ContentType="application/json", CacheControl="no-cache")
        return name
    if default_storage.exists(name):  # any other storage: it would pick another name
        default_storage.delete(name)
    default_storage.save(name, ContentFile(body))
    return name


# --- after a publish -----------------------------------------------------------------------

def error_is_transient(exc: BaseException) -> bool:
    """Worth another attempt: a lost database connection, a storage or network failure.

    Anything else (a domain error, a bug) fails a distribution at once, recorded for staff.
    botocore's errors count only when it is loaded (S3 storage): nothing here imports it.
    """
    if isinstance(exc, (*DATABASE_ERRORS, OSError)):
        return True
    botocore = sys.modules.get("botocore.exceptions")
    return botocore is not None and isinstance(exc, botocore.BotoCoreError)


def version_distribution_pending(*, version: ModelVersion) -> VersionDistribution:
    """The version's distribution record, (re)set to pending: a new event or a staff retry."""
    distribution, _ = VersionDistribution.objects.update_or_create(
        version=version, defaults={"status": VersionDistribution.Status.PENDING, "finished_at": None}
    )
    return distribution


def version_distribution_record(*, distribution: VersionDistribution, status: str, error: str = "", **outcome) -> None:
    """Write a distribution's status, error and ``outcome`` fields (finished unless it will be tried again)."""
    finished = status in (VersionDistribution.Status.DONE, VersionDistribution.Status.FAILED)
    for field, value in {"status": status, "error": error, **outcome}.items():
        setattr(distribution, field, value)
    distribution.finished_at = timezone.now() if finished else None
    distribution.save(update_fields=["status", "error", "finished_at", "updated_at", *outcome])


def version_distribution_run(*, distribution: VersionDistribution, final_attempt: bool = True) -> VersionDistribution:
    """One attempt at distributing a published version; its outcome is recorded on ``distribution``.

    A transient error (``error_is_transient``) raises DistributionInterrupted for the task to
    retry, unless this is its final attempt; any other error, or the last transient one, ends
    the record as failed (logged, not raised). Every step is idempotent, so an attempt after a
    partial one only finishes the job.
    """
    VersionDistribution.objects.filter(pk=distribution.pk).update(attempts=F("attempts") + 1)
    distribution.refresh_from_db(fields=["attempts"])
    try:
        patches, channels, refused = version_distribute(version=distribution.version)
    except Exception as exc:
        retry = error_is_transient(exc) and not final_attempt
        error = f"{type(exc).__name__}: {exc}"
        if retry:
            logger.warning("distributing %s failed (attempt %s), will retry: %s", distribution.version,
                           distribution.attempts, error)
            version_distribution_record(distribution=distribution, status=VersionDistribution.Status.RETRYING,
                                        error=error)
            raise DistributionInterrupted(error) from exc
        logger.exception("distributing %s failed (attempt %s); it stays published", distribution.version,
                         distribution.attempts)
        version_distribution_record(distribution=distribution, status=VersionDistribution.Status.FAILED, error=error)
        return distribution
    status = VersionDistribution.Status.FAILED if refused else VersionDistribution.Status.DONE
    version_distribution_record(distribution=distribution, status=status, error="; ".join(refused),
                                patches=patches, channels=sorted(channels))
    return distribution


def version_distribute(*, version: ModelVersion) -> tuple[int, list[str], list[str]]:
    """Offer a newly published version: build its patches, then release it on the auto channels.

    Returns (its patches, the channels holding a release of it, why a channel refused it). A
    channel that already holds a release of this version (an earlier attempt, or staff who
    released or rolled it back meanwhile) does not get it again; that channel, like every one
    without auto-promote, only has its static manifest rewritten (it may be missing, e.g. after
    a storage migration). A channel's refusal (a domain error, e.g. no file in the formats it
    targets) does not stop the others; any other error is raised, and the next attempt picks up
    where this one stopped.
    """
    from mobile_api.deltas import version_deltas_build

    version_deltas_build(version=version)  # those that fail are logged; installs download the full file
    released, refused = [], []
    channel_defaults_ensure(project=version.project)
    for channel in Channel.objects.filter(project=version.project).select_related("project"):
        if Release.objects.filter(channel=channel, version=version).exists():
            released.append(channel.name)
        if not channel.auto_promote or channel.name in released:
            channel_publish(channel_id=channel.pk)
            continue
        try:
            release_promote(channel=channel, version=version, rollout_percent=channel.auto_rollout_percent,
                            reason=f"published version {version.version}")
        except DomainError as exc:
            refused.append(f"{channel.name}: {exc.message}")
            continue
        released.append(channel.name)
    patches = ArtifactDelta.objects.filter(artifact__version=version).count()
    return patches, released, refused
