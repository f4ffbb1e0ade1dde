"""Binary patches between versions of a model file (bsdiff4), built right after publishing.

A nightly head-only update retrains the classifier and leaves the backbone's weights as
they were, so most of the new file's bytes are already on the phone. For every file of a
new version we diff it against the file of the same format and variant in the versions
installs most likely run (the previous version and every version still live on a channel),
and keep the patch only when it is at most ``PLATFORM_DELTA_MAX_RATIO`` (0.5) of the full
file: a bigger patch saves too little to be worth a second code path on the phone.

Every patch is verified before it is offered: applying it to the old stored bytes must give
bytes whose sha256 is the new artifact's. Apps verify again after patching and fall back to
the full file on any mismatch (PROTOCOL.md, "Deltas").
"""
from __future__ import annotations

import hashlib
import logging
import posixpath
import time

import bsdiff4
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from mobile_api.models import ArtifactDelta, Release
from training.models import ModelArtifact, ModelVersion

logger = logging.getLogger(__name__)

ALGORITHM = "bsdiff4"


class DeltaMismatch(Exception):
    """Stored bytes or a patch's result do not have the sha256 the registry says they have."""


def version_deltas_build(*, version: ModelVersion) -> list[ArtifactDelta]:
    """Build, verify and store the patches towards each file of ``version`` that pay; return the new ones.

    Bases: the same format and variant in the immediately previous version and in every
    version live (active or paused) on one of the project's channels. Idempotent: a pair
    that already has a patch is skipped, so a second run returns ``[]``. A failure on one
    pair is logged and leaves neither an object nor a row; the other pairs go on. Call it
    after the version's rows have committed (the patches are stored objects, which a later
    rollback would orphan).
    """
    bases = _base_versions(version)
    if not bases:
        return []
    candidates: dict[tuple[str, str], list[ModelArtifact]] = {}
    for old in ModelArtifact.objects.filter(version__in=bases).select_related("version").order_by("-version__version"):
        candidates.setdefault((old.format, old.variant), []).append(old)
    done = set(
        ArtifactDelta.objects.filter(artifact__version=version, algorithm=ALGORITHM).values_list(
            "artifact_id", "from_artifact_id"
        )
    )

    built: list[ArtifactDelta] = []
    for artifact in version.artifacts.select_related("version__project"):
        if artifact.companions:
            # The patch rewrites one file; a file that needs companions (external ONNX
            # weights) would need patches for those too. Such files download whole.
            continue
        for old in candidates.get((artifact.format, artifact.variant), []):
            if (artifact.pk, old.pk) in done:
                continue
            try:
                delta = artifact_delta_build(artifact=artifact, from_artifact=old)
            except Exception:
                logger.exception(
                    "delta %s from v%s failed; installs download the full file", artifact, old.version.version
                )
                continue
            if delta is not None:
                built.append(delta)
    return built


def artifact_delta_build(*, artifact: ModelArtifact, from_artifact: ModelArtifact) -> ArtifactDelta | None:
    """One verified patch from ``from_artifact`` to ``artifact``, stored with its row; None when it does not pay.

    Raises DeltaMismatch when stored bytes are not what the registry says, or the patch does
    not rebuild the exact file. Nothing is left behind when it raises.
    """
    old = _stored_bytes(from_artifact)
    new = _stored_bytes(artifact)
    started = time.perf_counter()
    patch = bsdiff4.diff(old, new)
    seconds = time.perf_counter() - started
    limit = settings.PLATFORM_DELTA_MAX_RATIO * artifact.size
    if len(patch) > limit:
        logger.info(
            "delta %s from v%s: %d bytes, over %.0f%% of %d; not offered",
            artifact, from_artifact.version.version, len(patch), settings.PLATFORM_DELTA_MAX_RATIO * 100, artifact.size,
        )
        return None
    if hashlib.sha256(bsdiff4.patch(old, patch)).hexdigest() != artifact.sha256:
        raise DeltaMismatch(f"the patch {from_artifact} -> {artifact} does not rebuild the file")

    digest = hashlib.sha256(patch).hexdigest()
    stem = posixpath.basename(artifact.file.name)  # keeps the format: .onnx and .pte files share a variant
    name = posixpath.join(
        posixpath.dirname(artifact.file.name), f"{stem}.from-v{from_artifact.version.version}.bsdiff"
    )
    saved = default_storage.save(name, ContentFile(patch))
    try:
        if _sha256_of(saved) != digest:
            raise DeltaMismatch(f"{saved}: the stored patch is not the bytes written")
        # A savepoint: a duplicate from a concurrent run fails alone, not the caller's transaction.
        with transaction.atomic():
            delta = ArtifactDelta.objects.create(
                artifact=artifact, from_artifact=from_artifact, algorithm=ALGORITHM,
                file=saved, size=len(patch), sha256=digest,
            )
    except BaseException:
        default_storage.delete(saved)  # no row points at it: it would be an orphan
        raise
    logger.info(
        "delta %s from v%s: %d of %d bytes (%.1f%%), diff %.1f s",
        artifact, from_artifact.version.version, len(patch), artifact.size, 100 * len(patch) / artifact.size, seconds,
    )
    return delta


def deltas_by_artifact(*, artifact_ids: list[int]) -> dict[int, list[ArtifactDelta]]:
    """The published patches towards each artifact, keyed by artifact id, in one query.

    ``delta.from_artifact.version.version`` and ``delta.from_artifact.sha256`` are the
    manifest's ``from_version`` and ``from_sha256`` (``mobile_api.update`` builds the entries).
    """
    found: dict[int, list[ArtifactDelta]] = {}
    for delta in ArtifactDelta.objects.filter(artifact_id__in=artifact_ids).select_related("from_artifact__version"):
        found.setdefault(delta.artifact_id, []).append(delta)
    return found


def artifact_delta_get(
    *, project_slug: str, version: int, format: str, variant: str, from_version: int
) -> ArtifactDelta | None:
    """The patch towards one file of a version from the same file of ``from_version``, if published."""
    return (
        ArtifactDelta.objects.filter(
            artifact__version__project__slug=project_slug,
            artifact__version__version=version,
            artifact__format=format,
            artifact__variant=variant,
            from_artifact__version__version=from_version,
            algorithm=ALGORITHM,
        )
        .select_related("artifact")
        .first()
    )


def _base_versions(version: ModelVersion) -> list[ModelVersion]:
    """Earlier versions installs may run: the previous one and those live on a channel."""
    earlier = ModelVersion.objects.filter(project_id=version.project_id, version__lt=version.version)
    previous = earlier.order_by("-version").first()
    live = earlier.filter(
        releases__state__in=[Release.State.ACTIVE, Release.State.PAUSED]
    ).distinct()
    bases = {v.pk: v for v in live}
    if previous is not None:
        bases[previous.pk] = previous
    return sorted(bases.values(), key=lambda v: -v.version)


def _stored_bytes(artifact: ModelArtifact) -> bytes:
    """The artifact's stored bytes, checked against its registered sha256."""
    with default_storage.open(artifact.file.name, "rb") as fh:
        data = fh.read()
    if hashlib.sha256(data).hexdigest() != artifact.sha256:
        raise DeltaMismatch(f"{artifact.file.name}: stored bytes do not match the registered sha256")
    return data


def _sha256_of(name: str) -> str:
    digest = hashlib.sha256()
    with default_storage.open(name, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
