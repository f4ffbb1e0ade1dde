"""Binary patches between versions of a model file (bsdiff4), built at publish time."""
from __future__ import annotations

from mobile_api.models import ArtifactDelta
from training.models import ModelVersion


def version_deltas_build(*, version: ModelVersion) -> list[ArtifactDelta]:
    """Build and store a patch from the previous version's file for each artifact, when it pays.

    TODO(issue 6, deltas): not implemented yet.
    """
    return []


def deltas_by_artifact(*, artifact_ids: list[int]) -> dict[int, list[ArtifactDelta]]:
    """The published patches towards each artifact, keyed by artifact id (from_artifact selected)."""
    found: dict[int, list[ArtifactDelta]] = {}
    for delta in ArtifactDelta.objects.filter(artifact_id__in=artifact_ids).select_related("from_artifact__version"):
        found.setdefault(delta.artifact_id, []).append(delta)
    return found
