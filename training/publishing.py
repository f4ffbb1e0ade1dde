"""Publishing: a run's offered files become one immutable, numbered ModelVersion, all or nothing.

After the commit, one event (``training.signals.version_published``) tells whoever listens;
training knows nothing of distribution (mobile_api listens, in its own task).
"""
from __future__ import annotations

import hashlib
import json
import logging

from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction

from challenges.models import Project
from training.models import DatasetSnapshot, ModelArtifact, ModelVersion, TrainingRun
from training.signals import version_published

logger = logging.getLogger(__name__)


class StoredFileMismatch(Exception):
    """The bytes read back from storage are not the bytes that were measured."""


def model_version_publish(
    *, run: TrainingRun, snapshot: DatasetSnapshot, result, compression, provenance: dict | None = None
) -> ModelVersion:
    """Store every offered file as one new immutable version, all or nothing.

    ``result`` is the training result (float model metrics and preprocessing), ``compression``
    the ``CompressionResult``: its offered artifacts become the version's files (the float model
    and its compressed alternatives), its card is kept with the version. Each stored object is
    read back and its sha256 compared with the measured file's: what apps download is exactly
    what was measured. Any failure removes the objects already stored and creates no row.
    ``provenance`` (imports) sets the version's source fields; the default is "trained".
    """
    project = run.project
    stored: list[str] = []
    try:
        with transaction.atomic():
            # Lock the project row: concurrent publishes take numbers one after another.
            Project.objects.select_for_update().get(pk=project.pk)
            last = ModelVersion.objects.filter(project=project).order_by("-version").first()
            number = (last.version if last else 0) + 1
            version = ModelVersion.objects.create(
                project=project,
                version=number,
                run=run,
                snapshot=snapshot,
                labels=list(result.labels),
                preprocessing=result.preprocessing.to_manifest(),
                metrics=result.metrics.to_dict(),
                model_card=json_ready(compression.card),
                **(provenance or {}),
            )
            for artifact in compression.artifacts:
                stem = f"{project.slug}-v{number}-{artifact.variant}"
                name = f"models/{project.slug}/v{number}/{stem}.{artifact.extension}"
                with open(artifact.path, "rb") as fh:
                    saved = default_storage.save(name, File(fh))
                stored.append(saved)
                _stored_sha256_check(name=saved, expected=artifact.sha256)
                ModelArtifact.objects.create(
                    version=version,
                    format=artifact.format,
                    variant=artifact.variant,
                    precision=artifact.precision,
                    recommended=artifact.recommended,
                    file=saved,
                    size=artifact.size,
                    sha256=artifact.sha256,
                    preprocessing=artifact.preprocessing,
                    companions=list(artifact.companions),
                    measurements=json_ready(artifact.measurements),
                    verification=json_ready(artifact.measurements),
                )
            # One event after the commit (immediately, outside an outer transaction): whoever
            # reacts (mobile_api queues its distribution task) does it in work of its own, which
            # can never un-publish the version, and the hook never raises (it runs before this
            # block's cleanup handler is left).
            transaction.on_commit(lambda: version_published_send(version=version))
        return version
    except BaseException:
        # The rows never committed, so the objects would be orphans: remove them.
        for name in stored:
            default_storage.delete(name)
        raise


def version_published_send(*, version: ModelVersion) -> None:
    """Send ``version_published`` for a committed version; a failing receiver is logged, never raised."""
    for receiver, outcome in version_published.send_robust(sender=ModelVersion, version=version):
        if isinstance(outcome, Exception):
            logger.error("%s failed on version_published for %s; the version stays published",
                         getattr(receiver, "__qualname__", receiver), version, exc_info=outcome)


def _stored_sha256_check(*, name: str, expected: str) -> None:
    digest = hashlib.sha256()
    with default_storage.open(name, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise StoredFileMismatch(
            f"{name}: stored bytes have sha256 {digest.hexdigest()[:12]}, the measured file {expected[:12]}"
        )


def json_ready(value):
    """``value`` as it reads back from a JSONField (tuples become lists): memory and database agree."""
    return json.loads(json.dumps(value))
