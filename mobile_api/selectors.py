"""Reads for distribution: channels, their live releases and state, and the history of moves.

The update endpoint never calls these on its hot path: it answers from the cached channel
document (``mobile_api.update``), which these rebuild after a change or a cache miss.
"""
from __future__ import annotations

import datetime as dt

from django.db.models import Prefetch, QuerySet

from mobile_api.models import Channel, Release, ReleaseEvent
from mobile_api.rollout import channel_salt
from training.models import ModelArtifact, ModelVersion

LIVE_STATES = (Release.State.ACTIVE, Release.State.PAUSED)


def channel_get(*, project_slug: str, name: str) -> Channel | None:
    """One channel of an active project's model, with its project."""
    return (
        Channel.objects.filter(project__slug=project_slug, project__is_active=True, name=name)
        .select_related("project")
        .first()
    )


def channel_list(*, project_slug: str) -> QuerySet[Channel]:
    """The channels of a project's model."""
    return Channel.objects.filter(project__slug=project_slug).select_related("project").order_by("name")


def channel_live_releases(*, channel: Channel) -> list[Release]:
    """The channel's live (active or paused) releases, newest first, with versions and files."""
    return list(
        Release.objects.filter(channel=channel, state__in=LIVE_STATES)
        .select_related("version__project")
        .prefetch_related(Prefetch("version__artifacts", queryset=ModelArtifact.objects.order_by("id")))
        .order_by("-created_at", "-id")
    )


def release_effective_formats(*, release: Release) -> list[str]:
    """The formats a release really offers: its targeting narrowed to the files its version has.

    Stored in the channel state so that an install that accepts none of them falls through to
    an older release instead of getting a manifest without a file it can load.
    """
    available = sorted({artifact.format for artifact in release.version.artifacts.all()})
    if release.formats:
        return [fmt for fmt in available if fmt in release.formats]
    return available


def release_state_entry(*, release: Release) -> dict:
    """One release as the resolution rule sees it (see ``mobile_api.rollout``)."""
    return {
        "release_id": release.id,
        "version": release.version.version,
        "state": release.state,
        "rollout_percent": release.rollout_percent,
        "platforms": list(release.platforms or []),
        "formats": release_effective_formats(release=release),
        "min_app_version": release.min_app_version,
        "max_app_version": release.max_app_version,
    }


def channel_state(*, channel: Channel, releases: list[Release] | None = None) -> dict:
    """The channel's whole resolution input: its salt and its live releases, newest first."""
    if releases is None:
        releases = channel_live_releases(channel=channel)
    return {
        "salt": channel_salt(model=channel.project.slug, channel=channel.name),
        "releases": [release_state_entry(release=release) for release in releases],
    }


def release_is_full(*, release: Release) -> bool:
    """Active for everyone: 100% and no platform or app version targeting."""
    return (
        release.state == Release.State.ACTIVE
        and release.rollout_percent >= 100
        and not release.platforms
        and not release.min_app_version
        and not release.max_app_version
    )


def channel_default_version(*, releases: list[Release]) -> int | None:
    """The version every untargeted install gets: the newest fully rolled-out release's."""
    for release in releases:
        if release_is_full(release=release):
            return release.version.version
    return None


def release_get_live(*, channel: Channel, version: int) -> Release | None:
    """The live release of a version on a channel (at most one, by constraint)."""
    return (
        Release.objects.filter(channel=channel, version__version=version, state__in=LIVE_STATES)
        .select_related("version__project", "channel__project")
        .first()
    )


def release_for_report(*, project_slug: str, channel: str, version: int) -> Release | None:
    """The newest release (any state) of a version on a channel: what app telemetry refers to."""
    return (
        Release.objects.filter(channel__project__slug=project_slug, channel__name=channel, version__version=version)
        .select_related("channel__project", "version")
        .order_by("-created_at", "-id")
        .first()
    )


def channel_events(*, channel: Channel, limit: int = 50, before_id: int | None = None) -> list[ReleaseEvent]:
    """The channel's history, newest first, at most ``limit`` events older than ``before_id``."""
    events = ReleaseEvent.objects.filter(channel=channel).select_related("actor", "release__version")
    if before_id is not None:
        events = events.filter(id__lt=before_id)
    return list(events.order_by("-at", "-id")[:limit])


def channel_event_at(*, channel: Channel, at: dt.datetime) -> ReleaseEvent | None:
    """The last move at or before ``at``: its ``state`` is what installs resolved against then."""
    return ReleaseEvent.objects.filter(channel=channel, at__lte=at).order_by("-at", "-id").first()


def version_get(*, project_slug: str, version: int) -> ModelVersion | None:
    """One published version of a project's model."""
    return ModelVersion.objects.filter(project__slug=project_slug, version=version).select_related("project").first()


def version_latest(*, project_slug: str) -> ModelVersion | None:
    """The newest published version of a project's model."""
    return (
        ModelVersion.objects.filter(project__slug=project_slug).select_related("project").order_by("-version").first()
    )


def legacy_latest_version(*, project_slug: str) -> tuple[bool, ModelVersion | None]:
    """What ``/latest`` (apps built before channels) serves: (the project has channels, the version).

    With a stable channel: its newest release that is active for everyone and offers ONNX
    (what those apps load); without channels: the newest published version.
    """
    stable = channel_get(project_slug=project_slug, name="stable")
    if stable is None:
        version = (
            ModelVersion.objects.filter(project__slug=project_slug, project__is_active=True)
            .select_related("project")
            .prefetch_related("artifacts")
            .order_by("-version")
            .first()
        )
        return False, version
    for release in channel_live_releases(channel=stable):
        if release_is_full(release=release) and "onnx" in release_effective_formats(release=release):
            return True, release.version
    return True, None
