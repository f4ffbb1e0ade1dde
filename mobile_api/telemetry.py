"""Telemetry: what apps report about the releases they run, and the guard that acts on it.

Apps report per version: downloaded, loaded, failed to load (with the error class) and
inference latencies. Each report is aggregated into one ``ReleaseHealth`` row per release,
in one transaction with the rows locked, so concurrent reports never lose counts.

Latencies are kept as a histogram over fixed, roughly log-spaced bucket upper bounds
(``LATENCY_BOUNDS_MS``), never as raw samples: constant size per release, mergeable by
addition. A percentile is reported as the upper bound of the bucket holding it, so the true
value lies between the previous bound and the reported one (at most 2.5x apart up to 10 s).

The guard: once a live release has at least ``PLATFORM_ROLLOUT_MIN_LOAD_SAMPLES`` load
attempts and more than ``PLATFORM_ROLLOUT_MAX_LOAD_FAILURE_RATE`` of them failed, it is
rolled back automatically (``release_rollback(automatic=True)``), with the figures and error
classes as the reason in the channel's history, provided installs have something to fall
back to (a staged rollout, or an earlier release of another version). The endpoints and the
report's input rules: mobile_api/api_telemetry.py.
"""
from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction
from django.db.models import Prefetch

from challenges.models import Project
from common.errors import DomainError, NotFound, ValidationFailed
from mobile_api.models import Channel, Release, ReleaseEvent, ReleaseHealth
from mobile_api.selectors import LIVE_STATES, release_for_report
from mobile_api.services import release_rollback
from training.models import ModelArtifact

logger = logging.getLogger(__name__)

# Upper bounds (ms) of the latency buckets; a sample goes into the first bound >= it. The last
# bound is also the largest latency accepted, so every sample has a finite bucket.
LATENCY_BOUNDS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 60_000, 600_000)
MAX_LATENCY_MS = LATENCY_BOUNDS_MS[-1]
PERCENTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99}
MAX_EVENTS = 100
MAX_LATENCY_SAMPLES = 100
# A full valid report (100 events of 100 samples) is about 200 KB of JSON; anything larger is
# refused from its Content-Length before it is parsed and validated sample by sample.
MAX_REPORT_BYTES = 256 * 1024
# What runtimes name their errors: "InvalidProgram", "ORTInvalidGraph", "java.lang.OutOfMemoryError".
ERROR_CLASS = re.compile(r"\A[A-Za-z_][A-Za-z0-9_.:$-]{0,79}\Z", re.ASCII)
# Distinct error classes kept per release; later new ones are counted under OTHER_CLASS, so a
# misbehaving (or hostile) app cannot grow a health row without end.
MAX_ERROR_CLASSES = 50
OTHER_CLASS = "(other)"
# Events counted one by one; each is also the name of its ReleaseHealth counter.
COUNTED_EVENTS = ("downloaded", "loaded", "load_failed")


# --- histogram and rates (pure) ------------------------------------------------------------


def latency_bucket(ms: float) -> str:
    """The histogram key of a latency: its bucket's upper bound, as text (a JSON object key)."""
    for bound in LATENCY_BOUNDS_MS:
        if ms <= bound:
            return str(bound)
    return str(MAX_LATENCY_MS)  # not reached for validated input


def latency_histogram_add(histogram: dict[str, int], samples: Iterable[float]) -> dict[str, int]:
    """A new histogram: ``histogram`` plus the samples."""
    merged = dict(histogram)
    for sample in samples:
        key = latency_bucket(sample)
        merged[key] = merged.get(key, 0) + 1
    return merged


def latency_percentiles(histogram: dict[str, int]) -> dict[str, float | None]:
    """p50/p90/p99 from a histogram: the upper bound of the bucket holding each (None when empty).

    The p-th percentile is the smallest bound whose cumulative count reaches ceil(p * total).
    """
    counts = [(float(bound), int(count)) for bound, count in histogram.items() if int(count) > 0]
    counts.sort()
    total = sum(count for _, count in counts)
    result: dict[str, float | None] = {}
    for name, fraction in PERCENTILES.items():
        if total == 0:
            result[name] = None
            continue
        rank, seen = max(1, math.ceil(fraction * total)), 0
        for bound, count in counts:
            seen += count
            if seen >= rank:
                result[name] = int(bound) if bound.is_integer() else bound
                break
    return result


def load_failure_rate(*, loaded: int, load_failed: int) -> float | None:
    """Failed loads over load attempts; None before the first attempt."""
    attempts = loaded + load_failed
    return load_failed / attempts if attempts else None


def guard_reason(*, loaded: int, load_failed: int, failures_by_class: dict[str, int]) -> str | None:
    """Why the guard rolls a release back ("load failures 7 of 60 (11.7%) > 5% ..."), or None.

    None while there are fewer load attempts than PLATFORM_ROLLOUT_MIN_LOAD_SAMPLES or the
    failure rate is at most PLATFORM_ROLLOUT_MAX_LOAD_FAILURE_RATE.
    """
    attempts = loaded + load_failed
    threshold = settings.PLATFORM_ROLLOUT_MAX_LOAD_FAILURE_RATE
    minimum = settings.PLATFORM_ROLLOUT_MIN_LOAD_SAMPLES
    rate = load_failure_rate(loaded=loaded, load_failed=load_failed)
    if attempts < minimum or rate is None or rate <= threshold:
        return None
    classes = ", ".join(
        f"{name} {count}" for name, count in sorted(failures_by_class.items(), key=lambda item: (-item[1], item[0]))
    )
    return (
        f"load failures {load_failed} of {attempts} ({rate:.1%}) > {threshold * 100:g}% "
        f"after ≥{minimum} loads; classes: {classes or 'none reported'}"
    )


# --- the service -----------------------------------------------------------------------------


def telemetry_record(*, project_slug: str, channel: str, events: list[dict]) -> list[ReleaseHealth]:
    """Add one report's events to the health of the releases they are about; run the guard.

    All or nothing: an event about a version with no release on the channel (400
    unknown_release) or a file the version does not have (400 unknown_artifact) refuses the
    whole report, naming the event. The health rows are locked in release order for the
    whole transaction (concurrent reports wait, none is lost). A release the guard trips is
    rolled back once the counts are committed.
    """
    releases = _releases_for(project_slug=project_slug, channel=channel, events=events)
    by_release: dict[int, list[dict]] = {}
    for event in events:
        by_release.setdefault(releases[event["version"]].pk, []).append(event)

    with transaction.atomic():
        # Rows missing before the first report: created here, then everyone locks the same rows.
        ReleaseHealth.objects.bulk_create(
            [ReleaseHealth(release_id=release_id) for release_id in by_release], ignore_conflicts=True
        )
        healths = list(
            ReleaseHealth.objects.select_for_update().filter(release_id__in=by_release).order_by("release_id")
        )
        for health in healths:
            _health_add(health=health, events=by_release[health.release_id])
            health.save()
        release_by_id = {release.pk: release for release in releases.values()}
        for health in healths:
            _guard_check(release=release_by_id[health.release_id], health=health)
    return healths


def _releases_for(*, project_slug: str, channel: str, events: list[dict]) -> dict[int, Release]:
    """version -> its release on the channel; 404 for an unknown model or channel, 400 otherwise."""
    if not Channel.objects.filter(project__slug=project_slug, project__is_active=True, name=channel).exists():
        if not Project.objects.filter(slug=project_slug, is_active=True).exists():
            raise NotFound(f"No model named {project_slug!r}.", code="model_not_found")
        raise NotFound(f"Model {project_slug!r} has no channel {channel!r}.", code="channel_not_found")
    releases: dict[int, Release] = {}
    for index, event in enumerate(events):
        version = event["version"]
        if version in releases:
            continue
        release = release_for_report(project_slug=project_slug, channel=channel, version=version)
        if release is None:
            field = f"events[{index}].version"
            message = f"Version {version} was never released on {project_slug}/{channel}."
            raise ValidationFailed(message, code="unknown_release", extra={"fields": {field: message}})
        releases[version] = release
    files = set(
        ModelArtifact.objects.filter(version_id__in=[r.version_id for r in releases.values()]).values_list(
            "version__version", "format", "variant"
        )
    )
    for index, event in enumerate(events):
        if (event["version"], event["format"], event["variant"]) not in files:
            field = f"events[{index}].variant"
            message = f"Version {event['version']} has no {event['format']}-{event['variant']} file."
            raise ValidationFailed(message, code="unknown_artifact", extra={"fields": {field: message}})
    return releases


def _health_add(*, health: ReleaseHealth, events: list[dict]) -> None:
    """Add events to a (locked) health row in memory."""
    failures = Counter(health.failures_by_class or {})
    histogram = dict(health.latency_histogram or {})
    for event in events:
        kind = event["event"]
        if kind in COUNTED_EVENTS:
            setattr(health, kind, getattr(health, kind) + 1)
        if kind == "load_failed":
            name = event["error_class"]
            if name not in failures and len(failures) >= MAX_ERROR_CLASSES:
                name = OTHER_CLASS
            failures[name] += 1
        elif kind == "inference":
            histogram = latency_histogram_add(histogram, event["latency_ms"])
    health.failures_by_class = dict(failures)
    health.latency_histogram = histogram


def _guard_check(*, release: Release, health: ReleaseHealth) -> None:
    """Schedule the automatic rollback of a live release whose loads fail too often."""
    if release.state not in LIVE_STATES:
        return
    reason = guard_reason(
        loaded=health.loaded, load_failed=health.load_failed, failures_by_class=health.failures_by_class
    )
    if reason is None or not _has_fallback(release=release):
        return
    release_id = release.pk
    transaction.on_commit(lambda: _guard_rollback(release_id=release_id, reason=reason))


def _has_fallback(*, release: Release) -> bool:
    """Whether rolling back leaves installs something: a staged rollout (the rest never got
    it), or an earlier release of another version, live or superseded (``release_rollback``
    makes the newest superseded one active again)."""
    if release.rollout_percent < 100:
        return True
    return (
        Release.objects.filter(
            channel_id=release.channel_id, id__lt=release.pk,
            state__in=[*LIVE_STATES, Release.State.SUPERSEDED],
        )
        .exclude(version_id=release.version_id)
        .exists()
    )


def _guard_rollback(*, release_id: int, reason: str) -> None:
    """Roll the release back (after the report committed). Never fails the report that tripped it:
    a concurrent report or an admin may have moved the release first (a Conflict)."""
    try:
        release = Release.objects.select_related("channel").get(pk=release_id)
        release_rollback(release=release, reason=reason, automatic=True)
    except DomainError as exc:
        logger.info("telemetry guard: release %s not rolled back: %s", release_id, exc.message)
    except Exception:  # the counts are committed; a failed rollback is retried by the next report
        logger.exception("telemetry guard: rollback of release %s failed", release_id)
    else:
        logger.warning("telemetry guard rolled back release %s: %s", release_id, reason)


# --- reads -------------------------------------------------------------------------------------


def channel_health_list(*, project_slug: str, channel: str) -> tuple[Channel, list[Release]]:
    """A channel and every release on it (newest first) with its health and automatic moves.

    Three queries whatever the number of releases.
    """
    found = (
        Channel.objects.filter(project__slug=project_slug, name=channel).select_related("project").first()
    )
    if found is None:
        raise NotFound(f"No channel {channel!r} of a model named {project_slug!r}.", code="channel_not_found")
    automatic = ReleaseEvent.objects.filter(
        action__in=[ReleaseEvent.Action.AUTO_PAUSE, ReleaseEvent.Action.AUTO_ROLLBACK]
    ).order_by("-at", "-id")
    releases = list(
        Release.objects.filter(channel=found)
        .select_related("version", "health")
        .prefetch_related(Prefetch("events", queryset=automatic, to_attr="automatic_events"))
        .order_by("-created_at", "-id")
    )
    return found, releases


def release_health_summary(*, release: Release) -> dict:
    """One release's aggregates as staff see them (counts, rates, classes, latency percentiles)."""
    health = getattr(release, "health", None)
    loaded = health.loaded if health else 0
    failed = health.load_failed if health else 0
    histogram = (health.latency_histogram if health else None) or {}
    rate = load_failure_rate(loaded=loaded, load_failed=failed)
    automatic = getattr(release, "automatic_events", [])
    return {
        "version": release.version.version,
        "state": release.state,
        "rollout_percent": release.rollout_percent,
        "released_at": release.created_at,
        "downloaded": health.downloaded if health else 0,
        "loaded": loaded,
        "load_failed": failed,
        "load_failure_rate": None if rate is None else round(rate, 4),
        "failures_by_class": (health.failures_by_class if health else None) or {},
        "inferences": sum(int(count) for count in histogram.values()),
        "latency_ms": latency_percentiles(histogram),
        "latency_histogram": {bound: histogram[bound] for bound in sorted(histogram, key=float)},
        "automatic_action": (
            {"action": automatic[0].action, "reason": automatic[0].reason, "at": automatic[0].at}
            if automatic else None
        ),
        "updated_at": health.updated_at if health else None,
    }
