"""Reads for the model registry."""
from __future__ import annotations

from django.db.models import QuerySet

from training.models import ModelArtifact, ModelVersion


def model_version_get_latest(*, project_slug: str) -> ModelVersion | None:
    """The newest published version of a project's model, with its artifacts."""
    return (
        ModelVersion.objects.filter(project__slug=project_slug, project__is_active=True)
        .select_related("project")
        .prefetch_related("artifacts")
        .order_by("-version")
        .first()
    )


def model_artifact_get(*, project_slug: str, version: int, format: str, variant: str) -> ModelArtifact | None:
    """One stored file of a published version: its format ("onnx", "pte") and variant ("fp32", "int8", ...)."""
    return (
        ModelArtifact.objects.filter(
            version__project__slug=project_slug, version__version=version, format=format, variant=variant
        )
        .select_related("version__project")
        .first()
    )


def model_version_get(*, project_slug: str, version: int) -> ModelVersion | None:
    """One published version of a project's model (the same projects as the manifest)."""
    return (
        ModelVersion.objects.filter(project__slug=project_slug, project__is_active=True, version=version)
        .select_related("project")
        .first()
    )


def model_version_list(*, project_slug: str) -> QuerySet[ModelVersion]:
    """All published versions of a project's model, newest first."""
    return (
        ModelVersion.objects.filter(project__slug=project_slug)
        .select_related("imported_by").prefetch_related("artifacts").order_by("-version")
    )


def model_artifact_get_for_scoring(*, project_id: int) -> ModelArtifact | None:
    """The ONNX file that scores a project's photos: the newest version's, fp32 first (the reference)."""
    return (
        ModelArtifact.objects.filter(version__project_id=project_id, format="onnx")
        .select_related("version")
        .order_by("-version__version", "precision")
        .first()
    )
