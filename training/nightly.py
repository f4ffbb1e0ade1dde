"""The nightly job's glue: claim, snapshot, train, gate, compress, publish, in that order.

torch is imported lazily (inside `_pipeline_run`) so the web process, which imports this
module through the admin and the API, never loads it.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import tempfile
import uuid
from pathlib import Path

from django.conf import settings

from challenges.models import Project
from challenges.selectors import project_today
from submissions.models import Photo
from training.gating import GATE_REFUSED, training_run_gate
from training.models import DatasetSnapshot, ModelVersion, TrainingPolicy, TrainingRun
from training.publishing import json_ready, model_version_publish
from training.runs import (
    ProgressCallback,
    RunCancelled,
    training_run_cancel_check,
    training_run_claim,
    training_run_finish,
    training_run_progress_save,
)
from training.scoring import photo_opener
from training.snapshots import dataset_snapshot_create, dataset_snapshot_entries, dataset_split_keys

logger = logging.getLogger(__name__)

# The pipeline's stages within the run's 2-95%, and compression's within 95-99% (building
# takes most of its time): (start, width) as fractions of the span.
_STAGES = {
    "decide": (0.0, 0.15), "features": (0.15, 0.45), "train": (0.6, 0.1), "evaluate": (0.7, 0.05),
    "export": (0.75, 0.15), "verify": (0.9, 0.1),
}
_COMPRESSION_STAGES = {"compress": (0.0, 0.75), "measure": (0.75, 0.25)}


def training_run_execute(
    *,
    project: Project,
    trigger: str = TrainingRun.Trigger.NIGHTLY,
    night: dt.date | None = None,
    requested_by=None,
    on_progress: ProgressCallback | None = None,
) -> TrainingRun:
    """Run the whole job for one project (the nightly task and `train_now` both call this).

    Ends as succeeded (published), skipped (not enough data), refused (the gate kept the
    current release), unpublished (no compressed file, not even fp32, passed the checks),
    cancelled (an admin asked) or failed; only "succeeded" publishes.
    """
    night = night or project_today(project=project)
    run = training_run_claim(project=project, night=night, trigger=trigger, requested_by=requested_by)
    try:
        snapshot = dataset_snapshot_create(project=project)
        run.snapshot = snapshot
        training_run_progress_save(run, stage="snapshot", progress=0.02, force=True)
        shortfall = _label_shortfall(snapshot)
        if shortfall:
            return training_run_finish(run, status=TrainingRun.Status.SKIPPED, message=shortfall)
        unchanged = release_of_snapshot(project=project, snapshot=snapshot)
        if unchanged is not None and trigger == TrainingRun.Trigger.NIGHTLY:
            # Every installed app would download the same model again for nothing. A manual
            # run (train_now, e.g. after changing the strategy override) still trains.
            return training_run_finish(
                run, status=TrainingRun.Status.SKIPPED,
                message=f"No change in the approved photos since version {unchanged.version}.",
            )
        training_run_cancel_check(run)
        # Everything the pipeline writes lives in this folder and goes with it, whatever happens.
        with tempfile.TemporaryDirectory(prefix="training-run-") as tmp:
            result, samples = _pipeline_run(run=run, snapshot=snapshot, out_dir=Path(tmp), on_progress=on_progress)
            run.metrics = {
                **result.metrics.to_dict(),
                "exported_file": result.onnx_metrics.to_dict(),
                "seconds": result.seconds,
            }
            run.config = {**run.config, "pipeline": result.config}
            run.history = result.history
            training_run_cancel_check(run)
            training_run_progress_save(run, stage="gate", progress=0.95, force=True)
            if on_progress is not None:
                on_progress(run)
            run.gate = training_run_gate(
                project=project, snapshot=snapshot, candidate=result.onnx_metrics.to_dict(),
                predicted=_holdout_answers(samples=samples, metrics=result.onnx_metrics),
            )
            if run.gate["outcome"] == GATE_REFUSED:
                # Compression takes minutes: a refused model is not worth them.
                return training_run_finish(run, status=TrainingRun.Status.REFUSED, message=run.gate["reason"])
            training_run_cancel_check(run)
            compression = _compression_run(
                run=run, result=result, samples=samples, out_dir=Path(tmp), on_progress=on_progress
            )
            run.model_card = json_ready(compression.card)
            if not compression.published:
                return training_run_finish(
                    run, status=TrainingRun.Status.UNPUBLISHED, message=_unpublished_reason(compression.card)
                )
            training_run_cancel_check(run)
            training_run_progress_save(run, stage="publish", progress=0.99, force=True)
            version = model_version_publish(run=run, snapshot=snapshot, result=result, compression=compression)
        return training_run_finish(run, status=TrainingRun.Status.SUCCEEDED, message=f"Published version {version.version}.")
    except RunCancelled as exc:
        logger.info("training run %s cancelled", run.pk)
        return training_run_finish(run, status=TrainingRun.Status.CANCELLED, message=str(exc))
    except Exception as exc:
        logger.exception("training run %s failed", run.pk)
        training_run_finish(run, status=TrainingRun.Status.FAILED, message=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if on_progress is not None:
            on_progress(run)


def _holdout_answers(*, samples: list, metrics) -> dict[str, str]:
    """The exported file's answer (label name) per holdout photo, keyed by sha256 (the sample key)."""
    holdout = [s.key for s in samples if s.split == "holdout"]
    if len(holdout) != len(metrics.predictions):
        raise ValueError(f"{len(metrics.predictions)} holdout answers for {len(holdout)} holdout photos")
    return {key: metrics.labels[index] for key, index in zip(holdout, metrics.predictions)}


def release_of_snapshot(*, project: Project, snapshot: DatasetSnapshot) -> ModelVersion | None:
    """The newest published version, if it was trained on exactly this snapshot."""
    latest = ModelVersion.objects.filter(project=project).order_by("-version").first()
    # An imported version was not trained on its snapshot (only scored on it): train anyway.
    trained = latest is not None and latest.source == ModelVersion.Source.TRAINED
    return latest if trained and latest.snapshot_id == snapshot.pk else None


def compression_config_for(project: Project):
    """The CompressionConfig of a project: site settings, narrowed by its TrainingPolicy."""
    from training.ml.config import CompressionConfig

    variants = tuple(settings.PLATFORM_COMPRESSION_VARIANTS)
    points = float(settings.PLATFORM_MAX_ACCURACY_LOSS_POINTS)
    coreml, offer_unexecuted = (), False
    policy = TrainingPolicy.objects.filter(project=project).first()
    if policy is not None:
        coreml, offer_unexecuted = tuple(policy.coreml_variants or ()), bool(policy.coreml_offer)
        if policy.compression_variants:
            variants = tuple(policy.compression_variants)
        if policy.max_accuracy_loss_points is not None:
            points = float(policy.max_accuracy_loss_points)
    return CompressionConfig(
        variants=variants,
        formats=tuple(settings.PLATFORM_COMPRESSION_FORMATS),
        max_accuracy_loss=points / 100.0,
        prune_macs_ratio=float(settings.PLATFORM_PRUNE_MACS_RATIO),
        distill_min_train_photos=int(settings.PLATFORM_DISTILL_MIN_TRAIN_PHOTOS),
        latency_threads=int(settings.PLATFORM_LATENCY_THREADS),
        coreml_variants=coreml,
        offer_unexecuted=offer_unexecuted,
    )


def _compression_run(*, run: TrainingRun, result, samples: list, out_dir: Path, on_progress):
    """Build, measure and judge the compressed variants of the trained model (run progress 95-99%)."""
    # Looked up at call time: tests replace training.ml.compress.compression_pipeline.
    from training.ml import compress

    config = compression_config_for(run.project)
    run.config = {**run.config, "compression": json_ready(dataclasses.asdict(config))}
    training_run_progress_save(run, stage="compress", progress=0.95, force=True)

    def progress(stage: str, fraction: float) -> None:
        start, width = _COMPRESSION_STAGES.get(stage, (0.0, 0.0))
        training_run_progress_save(run, stage=stage, progress=0.95 + 0.04 * (start + width * max(0.0, min(1.0, fraction))))
        training_run_cancel_check(run)
        if on_progress is not None:
            on_progress(run)

    return compress.compression_pipeline(
        model=result.model,
        float_onnx=result.artifact_path,
        labels=list(result.labels),
        preprocessing=result.preprocessing,
        train=[s for s in samples if s.split == "train"],
        holdout=[s for s in samples if s.split == "holdout"],
        out_dir=out_dir,
        config=config,
        progress=progress,
        num_threads=_torch_threads(),
    )


def _unpublished_reason(card: dict) -> str:
    """Why nothing was offered: the fp32 rows' reasons (the float model's own files), else every row's."""
    rows = card.get("variants") or []
    named = [r for r in rows if r.get("variant") == "fp32"] or rows
    reasons = "; ".join(
        f"{r.get('variant')}/{r.get('format')} {r.get('status')}: {r.get('reason') or 'no reason given'}" for r in named
    )
    return "No file passed the checks, nothing was published" + (f" ({reasons})." if reasons else ".")


def _torch_threads() -> int:
    return settings.PLATFORM_TORCH_THREADS or os.cpu_count() or 1


def _pipeline_run(*, run: TrainingRun, snapshot: DatasetSnapshot, out_dir: Path, on_progress):
    """Train, evaluate, export and verify the float model; return (result, the Sample list it used)."""
    import torch

    from training.feature_cache import StorageExportCache, StorageFeatureCache
    from training.ml.config import BackboneConfig, LinearProbeConfig, Preprocessing
    from training.ml.pipeline import Sample
    from training.ml.strategies import SelectionConfig, StrategyThresholds
    from training.ml.transfer import transfer_pipeline

    threads = _torch_threads()
    torch.set_num_threads(threads)
    labels = sorted(snapshot.label_counts)
    index = {name: i for i, name in enumerate(labels)}
    entries = dataset_snapshot_entries(snapshot)
    photos = Photo.objects.in_bulk([entry["photo"] for entry in entries], field_name="public_id")
    # Near-duplicate groups (the hash their split comes from): cross-validation keeps each in one fold.
    group_of = dataset_split_keys(list(photos.values()))
    samples = [
        Sample(
            # The content hash keys the feature cache: the same pixels never pay twice.
            key=entry["sha256"],
            label=index[entry["label"]],
            split=entry["split"],
            open_image=photo_opener(photos[uuid.UUID(entry["photo"])].image.name),
            group=group_of[photos[uuid.UUID(entry["photo"])].pk],
        )
        for entry in entries
    ]
    backbone = BackboneConfig(weights_path=settings.PLATFORM_WEIGHTS_PATH)
    preprocessing = Preprocessing()
    probe = LinearProbeConfig()
    override = _strategy_override(project=run.project)
    # What the run knows before the pipeline decides; the size x similarity decision
    # (inputs, measured similarity, thresholds, choice, reason) is merged in afterwards.
    context = {
        "override_note": override["note"],
        "label_counts": snapshot.label_counts,
        "balance": snapshot.balance,
        "identical_photos_merged": len(snapshot.manifest["photos"]) - len(entries),
    }
    run.decision = {"strategy": override["strategy"] or "deciding", "override": override["strategy"], **context}
    run.config = {
        "backbone": {"weights_path": backbone.weights_path, "width_mult": backbone.width_mult},
        "preprocessing": preprocessing.to_manifest(),
        "probe": dataclasses.asdict(probe),
        "torch_threads": threads,
        "snapshot": snapshot.manifest_sha256,
    }
    training_run_progress_save(run, stage="decide", progress=0.02, force=True)

    def progress(stage: str, fraction: float) -> None:
        # The pipeline's stages take the run from 2% to 95%; gate and publishing do the rest.
        training_run_progress_save(run, stage=stage, progress=0.02 + 0.93 * _stage_offset(stage, fraction))
        training_run_cancel_check(run)
        if on_progress is not None:
            on_progress(run)

    result = transfer_pipeline(
        samples=samples,
        labels=labels,
        backbone=backbone,
        preprocessing=preprocessing,
        strategy=override["strategy"],
        thresholds=StrategyThresholds(
            large_per_label=settings.PLATFORM_STRATEGY_LARGE_PER_LABEL,
            similarity_min_score=settings.PLATFORM_STRATEGY_SIMILARITY_MIN_SCORE,
        ),
        probe=probe,
        out_dir=out_dir,
        progress=progress,
        feature_cache=StorageFeatureCache(),
        export_cache=StorageExportCache(),
        selection=SelectionConfig(
            folds=settings.PLATFORM_STRATEGY_CV_FOLDS,
            fine_tune_min_per_label=settings.PLATFORM_STRATEGY_FINE_TUNE_MIN_PER_LABEL,
            fine_tune_cache_mb=settings.PLATFORM_STRATEGY_FINE_TUNE_CACHE_MB,
            budget_minutes=settings.PLATFORM_TRAINING_BUDGET_MINUTES,
        ),
    )
    run.decision = {**(result.decision or {}), "strategy": (result.decision or {}).get("choice"), **context}
    run.config = {**run.config, **{k: v for k, v in result.config.items() if k not in run.config}}
    # The same samples (and their openers) feed the compression stage: calibration and holdout.
    return result, samples


def _strategy_override(*, project: Project) -> dict:
    """The admin's strategy override for the project: {"strategy": name or None, "note": text}."""
    policy = TrainingPolicy.objects.filter(project=project).first()
    if policy is None or not policy.strategy_override:
        return {"strategy": None, "note": ""}
    return {"strategy": policy.strategy_override, "note": policy.note}


def _stage_offset(stage: str, fraction: float) -> float:
    start, width = _STAGES.get(stage, (0.0, 0.0))
    return start + width * max(0.0, min(1.0, fraction))


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
