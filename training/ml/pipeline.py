"""Linear-probe pipeline: frozen features -> linear head -> holdout metrics -> ONNX -> verified file.

Importing this module does not import torch (``split_for`` and ``Sample`` are used by the
web process); the heavy modules are imported when the pipeline runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import string
import time
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from training.ml.config import DEFAULT_TOLERANCE, BackboneConfig, LinearProbeConfig, ParityTolerance, Preprocessing
from training.ml.errors import ImageDecodeError, PipelineError
from training.ml.metrics import ClassificationMetrics, classification_metrics

SPLITS = ("train", "holdout")
STAGES = ("features", "train", "evaluate", "export", "verify")
_HEX = frozenset(string.hexdigits)


@dataclass(frozen=True)
class Sample:
    """One labelled photo, opened lazily."""

    key: str  # stable id (photo id); also the feature-cache key
    label: int  # index into labels
    split: str  # "train" or "holdout"
    open_image: Callable[[], Image.Image]  # loads the image (from Django storage on the server)
    # Near-duplicate group (its root's hash): cross-validation keeps a group within one fold.
    group: str | None = None


def split_for(sha256_hex: str, *, holdout_percent: int = 20) -> str:
    """Return "train" or "holdout" for a photo from its content hash: deterministic and stable.

    bucket = int(first 16 hex digits) % 100; holdout when bucket < holdout_percent. A photo's
    split never depends on the other photos, so adding photos never moves old ones between
    splits, and raising the percentage only moves photos from train into holdout.
    """
    digest = sha256_hex.strip().lower()
    if len(digest) < 16 or not set(digest) <= _HEX:
        raise ValueError(f"expected a hex content hash (>= 16 hex digits), got {sha256_hex!r}")
    if not 0 <= holdout_percent <= 100:
        raise ValueError(f"holdout_percent must be in [0, 100], got {holdout_percent!r}")
    return "holdout" if int(digest[:16], 16) % 100 < holdout_percent else "train"


@dataclass
class PipelineResult:
    """Everything a training run records; ``to_dict()`` is JSON-ready (the torch model is not in it)."""

    labels: tuple[str, ...]
    preprocessing: Preprocessing
    metrics: ClassificationMetrics  # the torch model on the holdout split
    onnx_metrics: ClassificationMetrics  # the exported file on the holdout images, as an app runs it
    verification: dict  # parity of the exported file vs the torch model (ParityReport.to_dict())
    history: list[dict]
    best_epoch: int
    train_accuracy: float
    artifact_path: Path
    artifact_sha256: str
    artifact_size: int
    train_count: int
    holdout_count: int
    seconds: dict[str, float]  # per stage, plus "total"
    config: dict  # configs, seeds, weights fingerprint, library versions
    model: Any = field(default=None, repr=False, compare=False)  # assembled torch model (ProbabilityClassifier)
    # Strategy decision record (StrategyDecision.to_record()); set by transfer_pipeline.
    decision: dict | None = None
    # The measured selection (selection.SelectionOutcome) when one ran; not part of to_dict().
    selection: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        """JSON-ready summary of the run."""
        return {
            "labels": list(self.labels),
            "preprocessing": self.preprocessing.to_manifest(),
            "metrics": self.metrics.to_dict(),
            "onnx_metrics": self.onnx_metrics.to_dict(),
            "verification": self.verification,
            "history": self.history,
            "best_epoch": self.best_epoch,
            "train_accuracy": self.train_accuracy,
            "artifact": {"path": str(self.artifact_path), "sha256": self.artifact_sha256, "size": self.artifact_size},
            "train_count": self.train_count,
            "holdout_count": self.holdout_count,
            "seconds": self.seconds,
            "config": self.config,
            "decision": self.decision,
        }


def features_namespace(*, backbone: BackboneConfig, preprocessing: Preprocessing, fingerprint: str) -> str:
    """Cache namespace for features: changes whenever weights or preprocessing change."""
    identity = {
        "weights": fingerprint,
        "width_mult": backbone.width_mult,
        "preprocessing": preprocessing.to_manifest(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def linear_probe_pipeline(
    *,
    samples: Sequence[Sample],
    labels: Sequence[str],
    backbone: BackboneConfig,
    preprocessing: Preprocessing,
    probe: LinearProbeConfig,
    out_dir: Path,
    progress: Callable[[str, float], None] | None = None,
    num_threads: int | None = None,
    batch_size: int = 32,
    tolerance: ParityTolerance = DEFAULT_TOLERANCE,
    feature_cache: MutableMapping[str, Any] | None = None,
    artifact_name: str = "model.onnx",
    export_cache: MutableMapping[str, bytes] | None = None,
) -> PipelineResult:
    """Train a linear head on frozen features, evaluate, export ONNX to ``out_dir`` and verify it.

    Verification loads the written file with onnxruntime and runs the holdout photos
    through it from the images (``image_to_array``), as an app would; it raises
    ``VerificationError`` (and deletes the file) if the file does not load or disagrees
    with the torch model beyond ``tolerance``. ``progress(stage, fraction)`` reports stages in ``STAGES``.
    ``feature_cache`` (any mapping, e.g. backed by files) keeps per-photo features between
    runs, so only new photos pay for a forward pass. ``export_cache`` (bytes by key) keeps
    an exported file per frozen backbone and class count: later nights swap in the new
    head instead of tracing the network again. ``num_threads`` None keeps the caller's
    torch thread count (capped at the available cores).
    """
    import numpy as np
    import torch

    from training.ml.backbone import backbone_load, weights_fingerprint
    from training.ml.export import INPUT_NAME, OUTPUT_NAME, classifier_assemble
    from training.ml.features import features_extract
    from training.ml.linear import linear_probe_train
    from training.ml.runtime import torch_threads

    started = time.perf_counter()
    labels = tuple(labels)
    _samples_validate(samples, labels)
    train = [s for s in samples if s.split == "train"]
    holdout = [s for s in samples if s.split == "holdout"]
    seconds: dict[str, float] = {}
    report = progress or (lambda stage, fraction: None)

    with torch_threads(num_threads) as threads:
        # -- features --------------------------------------------------------------
        t0 = time.perf_counter()
        report("features", 0.0)
        net = backbone_load(config=backbone)
        fingerprint = weights_fingerprint(config=backbone)
        namespace = features_namespace(backbone=backbone, preprocessing=preprocessing, fingerprint=fingerprint)
        ordered = train + holdout
        features, computed = _features_cached(
            samples=ordered,
            cache=feature_cache,
            namespace=namespace,
            extract=lambda todo, on_batch: features_extract(
                backbone=net,
                images=[s.open_image for s in todo],
                preprocessing=preprocessing,
                batch_size=batch_size,
                progress=on_batch,
            ),
            progress=lambda fraction: report("features", fraction),
        )
        train_x, holdout_x = features[: len(train)], features[len(train) :]
        train_y = torch.tensor([s.label for s in train], dtype=torch.int64)
        holdout_y = [s.label for s in holdout]
        seconds["features"] = time.perf_counter() - t0

        # -- train -----------------------------------------------------------------
        t0 = time.perf_counter()
        report("train", 0.0)
        fitted = linear_probe_train(
            features=train_x,
            targets=train_y,
            num_classes=len(labels),
            config=probe,
            progress=lambda epoch, epochs: report("train", epoch / epochs),
        )
        seconds["train"] = time.perf_counter() - t0

        # -- evaluate --------------------------------------------------------------
        t0 = time.perf_counter()
        report("evaluate", 0.0)
        with torch.no_grad():
            train_accuracy = float((fitted.head(train_x).argmax(dim=1) == train_y).float().mean())
            # head(features) is exactly what the assembled model computes (softmax aside).
            reference = torch.softmax(fitted.head(holdout_x), dim=1).numpy().astype(np.float32)
        metrics = classification_metrics(
            y_true=holdout_y, y_pred=reference.argmax(axis=1).tolist(), labels=labels, probabilities=reference
        )
        seconds["evaluate"] = time.perf_counter() - t0
        report("evaluate", 1.0)

        # -- export ----------------------------------------------------------------
        t0 = time.perf_counter()
        report("export", 0.0)
        artifact, export_reused = _export_linear_probe(
            net=net, head=fitted.head, path=Path(out_dir) / artifact_name, preprocessing=preprocessing,
            labels=labels, cache=export_cache, key=f"{namespace}:classes{len(labels)}:torch{torch.__version__}",
        )
        seconds["export"] = time.perf_counter() - t0
        report("export", 1.0)

        # -- verify ----------------------------------------------------------------
        t0 = time.perf_counter()
        report("verify", 0.0)
        checked = artifact_verify(
            artifact=Path(artifact), holdout=holdout, reference=reference, y_true=holdout_y,
            preprocessing=preprocessing, tolerance=tolerance, batch_size=batch_size, threads=threads,
            progress=lambda done, total: report("verify", done / max(total, 1)),
        )
        seconds["verify"] = time.perf_counter() - t0

    onnx_metrics, verification = artifact_scores(
        checked=checked, y_true=holdout_y, labels=labels, artifact=Path(artifact)
    )
    sha256, size = verification["artifact_sha256"], verification["artifact_size"]
    seconds["total"] = time.perf_counter() - started
    config = _config_record(
        backbone=backbone,
        fingerprint=fingerprint,
        namespace=namespace,
        preprocessing=preprocessing,
        probe=probe,
        labels=labels,
        threads=threads,
        batch_size=batch_size,
        tolerance=tolerance,
        fitted=fitted,
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        feature_counts={"total": len(ordered), "computed": computed, "cached": len(ordered) - computed},
    )
    config["export"] = {"reused_backbone_export": export_reused}
    return PipelineResult(
        labels=labels,
        preprocessing=preprocessing,
        metrics=metrics,
        onnx_metrics=onnx_metrics,
        verification=verification,
        history=fitted.history,
        best_epoch=fitted.best_epoch,
        train_accuracy=train_accuracy,
        artifact_path=Path(artifact),
        artifact_sha256=sha256,
        artifact_size=size,
        train_count=len(train),
        holdout_count=len(holdout),
        seconds={k: round(v, 3) for k, v in seconds.items()},
        config=config,
        model=classifier_assemble(backbone=net, head=fitted.head),
    )


def _samples_validate(samples: Sequence[Sample], labels: tuple[str, ...]) -> None:
    """Refuse inputs that would train a silently broken model."""
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise PipelineError(f"need at least two distinct labels, got {list(labels)}")
    keys = [s.key for s in samples]
    if len(set(keys)) != len(keys):
        raise PipelineError("sample keys must be unique (they key the feature cache)")
    bad = [s.key for s in samples if s.split not in SPLITS or not 0 <= s.label < len(labels)]
    if bad:
        raise PipelineError(f"{len(bad)} samples have an unknown split or label index, e.g. {bad[:3]}")
    train_counts = [0] * len(labels)
    for s in samples:
        if s.split == "train":
            train_counts[s.label] += 1
    empty = [labels[i] for i, n in enumerate(train_counts) if n == 0]
    if empty:
        raise PipelineError(f"labels without training photos: {empty}")
    if not any(s.split == "holdout" for s in samples):
        raise PipelineError("no holdout photos: the model could not be evaluated or verified")


def artifact_verify(
    *, artifact: Path, holdout, reference, y_true, preprocessing, tolerance, batch_size: int, threads, progress
):
    """Load the written file with onnxruntime and run the holdout photos through it from the images.

    Raises (after deleting the file, so it can never be published) when it does not load or
    disagrees with the torch model's ``reference`` probabilities beyond ``tolerance``.
    """
    from training.ml.inference import onnx_session
    from training.ml.parity import onnx_verify

    try:
        # Bytes, not the path: proves the file alone is enough (no .onnx.data sidecar).
        session = onnx_session(path_or_bytes=artifact.read_bytes(), num_threads=threads)
        return onnx_verify(
            path_or_bytes=session,
            images=[s.open_image for s in holdout],
            reference=reference,
            preprocessing=preprocessing,
            y_true=y_true,
            tolerance=tolerance,
            batch_size=batch_size,
            progress=progress,
        )
    except BaseException as exc:
        artifact.unlink(missing_ok=True)
        if isinstance(exc, ImageDecodeError):
            raise _decode_error_for(exc, holdout) from exc
        raise


def artifact_scores(*, checked, y_true, labels, artifact: Path) -> tuple[ClassificationMetrics, dict]:
    """What the shipped file scored on the holdout as onnxruntime ran it, and its verification record."""
    from training.ml.inference import file_sha256

    metrics = classification_metrics(
        y_true=y_true,
        y_pred=checked.probabilities.argmax(axis=1).tolist(),
        labels=labels,
        probabilities=checked.probabilities,
    )
    verification = {
        **checked.to_dict(),
        "artifact_sha256": file_sha256(artifact),
        "artifact_size": artifact.stat().st_size,
        "runtime": "onnxruntime CPUExecutionProvider",
        "inputs": "holdout photos via image_to_array",
    }
    return metrics, verification


def _export_linear_probe(*, net, head, path: Path, preprocessing, labels, cache, key: str) -> tuple[Path, bool]:
    """Export backbone + head; with a cached export of the same backbone, only the head changes.

    Returns the file and whether a cached export was reused. A template that does not fit
    (another head shape, a foreign file) falls back to a full export, which refreshes it.
    """
    from training.ml.export import classifier_assemble, onnx_export, onnx_export_with_head

    template = cache.get(key) if cache is not None else None
    if template is not None:
        try:
            path = onnx_export_with_head(template=template, head=head, path=path, preprocessing=preprocessing,
                                         labels=labels)
            return path, True
        except Exception:  # noqa: BLE001 - a template that does not fit is a cache miss
            pass
    path = onnx_export(model=classifier_assemble(backbone=net, head=head), path=path, preprocessing=preprocessing,
                       labels=labels)
    if cache is not None:
        cache[key] = path.read_bytes()
    return path, False


def _decode_error_for(exc: ImageDecodeError, samples: Sequence[Sample]) -> ImageDecodeError:
    """Name the photo (its key), not a position the caller never saw."""
    key = samples[exc.index].key if 0 <= exc.index < len(samples) else "?"
    return ImageDecodeError(f"photo {key}: {exc}", index=exc.index)


def _features_cached(
    *,
    samples: Sequence[Sample],
    cache: MutableMapping[str, Any] | None,
    namespace: str,
    extract: Callable[[Sequence[Sample], Callable[[int, int], None]], Any],
    progress: Callable[[float], None],
):
    """Features for ``samples`` in order and how many were computed (not found in ``cache``)."""
    import torch

    cached: dict[int, Any] = {}
    if cache is not None:
        for i, s in enumerate(samples):
            hit = cache.get(f"{namespace}:{s.key}")
            if hit is not None:
                cached[i] = torch.as_tensor(hit, dtype=torch.float32).reshape(-1)
    todo_index = [i for i in range(len(samples)) if i not in cached]
    todo = [samples[i] for i in todo_index]
    total = max(len(samples), 1)

    def on_batch(done: int, _total: int) -> None:
        progress((len(cached) + done) / total)

    try:
        fresh = extract(todo, on_batch) if todo else None
    except ImageDecodeError as exc:
        raise _decode_error_for(exc, todo) from exc
    rows: list[Any] = [None] * len(samples)
    for i, row in cached.items():
        rows[i] = row
    for j, i in enumerate(todo_index):
        rows[i] = fresh[j]
        if cache is not None:
            cache[f"{namespace}:{samples[i].key}"] = fresh[j].clone()
    progress(1.0)
    return torch.stack(rows), len(todo)


def _config_record(
    *,
    backbone: BackboneConfig,
    fingerprint: str,
    namespace: str,
    preprocessing: Preprocessing,
    probe: LinearProbeConfig,
    labels: tuple[str, ...],
    threads: int,
    batch_size: int,
    tolerance: ParityTolerance,
    fitted: Any,
    input_name: str,
    output_name: str,
    feature_counts: dict,
) -> dict:
    """Configs, seeds and versions of a run: enough to reproduce it."""
    return {
        "strategy": "linear_probe",
        "labels": list(labels),
        "backbone": {**dataclasses.asdict(backbone), "weights_sha256_or_name": fingerprint},
        "features_namespace": namespace,
        "preprocessing": preprocessing.to_manifest(),
        "probe": dataclasses.asdict(probe),
        "probe_outcome": {
            "best_epoch": fitted.best_epoch,
            "validation_count": fitted.validation_count,
            "refit_on_all": fitted.refit,
            "seconds": round(fitted.seconds, 3),
        },
        "seeds": {"probe": probe.seed, "export_example_input": 0},
        "tolerance": dataclasses.asdict(tolerance),
        "torch_threads": threads,
        "batch_size": batch_size,
        "features": feature_counts,
        "onnx": {"input": input_name, "output": output_name, "batch": "dynamic"},
        "versions": _versions(),
    }


def _versions() -> dict:
    """Library versions that decide what a run produces."""
    import numpy
    import onnx
    import onnxruntime
    import PIL
    import torch
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
