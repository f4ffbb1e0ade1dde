"""Reads for the model registry, and the facts the volunteer side reads from training.

The volunteer side (``platform/``) sits below training in the loop; where it needs a fact of the
registry (a volunteer's impact, the newsletter's release notes, the label recall behind a
generated challenge) it imports these at module top, in the direction of the loop.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from django.db.models import QuerySet

from challenges.models import Project
from training.models import ModelArtifact, ModelVersion
from training.release_notes import ReleaseNotes, release_notes_build


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


@dataclass(frozen=True)
class VersionPhotoSplit:
    """How many of some photos one published version trained on and was tested on."""

    model: str
    version: int
    created_at: dt.datetime
    train: int
    holdout: int


def model_version_photo_splits(*, photo_ids: Collection[str], project_ids) -> list[VersionPhotoSplit]:
    """Per published version of the projects (ids, or a subquery of them), how many of the photos it used.

    ``photo_ids`` are photos' public ids as text (as the snapshot manifests name them); a version
    counts them in its training and holdout splits. One query; ordered by model, newest first.
    """
    versions = (
        ModelVersion.objects.filter(project__in=project_ids)
        .select_related("project", "snapshot")
        .only("version", "created_at", "project__slug", "snapshot__manifest")
        .order_by("project__slug", "-version")
    )
    rows = []
    for version in versions:
        counts = {"train": 0, "holdout": 0}
        for entry in version.snapshot.manifest.get("photos", []):
            if entry.get("photo") in photo_ids and entry.get("split") in counts:
                counts[entry["split"]] += 1
        rows.append(VersionPhotoSplit(model=version.project.slug, version=version.version,
                                      created_at=version.created_at, **counts))
    return rows


def model_version_latest_metrics(*, project: Project) -> dict | None:
    """The holdout metrics of the project's newest published version, with its number; None without one."""
    version = ModelVersion.objects.filter(project=project).order_by("-version").only("version", "metrics").first()
    if version is None or not isinstance(version.metrics, dict):
        return None
    return {**version.metrics, "version": version.version}


@dataclass(frozen=True)
class ProjectRelease:
    """A project's newest version, the one before it, and the release notes between them."""

    project: Project
    version: ModelVersion
    previous: ModelVersion | None
    notes: ReleaseNotes


def model_version_latest_releases(*, projects: Iterable[Project]) -> list[ProjectRelease]:
    """For each project with a published model: its newest version compared with the one before."""
    releases = []
    for project in projects:
        versions = list(ModelVersion.objects.filter(project=project).order_by("-version")[:2])
        if not versions:
            continue
        latest = versions[0]
        previous = versions[1] if len(versions) > 1 else None
        notes = release_notes_build(metrics=latest.metrics, previous_metrics=previous.metrics if previous else None)
        releases.append(ProjectRelease(project=project, version=latest, previous=previous, notes=notes))
    return releases
