"""Rows for page and newsletter tests, built directly (no image processing needed)."""
from __future__ import annotations

import datetime as dt
import hashlib
import itertools

from django.utils import timezone

from submissions.models import Photo
from training.models import DatasetSnapshot, ModelArtifact, ModelVersion, TrainingRun

_counter = itertools.count()


def make_photo(*, project, label_name="ants", volunteer=None, created_at=None, **fields) -> Photo:
    """A stored-looking photo row; `created_at` backdates it."""
    n = next(_counter)
    digest = hashlib.sha256(f"photo-{n}".encode()).hexdigest()
    photo = Photo.objects.create(
        project=project,
        label=project.labels.get(name=label_name),
        volunteer=volunteer,
        image=f"photos/{project.slug}/{n}.jpg",
        width=64,
        height=48,
        source_format="jpeg",
        upload_sha256=digest,
        sha256=digest,
        phash=f"{n:016x}",
        **fields,
    )
    if created_at is not None:
        Photo.objects.filter(pk=photo.pk).update(created_at=created_at)
        photo.refresh_from_db()
    return photo


def metrics(accuracy: float, per_label: dict[str, tuple[float, float, float]]) -> dict:
    """ModelVersion.metrics in training.ml.metrics' shape; per_label: label -> (precision, recall, f1)."""
    return {
        "count": 40,
        "accuracy": accuracy,
        "macro_f1": sum(v[2] for v in per_label.values()) / len(per_label),
        "per_label": {k: {"precision": p, "recall": r, "f1": f, "support": 20} for k, (p, r, f) in per_label.items()},
        "confusion": [],
        "labels": list(per_label),
    }


def make_model_version(*, project, version: int, metrics_dict: dict, artifacts: int = 1) -> ModelVersion:
    """A published version with its run, snapshot and `artifacts` files."""
    snapshot = DatasetSnapshot.objects.create(
        project=project, manifest_sha256=hashlib.sha256(f"{project.slug}-{version}".encode()).hexdigest(),
        manifest={}, label_counts={}, photo_count=40,
    )
    run = TrainingRun.objects.create(
        project=project, night=timezone.localdate() - dt.timedelta(days=version), trigger=TrainingRun.Trigger.MANUAL,
        status=TrainingRun.Status.SUCCEEDED, snapshot=snapshot,
    )
    model_version = ModelVersion.objects.create(
        project=project, version=version, run=run, snapshot=snapshot, labels=list(metrics_dict["per_label"]),
        preprocessing={}, metrics=metrics_dict,
    )
    for index, (fmt, precision) in enumerate([("onnx", "fp32"), ("onnx", "int8")][:artifacts]):
        ModelArtifact.objects.create(
            version=model_version, format=fmt, variant=precision, precision=precision, file=f"models/{project.slug}/{version}.{precision}.onnx",
            size=3_500_000 + index, sha256=hashlib.sha256(f"{version}-{fmt}-{precision}".encode()).hexdigest(),
            verification={},
        )
    return model_version
