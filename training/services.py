"""The nightly training job: claim, snapshot, train, verify, publish.

torch is imported lazily (inside `_pipeline_run`) so the web process, which imports this
module through the admin and the API, never loads it.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from challenges.models import Project
from challenges.selectors import project_today
from submissions.models import Photo
from submissions.selectors import photo_list_approved
from training.models import DatasetSnapshot, ModelArtifact, ModelVersion, TrainingRun

logger = logging.getLogger(__name__)

# A running run whose heartbeat is older than this belongs to a dead worker.
RUN_STALE_AFTER = dt.timedelta(minutes=10)
_HEARTBEAT_EVERY_S = 2.0

ProgressCallback = Callable[[TrainingRun], None]


class RunClaimRefused(Exception):
    """Another run holds the claim (same night, or a run of this project is going on)."""


def training_run_claim(
    *, project: Project, night: dt.date, trigger: str, requested_by=None
) -> TrainingRun:
    """Claim the right to train `project` now; raise RunClaimRefused when it is taken.

    Stale runs (their worker stopped sending heartbeats, e.g. it was killed) are marked
    failed first, so a killed worker never blocks the next night.
    """
    training_run_fail_stale(project=project)
    now = timezone.now()
    try:
        with transaction.atomic():
            return TrainingRun.objects.create(
                project=project,
                night=night,
                trigger=trigger,
                status=TrainingRun.Status.RUNNING,
                stage="claimed",
                worker=f"{socket.gethostname()}:{os.getpid()}",
                started_at=now,
                heartbeat_at=now,
                requested_by=requested_by,
            )
    except IntegrityError as exc:
        raise RunClaimRefused(f"{project.slug}: a run for {night} is already claimed or running.") from exc


def training_run_fail_stale(*, project: Project) -> int:
    """Mark runs whose worker died as failed; return how many."""
    cutoff = timezone.now() - RUN_STALE_AFTER
    return TrainingRun.objects.filter(
        project=project, status=TrainingRun.Status.RUNNING, heartbeat_at__lt=cutoff
    ).update(
        status=TrainingRun.Status.FAILED,
        finished_at=timezone.now(),
        message="The worker stopped reporting (killed or lost); nothing was published.",
    )


def dataset_snapshot_create(*, project: Project) -> DatasetSnapshot:
    """Freeze the approved photos into an immutable manifest; reuse an identical one."""
    from training.ml.pipeline import split_for  # pure Python, no torch at import

    holdout_percent = settings.PLATFORM_HOLDOUT_PERCENT
    entries = []
    counts: dict[str, dict[str, int]] = {label.name: {"train": 0, "holdout": 0} for label in project.labels.all()}
    for photo in photo_list_approved(project_id=project.pk).order_by("id"):
        split = split_for(photo.sha256, holdout_percent=holdout_percent)
        entries.append(
            {"photo": str(photo.public_id), "sha256": photo.sha256, "label": photo.label.name, "split": split}
        )
        counts[photo.label.name][split] += 1
    manifest = {"project": project.slug, "holdout_percent": holdout_percent, "photos": entries}
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    snapshot, _ = DatasetSnapshot.objects.get_or_create(
        project=project,
        manifest_sha256=digest,
        defaults={"manifest": manifest, "label_counts": counts, "photo_count": len(entries)},
    )
    return snapshot


def training_run_execute(
    *,
    project: Project,
    trigger: str = TrainingRun.Trigger.NIGHTLY,
    night: dt.date | None = None,
    requested_by=None,
    on_progress: ProgressCallback | None = None,
) -> TrainingRun:
    """Run the whole job for one project (the nightly task and `train_now` both call this)."""
    night = night or project_today(project=project)
    run = training_run_claim(project=project, night=night, trigger=trigger, requested_by=requested_by)
    try:
        snapshot = dataset_snapshot_create(project=project)
        run.snapshot = snapshot
        _save_progress(run, stage="snapshot", progress=0.02, force=True)
        shortfall = _label_shortfall(snapshot)
        if shortfall:
            return _finish(run, status=TrainingRun.Status.SKIPPED, message=shortfall)
        with tempfile.TemporaryDirectory(prefix="training-run-") as tmp:
            result = _pipeline_run(run=run, snapshot=snapshot, out_dir=Path(tmp), on_progress=on_progress)
            version = model_version_publish(run=run, snapshot=snapshot, result=result)
        run.metrics = {
            **result.metrics.to_dict(),
            "exported_file": result.onnx_metrics.to_dict(),
            "seconds": result.seconds,
        }
        run.config = {**run.config, "pipeline": result.config}
        run.history = result.history
        return _finish(run, status=TrainingRun.Status.SUCCEEDED, message=f"Published version {version.version}.")
    except Exception as exc:
        logger.exception("training run %s failed", run.pk)
        _finish(run, status=TrainingRun.Status.FAILED, message=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if on_progress is not None:
            on_progress(run)


def model_version_publish(*, run: TrainingRun, snapshot: DatasetSnapshot, result) -> ModelVersion:
    """Store the verified file and create the next immutable version, all or nothing."""
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
            )
            name = f"models/{project.slug}/v{number}/{project.slug}-v{number}-fp32.onnx"
            with open(result.artifact_path, "rb") as fh:
                saved = default_storage.save(name, File(fh))
            stored.append(saved)
            ModelArtifact.objects.create(
                version=version,
                format="onnx",
                precision="fp32",
                file=saved,
                size=result.artifact_size,
                sha256=result.artifact_sha256,
                verification=result.verification,
            )
        return version
    except BaseException:
        # The row never committed, so the object would be an orphan: remove it.
        for name in stored:
            default_storage.delete(name)
        raise


def _pipeline_run(*, run: TrainingRun, snapshot: DatasetSnapshot, out_dir: Path, on_progress):
    import torch

    from training.ml.config import BackboneConfig, LinearProbeConfig, Preprocessing
    from training.ml.pipeline import Sample, linear_probe_pipeline

    threads = settings.PLATFORM_TORCH_THREADS or os.cpu_count() or 1
    torch.set_num_threads(threads)
    labels = sorted(snapshot.label_counts)
    index = {name: i for i, name in enumerate(labels)}
    photos = Photo.objects.in_bulk(
        [entry["photo"] for entry in snapshot.manifest["photos"]], field_name="public_id"
    )
    samples = [
        Sample(
            key=entry["photo"],
            label=index[entry["label"]],
            split=entry["split"],
            open_image=_opener(photos[uuid.UUID(entry["photo"])].image.name),
        )
        for entry in snapshot.manifest["photos"]
    ]
    backbone = BackboneConfig(weights_path=settings.PLATFORM_WEIGHTS_PATH)
    preprocessing = Preprocessing()
    probe = LinearProbeConfig()
    run.decision = {
        "strategy": "linear_probe",
        "reason": "Frozen ImageNet features with a linear classifier: the safe choice for small data "
        "sets similar to ImageNet (the size x similarity rule picks among four strategies later).",
        "label_counts": snapshot.label_counts,
    }
    run.config = {
        "backbone": {"weights_path": backbone.weights_path, "width_mult": backbone.width_mult},
        "preprocessing": preprocessing.to_manifest(),
        "probe": dataclasses.asdict(probe),
        "torch_threads": threads,
        "snapshot": snapshot.manifest_sha256,
    }
    _save_progress(run, stage="features", progress=0.05, force=True)

    def progress(stage: str, fraction: float) -> None:
        # The pipeline's stages take the run from 5% to 95%; publishing does the rest.
        _save_progress(run, stage=stage, progress=0.05 + 0.9 * _stage_offset(stage, fraction))
        if on_progress is not None:
            on_progress(run)

    result = linear_probe_pipeline(
        samples=samples,
        labels=labels,
        backbone=backbone,
        preprocessing=preprocessing,
        probe=probe,
        out_dir=out_dir,
        progress=progress,
    )
    _save_progress(run, stage="publish", progress=0.96, force=True)
    return result


_STAGES = {"features": (0.0, 0.6), "train": (0.6, 0.1), "evaluate": (0.7, 0.05), "export": (0.75, 0.15), "verify": (0.9, 0.1)}


def _stage_offset(stage: str, fraction: float) -> float:
    start, width = _STAGES.get(stage, (0.0, 0.0))
    return start + width * max(0.0, min(1.0, fraction))


def _opener(name: str):
    def open_image():
        from PIL import Image

        with default_storage.open(name, "rb") as fh:
            image = Image.open(fh)
            image.load()
        return image

    return open_image


def _label_shortfall(snapshot: DatasetSnapshot) -> str:
    """Why there is not enough data to train, or '' when there is."""
    minimum = settings.PLATFORM_MIN_PHOTOS_PER_LABEL
    short = [
        f"{label} ({counts['train']} train, {counts['holdout']} holdout)"
        for label, counts in sorted(snapshot.label_counts.items())
        if counts["train"] < minimum or counts["holdout"] < 1
    ]
    if len(snapshot.label_counts) < 2:
        return "A model needs at least two labels."
    if short:
        return f"Not enough approved photos (need {minimum} train and 1 holdout per label): " + ", ".join(short)
    return ""


_last_saved: dict[int, float] = {}


def _save_progress(run: TrainingRun, *, stage: str, progress: float, force: bool = False) -> None:
    """Record stage, progress and a heartbeat; throttled so progress costs no time."""
    run.stage = stage
    run.progress = round(progress, 4)
    now = time.monotonic()
    if not force and now - _last_saved.get(run.pk, 0.0) < _HEARTBEAT_EVERY_S:
        return
    _last_saved[run.pk] = now
    run.heartbeat_at = timezone.now()
    TrainingRun.objects.filter(pk=run.pk).update(
        stage=run.stage,
        progress=run.progress,
        heartbeat_at=run.heartbeat_at,
        snapshot=run.snapshot,
        decision=run.decision,
        config=run.config,
    )


def _finish(run: TrainingRun, *, status: str, message: str) -> TrainingRun:
    run.status = status
    run.message = message
    run.finished_at = timezone.now()
    run.heartbeat_at = run.finished_at
    if status == TrainingRun.Status.SUCCEEDED:
        run.stage, run.progress = "done", 1.0
    run.save()
    _last_saved.pop(run.pk, None)
    return run
