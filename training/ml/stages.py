"""What both training pipelines share: their stages' clock, inputs, export -> verify, and result.

``linear_probe_pipeline`` (``pipeline.py``) and ``transfer_pipeline`` (``transfer.py``) train
differently but end the same way: holdout metrics, ONE exported ONNX file, verified by
onnxruntime on the holdout photos, and a ``PipelineResult`` whose record says how it was made.
That ending lives here once. Importing this module does not import torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import time
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.ml.config import BackboneConfig, ParityTolerance, Preprocessing
from training.ml.errors import ImageDecodeError, PipelineError
from training.ml.inference import INPUT_NAME, OUTPUT_NAME
from training.ml.metrics import ClassificationMetrics, classification_metrics

if TYPE_CHECKING:
    from training.ml.pipeline import Sample

#: The splits a sample may be in.
SPLITS = ("train", "holdout")

Progress = Callable[[str, float], None]


class StageClock:
    """Runs a pipeline's named stages: reports their progress and keeps each one's wall time."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.report: Progress = progress or (lambda stage, fraction: None)
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str, *, opens: bool = True, closes: bool = True) -> Iterator[None]:
        """Time the block as stage ``name``; report 0.0 before it (``opens``) and 1.0 after it (``closes``).

        A stage whose own work already reports its start or end passes False, so every
        pipeline reports exactly the fractions it always did.
        """
        t0 = time.perf_counter()
        if opens:
            self.report(name, 0.0)
        yield
        self.seconds[name] = time.perf_counter() - t0
        if closes:
            self.report(name, 1.0)

    def reporter(self, name: str) -> Callable[[float], None]:
        """``progress(fraction)`` for stage ``name``."""
        return lambda fraction: self.report(name, fraction)

    def counter(self, name: str, *, scale: float = 1.0, offset: float = 0.0) -> Callable[[int, int], None]:
        """``progress(done, total)`` for stage ``name``, mapped onto ``offset + scale * done / total``."""
        return lambda done, total: self.report(name, offset + scale * done / max(total, 1))

    def total(self) -> float:
        """Seconds since the clock started."""
        return time.perf_counter() - self.started

    def rounded(self) -> dict[str, float]:
        """Every stage's seconds and the "total", rounded to milliseconds (the run's record)."""
        self.seconds["total"] = self.total()
        return {name: round(value, 3) for name, value in self.seconds.items()}


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


# -- inputs ------------------------------------------------------------------------------------


def samples_validate(samples: Sequence[Sample], labels: tuple[str, ...]) -> None:
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


def samples_split(
    samples: Sequence[Sample], labels: Sequence[str]
) -> tuple[tuple[str, ...], list[Sample], list[Sample]]:
    """Validated inputs of a run: (labels, train samples, holdout samples), in the caller's order."""
    labels = tuple(labels)
    samples_validate(samples, labels)
    return labels, [s for s in samples if s.split == "train"], [s for s in samples if s.split == "holdout"]


def decode_error_for(exc: ImageDecodeError, samples: Sequence[Sample]) -> ImageDecodeError:
    """Name the photo (its key), not a position the caller never saw."""
    key = samples[exc.index].key if 0 <= exc.index < len(samples) else "?"
    return ImageDecodeError(f"photo {key}: {exc}", index=exc.index)


def features_cached(
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
        raise decode_error_for(exc, todo) from exc
    rows: list[Any] = [None] * len(samples)
    for i, row in cached.items():
        rows[i] = row
    for j, i in enumerate(todo_index):
        rows[i] = fresh[j]
        if cache is not None:
            cache[f"{namespace}:{samples[i].key}"] = fresh[j].clone()
    progress(1.0)
    return torch.stack(rows), len(todo)


# -- evaluate, export, verify ------------------------------------------------------------------


def holdout_metrics(*, reference, y_true: Sequence[int], labels: tuple[str, ...]) -> ClassificationMetrics:
    """The metrics of probabilities ``reference`` [N, C] against the holdout labels ``y_true``."""
    return classification_metrics(
        y_true=y_true, y_pred=reference.argmax(axis=1).tolist(), labels=labels, probabilities=reference
    )


def export_verify(
    *,
    clock: StageClock,
    export: Callable[[], tuple[Path, dict | None]],
    holdout: Sequence[Sample],
    reference,
    y_true: Sequence[int],
    preprocessing: Preprocessing,
    tolerance: ParityTolerance,
    batch_size: int,
    threads: int,
):
    """The "export" and "verify" stages: write ONE ONNX file, then check it as an app would run it.

    ``export()`` writes the file and returns (path, export record or None). Returns
    (path, export record, the parity check); a file that fails the check is deleted.
    """
    with clock.stage("export"):
        artifact, record = export()
    with clock.stage("verify", closes=False):
        checked = artifact_verify(
            artifact=Path(artifact), holdout=holdout, reference=reference, y_true=y_true,
            preprocessing=preprocessing, tolerance=tolerance, batch_size=batch_size, threads=threads,
            progress=clock.counter("verify"),
        )
    return Path(artifact), record, checked


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
            raise decode_error_for(exc, holdout) from exc
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


# -- the record --------------------------------------------------------------------------------


def config_record(
    *,
    strategy: str,
    labels: tuple[str, ...],
    backbone: BackboneConfig,
    fingerprint: str,
    namespace: str | None,
    preprocessing: Preprocessing,
    seeds: dict,
    tolerance: ParityTolerance,
    threads: int,
    batch_size: int,
    features: dict | None,
    **specific: Any,
) -> dict:
    """Configs, seeds and versions of a run: enough to reproduce it. ``specific``: the strategy's own."""
    return {
        "strategy": strategy,
        "labels": list(labels),
        "backbone": {**dataclasses.asdict(backbone), "weights_sha256_or_name": fingerprint},
        "features_namespace": namespace,
        "preprocessing": preprocessing.to_manifest(),
        **specific,
        "seeds": seeds,
        "tolerance": dataclasses.asdict(tolerance),
        "torch_threads": threads,
        "batch_size": batch_size,
        "features": features,
        "onnx": {"input": INPUT_NAME, "output": OUTPUT_NAME, "batch": "dynamic"},
        "versions": library_versions(),
    }


def result_build(
    *,
    clock: StageClock,
    labels: tuple[str, ...],
    preprocessing: Preprocessing,
    metrics: ClassificationMetrics,
    checked,
    y_true: Sequence[int],
    artifact: Path,
    outcome: Any,
    train_accuracy: float,
    train_count: int,
    holdout_count: int,
    config: dict,
    model: Any,
    decision: dict | None = None,
    selection: Any = None,
) -> PipelineResult:
    """The run's result: the file's own holdout scores and verification record, timings, configs.

    ``outcome`` is the training's outcome: its ``history`` and ``best_epoch`` are recorded.
    """
    onnx_metrics, verification = artifact_scores(checked=checked, y_true=y_true, labels=labels, artifact=artifact)
    return PipelineResult(
        labels=labels,
        preprocessing=preprocessing,
        metrics=metrics,
        onnx_metrics=onnx_metrics,
        verification=verification,
        history=outcome.history,
        best_epoch=outcome.best_epoch,
        train_accuracy=train_accuracy,
        artifact_path=artifact,
        artifact_sha256=verification["artifact_sha256"],
        artifact_size=verification["artifact_size"],
        train_count=train_count,
        holdout_count=holdout_count,
        seconds=clock.rounded(),
        config=config,
        model=model,
        decision=decision,
        selection=selection,
    )


def library_versions() -> dict:
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
