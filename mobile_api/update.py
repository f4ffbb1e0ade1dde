"""The update check's machinery: channel documents, their caches, and the answer to one poll.

Every installed app polls, so a poll must cost no database query. Each channel has one
*document*: its settings, its bucketing salt and its live releases, each with the full
manifest body. The same document is written to storage as the static manifest (for a CDN
or nginx) and kept in Django's cache; each web process memoizes it for
``PLATFORM_UPDATE_LOCAL_TTL`` seconds. A poll resolves the install against it with
``mobile_api.rollout`` and renders only the small per-install part.

Writers (``mobile_api.services``) rebuild and re-cache the document after every change, so
the database is read only after a change or a cache miss (e.g. a cold cache after a restart).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from challenges.models import Project
from mobile_api import rollout, selectors
from mobile_api.deltas import deltas_by_artifact
from mobile_api.models import Channel
from training.ml.card import card_withheld
from training.ml.model_import import SERVED_FORMATS as _FORMAT_SPECS  # formats.FORMATS + imported mlmodel
from training.models import ModelArtifact, ModelVersion
from training.release_notes import accuracy_interval

logger = logging.getLogger(__name__)

SCHEMA = 1
# The formats an app may accept and the platforms it may name (PROTOCOL.md).
# Their facts (runtime, extension, content type) live in training.ml.formats.
FORMATS = tuple(_FORMAT_SPECS)  # ("onnx", "pte", "tflite", "mlpackage", "mlmodel")
PLATFORMS = ("android", "ios", "other")
# format -> (runtime that loads the file, its delegate)
RUNTIMES = {name: (spec.runtime, spec.delegate) for name, spec in _FORMAT_SPECS.items()}
_FORMAT_ORDER = {name: i for i, name in enumerate(_FORMAT_SPECS)}
# Measurements (the file's model card row) an app may use to choose between alternatives.
ARTIFACT_METRICS = ("accuracy", "top1_agreement", "latency_ms", "threads", "peak_memory_mb")
RULE = (
    'bucket = int(sha256(salt + ":" + install_id).hexdigest()[:8], 16) % 100; the install gets the first '
    "release (newest first) whose platforms (empty: all) include its platform, whose formats include one it "
    "accepts, whose app version range [min_app_version, max_app_version] (empty: open; dotted numbers) holds "
    'its app version, whose rollout_percent > bucket, and whose state is "active", or "paused" when the '
    "install already runs that version; none: keep what you have."
)

_CACHE_PREFIX = "mobile:channel:"
# How long a "no such model/channel" answer is remembered: floods of unknown names stay off
# the database, and a newly created channel is visible within this time at worst (creating
# one through the services also clears it at once).
NEGATIVE_TTL = 60
# Writers replace documents at once; the expiry only bounds how long a change made outside
# the services (a project deactivated, a row edited by hand) can go unseen.
DOCUMENT_TTL = 3600
MODEL_NOT_FOUND = "model_not_found"
CHANNEL_NOT_FOUND = "channel_not_found"


# --- manifests -------------------------------------------------------------------------

def artifact_order_key(artifact: ModelArtifact) -> tuple:
    """Per format, the recommended file first, then the smaller ones."""
    return (_FORMAT_ORDER.get(artifact.format, len(_FORMAT_ORDER)), artifact.format, not artifact.recommended,
            artifact.size, artifact.variant)


def artifact_entry(*, artifact: ModelArtifact, version: ModelVersion, absolute: Callable[[str], str],
                   deltas: list | None = None) -> dict:
    """One file of a version as apps see it: how to load it, verify it and download it."""
    variant = f"{artifact.format}-{artifact.variant}"
    path = reverse(
        "mobile-model-download",
        kwargs={"name": version.project.slug, "version": version.version, "variant": variant},
    )
    runtime, delegate = RUNTIMES.get(artifact.format, (artifact.format, None))
    measurements = artifact.measurements or {}
    return {
        "format": artifact.format,
        "variant": artifact.variant,
        "precision": artifact.precision,
        "recommended": artifact.recommended,
        "runtime": runtime,
        "delegate": delegate,
        # The file's own input: a distilled student may take smaller images than the float model.
        "input": artifact.preprocessing or version.preprocessing,
        "companions": artifact.companions or [],
        "metrics": {key: measurements.get(key) for key in ARTIFACT_METRICS},
        "size": artifact.size,
        "sha256": artifact.sha256,
        "download_url": absolute(path),
        **_format_fields(artifact=artifact, measurements=measurements),
        "deltas": [_delta_entry(delta=d, version=version, variant=variant, absolute=absolute) for d in deltas or []],
    }


def _format_fields(*, artifact: ModelArtifact, measurements: dict) -> dict:
    """What only some formats carry: LiteRT's tensor details, Core ML's packaging and verification."""
    spec = _FORMAT_SPECS.get(artifact.format)
    out = {}
    if spec is not None and artifact.format not in ("onnx", "pte"):  # older entries keep their exact shape
        out["file_extension"] = spec.extension
        out["content_type"] = spec.content_type
    if measurements.get("tensors"):
        out["tensors"] = measurements["tensors"]
    if spec is not None and not spec.executable_here:
        out["verified"] = measurements.get("note") or "structure only"
    return out


def _delta_entry(*, delta, version: ModelVersion, variant: str, absolute: Callable[[str], str]) -> dict:
    from_version = delta.from_artifact.version.version
    try:
        path = reverse(
            "mobile-model-delta",
            kwargs={"name": version.project.slug, "version": version.version, "variant": variant,
                    "from_version": from_version},
        )
    except NoReverseMatch:  # the delta route is not installed: no patch is downloadable
        return {}
    return {
        "from_version": from_version,
        "from_sha256": delta.from_artifact.sha256,
        "algorithm": delta.algorithm,
        "size": delta.size,
        "sha256": delta.sha256,
        "download_url": absolute(path),
    }


def version_manifest(*, version: ModelVersion, absolute: Callable[[str], str], deltas: dict | None = None) -> dict:
    """The part of a manifest that depends on the version only (all files, all formats).

    ``deltas`` maps artifact ids to their patches (``deltas_by_artifact``); None looks them up.
    """
    artifacts = sorted(version.artifacts.all(), key=artifact_order_key)
    if deltas is None:
        deltas = deltas_by_artifact(artifact_ids=[a.id for a in artifacts])
    entries = []
    for artifact in artifacts:
        entry = artifact_entry(artifact=artifact, version=version, absolute=absolute, deltas=deltas.get(artifact.id))
        entry["deltas"] = [d for d in entry["deltas"] if d]  # drop patches without a route
        entries.append(entry)
    primary = _primary(entries)
    return {
        "version": version.version,
        "created_at": version.created_at.isoformat(),
        "labels": version.labels,
        "input": primary["input"] if primary else version.preprocessing,
        "metrics": _holdout_metrics(version),
        # Files measured but not offered, and why (e.g. too few photos to vouch for an int8 file).
        "withheld": card_withheld(version.model_card or {}),
        "artifacts": entries,
    }


def _holdout_metrics(version: ModelVersion) -> dict:
    """``holdout_accuracy`` (unchanged meaning) with the photos it rests on and its 95% interval."""
    accuracy, count, interval = accuracy_interval(version.metrics)
    return {"holdout_accuracy": accuracy, "holdout_count": count, "holdout_accuracy_ci95": interval}


def _primary(entries: list[dict]) -> dict | None:
    """The file the simplest clients take: the recommended ONNX, else the first recommended."""
    return (
        next((a for a in entries if a["recommended"] and a["format"] == "onnx"), None)
        or next((a for a in entries if a["recommended"]), None)
        or (entries[0] if entries else None)
    )


def base_url_absolute(path: str) -> str:
    """An absolute URL from ``PLATFORM_BASE_URL`` (static manifests have no request to ask)."""
    return settings.PLATFORM_BASE_URL.rstrip("/") + path


# --- channel documents -----------------------------------------------------------------

def channel_document_build(*, channel: Channel) -> dict:
    """The channel's document: settings, bucketing and live releases with their manifests.

    This is the static manifest written to storage, and (with ``rollout.resolve``) all a
    poll needs. Reads the database: 4 queries, whatever the number of releases.
    """
    releases = selectors.channel_live_releases(channel=channel)
    state = selectors.channel_state(channel=channel, releases=releases)
    versions = {release.id: release.version for release in releases}
    # One query for the patches of every file of every live release.
    artifact_ids = [a.id for v in versions.values() for a in v.artifacts.all()]
    all_deltas = deltas_by_artifact(artifact_ids=artifact_ids) if artifact_ids else {}
    entries = []
    for entry in state["releases"]:
        version = versions[entry["release_id"]]
        manifest = version_manifest(version=version, absolute=base_url_absolute, deltas=all_deltas)
        manifest["min_app_version"] = entry["min_app_version"]
        entries.append({**entry, "manifest": manifest})
    return {
        "schema": SCHEMA,
        "model": channel.project.slug,
        "channel": channel.name,
        "generation": channel.generation,
        "updated_at": timezone.now().isoformat(),
        "poll_interval_seconds": channel.poll_interval_seconds,
        "download": {
            "wifi_only": channel.wifi_only,
            "charging_only": channel.charging_only,
            "max_cellular_bytes": channel.max_cellular_bytes,
        },
        # `salt` and `releases` at the top level: the document is itself a rollout state.
        "salt": state["salt"],
        "bucketing": {"salt": state["salt"], "buckets": rollout.BUCKETS, "rule": RULE},
        "releases": entries,
    }


def _cache_key(model: str, channel: str) -> str:
    # Documents carry absolute URLs from PLATFORM_BASE_URL, and the shared cache outlives a
    # restart (the embedded default's is a folder on disk): a changed base URL must not be
    # answered from a document built for the old one.
    origin = hashlib.sha256(settings.PLATFORM_BASE_URL.encode()).hexdigest()[:12]
    return f"{_CACHE_PREFIX}{origin}/{model}/{channel}"


# (model, channel) -> (expires at, document or a not-found code)
_memo: dict[tuple[str, str], tuple[float, dict | str]] = {}


def channel_document_get(*, model: str, channel: str) -> dict | str:
    """The channel's document, or MODEL_NOT_FOUND / CHANNEL_NOT_FOUND.

    In-process memo, then Django's cache, then (on a miss) the database. Not-found answers
    are cached too, so a flood of made-up names costs one query a minute.
    """
    key = (model, channel)
    now = time.monotonic()
    hit = _memo.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    found = cache.get(_cache_key(model, channel))
    if found is None:
        found = _document_load(model=model, channel=channel)
    if len(_memo) > 10_000:  # bounded: random names cannot grow it without end
        _memo.clear()
    _memo[key] = (now + settings.PLATFORM_UPDATE_LOCAL_TTL, found)
    return found


def _document_load(*, model: str, channel: str) -> dict | str:
    """Rebuild a document after a cache miss."""
    row = selectors.channel_get(project_slug=model, name=channel)
    if row is None:
        missing = (
            CHANNEL_NOT_FOUND if Project.objects.filter(slug=model, is_active=True).exists() else MODEL_NOT_FOUND
        )
        cache.add(_cache_key(model, channel), missing, NEGATIVE_TTL)
        return missing
    document = channel_document_build(channel=row)
    # `add`, not `set`: a writer that committed after this read already stored a newer
    # document, and a stale one must not overwrite it.
    cache.add(_cache_key(model, channel), document, DOCUMENT_TTL)
    return document


def channel_document_store(*, document: dict) -> None:
    """Put a freshly built document in the shared cache and this process's memo (writers call it)."""
    key = (document["model"], document["channel"])
    cache.set(_cache_key(*key), document, DOCUMENT_TTL)
    _memo.pop(key, None)


def channel_document_forget(*, model: str, channel: str) -> None:
    """Drop a cached document or not-found answer (a channel was created, renamed or removed)."""
    cache.delete(_cache_key(model, channel))
    _memo.pop((model, channel), None)


def memo_clear() -> None:
    """Forget every memoized document and rendered answer of this process (tests)."""
    _memo.clear()
    _rendered.clear()


# --- one poll --------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    """What a poll gets: a 304 when ``etag`` matches, else ``body()``."""

    etag: str
    document: dict
    release: dict | None
    bucket: int
    install: rollout.Install

    def body(self) -> bytes:
        """The manifest for this install (PROTOCOL.md), rendered only when it is sent.

        Everything but the bucket is the same for every install that resolves to the same
        release with the same formats, so that JSON is rendered once per channel generation
        and the bucket spliced in: a 200 costs about what a 304 does.
        """
        key = (self.document["model"], self.document["channel"], self.document["generation"],
               self.release["release_id"] if self.release else 0, self.install.formats)
        parts = _rendered.get(key)
        if parts is None:
            rendered = json.dumps(self._answer(bucket=_BUCKET_MARK), separators=(",", ":"))
            head, _, tail = rendered.partition(f'"bucket":{_BUCKET_MARK}')
            parts = (f'{head}"bucket":'.encode(), tail.encode())
            if len(_rendered) > 10_000:  # bounded: old generations fall out
                _rendered.clear()
            _rendered[key] = parts
        return parts[0] + str(self.bucket).encode() + parts[1]

    def _answer(self, *, bucket: int) -> dict:
        document, release = self.document, self.release
        answer = {
            "model": document["model"],
            "channel": document["channel"],
            "version": None,
            "reason": "no_release_matches",
            "download": document["download"],
            "poll_interval_seconds": document["poll_interval_seconds"],
            "rollout": {"bucket": bucket, "percent": None, "release_state": None},
        }
        if release is not None:
            manifest = release["manifest"]
            order = {fmt: i for i, fmt in enumerate(self.install.formats)}
            offered = set(release["formats"])
            artifacts = sorted(
                (a for a in manifest["artifacts"] if a["format"] in order and a["format"] in offered),
                key=lambda a: order[a["format"]],  # stable: keeps recommended-first within a format
            )
            answer.update(manifest)
            answer.update(
                reason=None,
                artifacts=artifacts,
                withheld=[w for w in manifest.get("withheld", []) if w["format"] in order],
                rollout={"bucket": bucket, "percent": release["rollout_percent"], "release_state": release["state"]},
            )
        return answer


# A number no bucket can be, marking where each install's bucket goes in a rendered answer.
_BUCKET_MARK = -7_777_777
# (model, channel, generation, release id, formats) -> the rendered answer around the bucket
_rendered: dict[tuple, tuple[bytes, bytes]] = {}


def update_answer(*, document: dict, install: rollout.Install) -> Answer:
    """Resolve an install against a channel document; the ETag is computed without rendering.

    The ETag covers everything the body depends on: the channel's generation (bumped on every
    change), the release resolved, the bucket (in the body) and the accepted formats in order.
    """
    bucket = rollout.bucket_of(salt=document["salt"], install_id=install.install_id)
    release = rollout.resolve_bucket(document, bucket=bucket, install=install)
    release_id = release["release_id"] if release is not None else 0
    seed = f'{document["generation"]}|{release_id}|{bucket}|{",".join(install.formats)}'
    etag = '"' + hashlib.sha256(f'{document["model"]}/{document["channel"]}|{seed}'.encode()).hexdigest()[:32] + '"'
    return Answer(etag=etag, document=document, release=release, bucket=bucket, install=install)
