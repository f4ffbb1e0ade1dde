"""Fast fixtures for the training job: photo rows, a tiny real ONNX release, stand-in pipelines.

The stand-ins replace only ``training.ml.transfer.transfer_pipeline`` and
``training.ml.compress.compression_pipeline`` (the torch parts); everything Django does
around them (snapshot, decision, progress, cancellation, gate against a real ONNX file run
by onnxruntime, the card, publishing every offered file) runs for real, in well under a second.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from submissions.models import Photo, photo_upload_to
from tests.conftest import jpeg_bytes
from training.ml.config import Preprocessing
from training.ml.testing import tiny_onnx_classifier
from training.models import ModelArtifact, ModelVersion, TrainingRun

# A tiny input size: the release is scored at 8x8 pixels.
PREPROCESSING = Preprocessing(input_size=8, resize=8)
RED, BLUE, GREEN = (220, 20, 20), (20, 20, 220), (20, 220, 20)
COLORS = {"ants": RED, "bees": BLUE, "wasps": GREEN}
_counter = itertools.count()


def make_photo(*, project, label: str, color=None, status=Photo.Status.APPROVED, sha256: str | None = None,
               **fields) -> Photo:
    """An approved photo row with a stored 16x12 JPEG (as the upload pipeline leaves it)."""
    data = jpeg_bytes(size=(16, 12), color=color or COLORS[label], comment=str(next(_counter)).encode())
    digest = hashlib.sha256(data).hexdigest()
    photo = Photo(
        project=project, label=project.labels.get(name=label), status=status, width=16, height=12,
        source_format="jpeg", upload_sha256=digest, sha256=sha256 or digest, phash="0" * 16, **fields,
    )
    photo.image.name = default_storage.save(photo_upload_to(photo, ""), ContentFile(data))
    photo.save()
    return photo


def colour_classifier(labels: list[str], *, metadata: bool | dict = True) -> bytes:
    """A real ONNX file: mean colour -> label (red ants, blue bees, green wasps), as the job publishes.

    GlobalAveragePool -> Flatten -> Gemm -> Softmax at 8x8 (training/ml/testing.py). Its metadata
    is the preprocessing, as the pipeline writes it; ``metadata`` as a dict replaces it, False
    leaves it out (a smaller file: the fake compression's "int8" file).
    """
    rows = {"ants": [4.0, -2.0, -2.0], "bees": [-2.0, -2.0, 4.0], "wasps": [-2.0, 4.0, -2.0]}
    props = metadata if isinstance(metadata, dict) else {"preprocessing": PREPROCESSING.to_manifest()}
    return tiny_onnx_classifier(num_classes=len(labels), input_size=PREPROCESSING.input_size,
                                weights=[rows[label] for label in labels], name="colours",
                                metadata=props if metadata else None)


def release(project, *, labels: list[str], number: int = 1) -> ModelVersion:
    """A published version whose ONNX file is the colour classifier (registry rows as the job writes them)."""
    from training.snapshots import dataset_snapshot_create

    payload = colour_classifier(labels)
    run = TrainingRun.objects.create(
        project=project, night=dt.date(2026, 11, number), trigger="manual", status="succeeded"
    )
    version = ModelVersion.objects.create(
        project=project, version=number, run=run, snapshot=dataset_snapshot_create(project=project),
        labels=labels, preprocessing=PREPROCESSING.to_manifest(), metrics={},
    )
    name = default_storage.save(f"models/{project.slug}/v{number}/model.onnx", ContentFile(payload))
    ModelArtifact.objects.create(
        version=version, format="onnx", precision="fp32", file=name, size=len(payload),
        sha256=hashlib.sha256(payload).hexdigest(), verification={},
    )
    return version


@pytest.fixture
def small_splits(settings):
    """Half the photos in holdout and one training photo per label are enough to train."""
    settings.PLATFORM_HOLDOUT_PERCENT = 50
    settings.PLATFORM_MIN_PHOTOS_PER_LABEL = 1


def photos_in_both_splits(project, *, label: str, each: int = 2) -> None:
    """Add photos of `label` until both splits hold `each` of them (splits follow content hashes)."""
    from django.conf import settings

    from training.ml.pipeline import split_for

    counts = {"train": 0, "holdout": 0}
    while min(counts.values()) < each:
        photo = make_photo(project=project, label=label)
        counts[split_for(photo.sha256, holdout_percent=settings.PLATFORM_HOLDOUT_PERCENT)] += 1


@pytest.fixture
def colour_photos(project, small_splits):
    """Red ants and blue bees, at least two of each in train and in holdout."""
    photos_in_both_splits(project, label="ants")
    photos_in_both_splits(project, label="bees")
    return project


#: What the fake compression builds by default: (variant, format, precision) in build order.
FAKE_BUILDS = (
    ("fp32", "onnx", "fp32"), ("fp32", "pte", "fp32"), ("int8", "onnx", "int8"), ("int8", "pte", "int8"),
    ("pruned", "onnx", "fp32"),
)


@pytest.fixture
def fake_compression(monkeypatch):
    """Replace the compression stage with hand-written card rows over real small files.

    ``fake.accuracy[(variant, format)]`` sets a file's holdout accuracy (default: the float
    model's, 1.0, except "pruned" which loses 5 points and is rejected by the default 1-point
    policy); ``fake.failed[(variant, format)] = reason`` marks a file as failed to build.
    The card and the offered list come from the real ``card_build`` / ``card_offered``.

    Files: the fp32 ONNX row is the float model's own verified export (a copy of
    ``float_onnx``); the int8 ONNX row is a real, smaller ONNX file. The ``.pte`` files are a
    few placeholder bytes: acceptable only because registry, publishing and download tests
    store, hash and serve them but never load them with ExecuTorch.
    """
    from training.ml import compress
    from training.ml.card import card_build, card_offered, fidelity_summary

    fake = SimpleNamespace(calls=[], configs=[], accuracy={("pruned", "onnx"): 0.95}, failed={}, out_dirs=[])

    def compression_pipeline(*, model, float_onnx, labels, preprocessing, train, holdout, out_dir, config,
                             progress=None, num_threads=None):
        fake.calls.append({"labels": list(labels), "train": list(train), "holdout": list(holdout),
                           "float_onnx": Path(float_onnx), "num_threads": num_threads, "model": model})
        fake.configs.append(config)
        fake.out_dirs.append(Path(out_dir))
        for stage in compress.COMPRESSION_STAGES:
            if progress is not None:
                progress(stage, 0.0)
                progress(stage, 1.0)
        float_size = Path(float_onnx).stat().st_size
        rows, paths = [], {}
        for variant, fmt, precision in FAKE_BUILDS:
            if variant not in config.variants or fmt not in config.formats:
                continue
            path = Path(out_dir) / f"{variant}.{fmt}"
            if fmt == "onnx" and variant == "fp32":
                shutil.copyfile(float_onnx, path)
            elif fmt == "onnx":
                path.write_bytes(colour_classifier(list(labels), metadata=False))
            else:
                path.write_bytes(f"placeholder {variant} pte, never loaded".encode() * (4 if variant == "fp32" else 1))
            payload = path.read_bytes()
            paths[(variant, fmt)] = path
            row = {
                "variant": variant, "format": fmt, "precision": precision, "status": "measured",
                "file": path.name, "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest(),
                "accuracy": fake.accuracy.get((variant, fmt), 1.0), "top1_agreement": 1.0,
                "max_prob_diff": 0.001, "mean_prob_diff": 0.0001, "latency_ms": 2.0 if precision == "int8" else 3.0,
                "fidelity": fidelity_summary(holdout_n=len(holdout), holdout_disagree=0, views_n=400, views_disagree=0),
                "log_loss": 0.1, "log_loss_increase": 0.0,
                "load_ms": 1.0, "peak_memory_mb": 40.0, "threads": config.latency_threads,
                "size_ratio": round(len(payload) / float_size, 4), "latency_ratio": 0.5,
                "preprocessing": preprocessing.to_manifest(), "details": {"fake": True},
            }
            if (variant, fmt) in fake.failed:
                row = {**row, "status": "failed", "reason": fake.failed[(variant, fmt)], "accuracy": None}
            rows.append(row)
        card = card_build(
            labels=labels, holdout_count=len(holdout),
            float_model={"accuracy": 1.0, "latency_ms": 6.0, "size": float_size, "threads": config.latency_threads},
            rows=rows, max_accuracy_loss=config.max_accuracy_loss, min_agreement=config.min_agreement,
            seconds={"total": 0.0}, config=dataclasses.asdict(config),
        )
        artifacts = [
            compress.ShippedArtifact(
                variant=row["variant"], format=row["format"], precision=row["precision"],
                path=paths[(row["variant"], row["format"])], sha256=row["sha256"], size=row["size"],
                preprocessing=row["preprocessing"], recommended=row["recommended"], measurements=row,
            )
            for row in card_offered(card)
        ]
        return compress.CompressionResult(card=card, artifacts=artifacts, seconds={"total": 0.0})

    monkeypatch.setattr(compress, "compression_pipeline", compression_pipeline)
    return fake


@pytest.fixture
def fake_pipeline(monkeypatch, tmp_path, fake_compression):
    """Replace the torch pipeline; ``fake.predict(sample) -> label index`` sets the candidate's quality.

    It reports every stage through ``progress`` (so cancellation and progress run for real),
    writes its file into ``out_dir`` (so temp-file removal can be checked) and returns a
    result the rest of the job uses as it would a real one.
    """
    from training.ml import transfer
    from training.ml.metrics import classification_metrics
    from training.ml.strategies import strategy_choose

    fake = SimpleNamespace(predict=lambda sample: sample.label, calls=[], out_dirs=[])

    def transfer_pipeline(*, samples, labels, out_dir, progress, strategy=None, feature_cache=None, **kwargs):
        fake.calls.append(
            {"samples": list(samples), "labels": list(labels), "feature_cache": feature_cache, "strategy": strategy,
             "selection": kwargs.get("selection")}
        )
        fake.out_dirs.append(Path(out_dir))
        artifact = Path(out_dir) / "model.onnx"
        artifact.write_bytes(colour_classifier(list(labels)))
        for stage in transfer.TRANSFER_STAGES:
            progress(stage, 0.0)
            progress(stage, 1.0)
        holdout = [s for s in samples if s.split == "holdout"]
        metrics = classification_metrics(
            y_true=[s.label for s in holdout], y_pred=[fake.predict(s) for s in holdout], labels=labels
        )
        payload = artifact.read_bytes()
        counts = {label: sum(1 for s in samples if s.split == "train" and s.label == i) for i, label in enumerate(labels)}
        similarity = {"score": 0.3, "top_accuracy": 0.9, "lower_accuracy": 0.7}
        decision = strategy_choose(
            label_counts=counts, similarity=similarity, override=strategy, thresholds=kwargs["thresholds"]
        )
        return SimpleNamespace(
            decision=decision.to_record(),
            labels=tuple(labels), preprocessing=PREPROCESSING, metrics=metrics, onnx_metrics=metrics,
            verification={"top1_agreement": 1.0}, history=[{"epoch": 1, "train_loss": 0.7, "val_loss": None,
                                                            "val_accuracy": None}],
            artifact_path=artifact, artifact_sha256=hashlib.sha256(payload).hexdigest(), artifact_size=len(payload),
            seconds={"total": 0.0}, config={"strategy": "linear_probe", "features": {"total": len(samples)}},
            model=None,  # no torch model: only the (fake) compression stage would use it
        )

    monkeypatch.setattr(transfer, "transfer_pipeline", transfer_pipeline)
    return fake
