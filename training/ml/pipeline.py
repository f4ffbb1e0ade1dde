"""Linear-probe pipeline: frozen features -> linear head -> holdout metrics -> ONNX -> verified file.

Importing this module does not import torch (``split_for`` and ``Sample`` are used by the
web process); the heavy modules are imported when the pipeline runs. The stages it shares
with ``transfer_pipeline`` (clock, inputs, export -> verify, result) live in ``stages.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import string
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from training.ml.config import DEFAULT_TOLERANCE, BackboneConfig, LinearProbeConfig, ParityTolerance, Preprocessing
from training.ml.stages import (
    PipelineResult,
    StageClock,
    config_record,
    export_verify,
    features_cached,
    holdout_metrics,
    result_build,
    samples_split,
)

#: Progress stages of ``linear_probe_pipeline``, in order.
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
    import torch

    from training.ml.export import classifier_assemble
    from training.ml.linear import linear_probe_train
    from training.ml.runtime import torch_threads

    clock = StageClock(progress)
    labels, train, holdout = samples_split(samples, labels)
    holdout_y = [s.label for s in holdout]

    with torch_threads(num_threads) as threads:
        with clock.stage("features", closes=False):
            frozen = _features_stage(
                train=train, holdout=holdout, backbone=backbone, preprocessing=preprocessing, cache=feature_cache,
                batch_size=batch_size, progress=clock.reporter("features"),
            )
        train_y = torch.tensor([s.label for s in train], dtype=torch.int64)

        with clock.stage("train", closes=False):
            fitted = linear_probe_train(
                features=frozen.train_x,
                targets=train_y,
                num_classes=len(labels),
                config=probe,
                progress=lambda epoch, epochs: clock.report("train", epoch / epochs),
            )

        with clock.stage("evaluate"):
            train_accuracy, reference = _head_evaluate(
                head=fitted.head, train_x=frozen.train_x, train_y=train_y, holdout_x=frozen.holdout_x
            )
            metrics = holdout_metrics(reference=reference, y_true=holdout_y, labels=labels)

        artifact, export_record, checked = export_verify(
            clock=clock,
            export=lambda: _export_linear_probe(
                net=frozen.net, head=fitted.head, path=Path(out_dir) / artifact_name, preprocessing=preprocessing,
                labels=labels, cache=export_cache,
                key=f"{frozen.namespace}:classes{len(labels)}:torch{torch.__version__}",
            ),
            holdout=holdout, reference=reference, y_true=holdout_y, preprocessing=preprocessing,
            tolerance=tolerance, batch_size=batch_size, threads=threads,
        )

    total = len(train) + len(holdout)
    config = config_record(
        strategy="linear_probe",
        labels=labels,
        backbone=backbone,
        fingerprint=frozen.fingerprint,
        namespace=frozen.namespace,
        preprocessing=preprocessing,
        probe=dataclasses.asdict(probe),
        probe_outcome={
            "best_epoch": fitted.best_epoch,
            "validation_count": fitted.validation_count,
            "refit_on_all": fitted.refit,
            "seconds": round(fitted.seconds, 3),
        },
        seeds={"probe": probe.seed, "export_example_input": 0},
        tolerance=tolerance,
        threads=threads,
        batch_size=batch_size,
        features={"total": total, "computed": frozen.computed, "cached": total - frozen.computed},
    )
    config["export"] = export_record
    return result_build(
        clock=clock, labels=labels, preprocessing=preprocessing, metrics=metrics, checked=checked,
        y_true=holdout_y, artifact=artifact, outcome=fitted, train_accuracy=train_accuracy,
        train_count=len(train), holdout_count=len(holdout), config=config,
        model=classifier_assemble(backbone=frozen.net, head=fitted.head),
    )


@dataclass(frozen=True)
class _Frozen:
    """The "features" stage's output: the frozen backbone and its features of every photo."""

    net: Any
    fingerprint: str
    namespace: str
    train_x: Any
    holdout_x: Any
    computed: int  # photos that paid a forward pass (the rest came from the cache)


def _features_stage(
    *, train, holdout, backbone: BackboneConfig, preprocessing: Preprocessing, cache, batch_size: int, progress
) -> _Frozen:
    """Load the frozen backbone; features of the train then holdout photos, cached ones reused."""
    from training.ml.backbone import backbone_load, weights_fingerprint
    from training.ml.features import features_extract

    net = backbone_load(config=backbone)
    fingerprint = weights_fingerprint(config=backbone)
    namespace = features_namespace(backbone=backbone, preprocessing=preprocessing, fingerprint=fingerprint)
    features, computed = features_cached(
        samples=[*train, *holdout],
        cache=cache,
        namespace=namespace,
        extract=lambda todo, on_batch: features_extract(
            backbone=net,
            images=[s.open_image for s in todo],
            preprocessing=preprocessing,
            batch_size=batch_size,
            progress=on_batch,
        ),
        progress=progress,
    )
    return _Frozen(net, fingerprint, namespace, features[: len(train)], features[len(train) :], computed)


def _head_evaluate(*, head, train_x, train_y, holdout_x):
    """(train accuracy, holdout probabilities [N, C] float32) of the linear head."""
    import numpy as np
    import torch

    with torch.no_grad():
        train_accuracy = float((head(train_x).argmax(dim=1) == train_y).float().mean())
        # head(features) is exactly what the assembled model computes (softmax aside).
        reference = torch.softmax(head(holdout_x), dim=1).numpy().astype(np.float32)
    return train_accuracy, reference


def _export_linear_probe(*, net, head, path: Path, preprocessing, labels, cache, key: str) -> tuple[Path, dict]:
    """Export backbone + head; with a cached export of the same backbone, only the head changes.

    Returns the file and its export record (whether a cached export was reused). A template
    that does not fit (another head shape, a foreign file) falls back to a full export, which
    refreshes it.
    """
    from training.ml.export import classifier_assemble, onnx_export, onnx_export_with_head

    template = cache.get(key) if cache is not None else None
    if template is not None:
        try:
            path = onnx_export_with_head(template=template, head=head, path=path, preprocessing=preprocessing,
                                         labels=labels)
            return path, {"reused_backbone_export": True}
        except Exception:
            pass
    path = onnx_export(model=classifier_assemble(backbone=net, head=head), path=path, preprocessing=preprocessing,
                       labels=labels)
    if cache is not None:
        cache[key] = path.read_bytes()
    return path, {"reused_backbone_export": False}
