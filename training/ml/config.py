"""Frozen configuration dataclasses for the ML core (no torch import: the web process uses them)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: torchvision's ImageNet statistics, for weights trained with them (torchvision's own).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESIZE_MODE = "shorter_side_bilinear_antialias"
_CROP = "center"


def _triple(name: str, value: Any) -> tuple[float, float, float]:
    values = tuple(float(v) for v in value)
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be three finite numbers (R, G, B), got {value!r}")
    return values


@dataclass(frozen=True)
class Preprocessing:
    """What an app must do to a photo before the model sees it; goes verbatim into the manifest.

    Steps (``training.ml.images.image_to_array`` is the reference implementation):
    convert to RGB, resize so the shorter side is ``resize`` (bilinear with antialiasing,
    the longer side truncated like torchvision), crop the centre ``input_size`` square,
    scale pixels to [0, 1], subtract ``mean`` and divide by ``std`` per channel, lay out
    as NCHW float32.
    """

    input_size: int = 224
    resize: int = 256
    # The shared Keras-converted weights were trained on [-1, 1] inputs (their SOURCE.md).
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        # Manifests come back from JSON with lists; normalise so equality and hashing work.
        object.__setattr__(self, "mean", _triple("mean", self.mean))
        object.__setattr__(self, "std", _triple("std", self.std))
        if int(self.input_size) != self.input_size or self.input_size < 1:
            raise ValueError(f"input_size must be a positive integer, got {self.input_size!r}")
        if int(self.resize) != self.resize or self.resize < self.input_size:
            # A shorter side below the crop would need padding, which no app implements alike.
            raise ValueError(f"resize ({self.resize!r}) must be an integer >= input_size ({self.input_size})")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std!r}")
        object.__setattr__(self, "input_size", int(self.input_size))
        object.__setattr__(self, "resize", int(self.resize))

    def to_manifest(self) -> dict:
        """JSON-ready description for the model manifest (and the ONNX file's metadata)."""
        return {
            "input_size": self.input_size,
            "resize": self.resize,
            "resize_mode": _RESIZE_MODE,
            "crop": _CROP,
            "mean": list(self.mean),
            "std": list(self.std),
            "channel_order": "RGB",
            "layout": "NCHW",
            "dtype": "float32",
            "scale": 1.0 / 255.0,
            "output": "probabilities",
        }

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> Preprocessing:
        """Rebuild from ``to_manifest()`` output; refuses manifests this code cannot reproduce."""
        fixed = {"resize_mode": _RESIZE_MODE, "crop": _CROP, "channel_order": "RGB", "layout": "NCHW"}
        for key, expected in fixed.items():
            if key in manifest and manifest[key] != expected:
                raise ValueError(f"unsupported preprocessing {key}={manifest[key]!r} (expected {expected!r})")
        if "scale" in manifest and not math.isclose(float(manifest["scale"]), 1.0 / 255.0, rel_tol=1e-6):
            raise ValueError(f"unsupported preprocessing scale={manifest['scale']!r} (expected 1/255)")
        return cls(
            input_size=manifest["input_size"],
            resize=manifest["resize"],
            mean=tuple(manifest["mean"]),
            std=tuple(manifest["std"]),
        )


@dataclass(frozen=True)
class BackboneConfig:
    """Which MobileNetV2 weights to start from."""

    # Local torchvision-layout state dict (features.* keys, see the weights' SOURCE.md).
    # None means torchvision's MobileNet_V2_Weights.IMAGENET1K_V1, which downloads on first use.
    weights_path: str | None = None
    width_mult: float = 1.0

    def __post_init__(self) -> None:
        if not self.width_mult > 0:
            raise ValueError(f"width_mult must be positive, got {self.width_mult!r}")
        if self.weights_path is not None:
            object.__setattr__(self, "weights_path", str(self.weights_path))


@dataclass(frozen=True)
class LinearProbeConfig:
    """Training of the linear head on frozen, cached features.

    Features are standardised for the optimiser (folded back into the head afterwards, so the
    exported model is still backbone -> Linear -> softmax). A stratified validation slice of
    the train split picks the epoch (early stopping on validation loss); with
    ``refit_on_all`` the head is then retrained on the whole train split for that many epochs,
    because with ~30 photos per label every photo counts.
    """

    seed: int = 0
    epochs: int = 200  # upper bound; early stopping usually ends far sooner
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 64
    validation_fraction: float = 0.15
    patience: int = 20
    class_weighting: bool = True  # "balanced" loss weights: a rare label is not just ignored
    label_smoothing: float = 0.0
    refit_on_all: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("epochs, batch_size and patience must be >= 1")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction!r}")
        if not self.lr > 0 or self.weight_decay < 0 or not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("lr must be > 0, weight_decay >= 0, label_smoothing in [0, 1)")


@dataclass(frozen=True)
class ParityTolerance:
    """How close an exported model must stay to the reference (torch fp32) predictions."""

    # fp32 ONNX vs fp32 torch differ by ~1e-6 here; 1e-3 still catches any preprocessing slip.
    max_abs_diff: float = 1e-3
    # Top-1 flips are only plausible at near-ties; allow a sliver for very large holdouts.
    min_agreement: float = 0.999

    def __post_init__(self) -> None:
        if self.max_abs_diff < 0 or not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError("max_abs_diff must be >= 0 and min_agreement in [0, 1]")


#: The tolerance used when none is given (fp32 export vs fp32 torch).
DEFAULT_TOLERANCE = ParityTolerance()


#: Every variant the compression stage can build; see ``training.ml.compress``.
COMPRESSION_VARIANTS = ("fp32", "fp16", "int8", "pruned", "pruned-int8", "distilled", "distilled-int8")
#: The app runtimes' file formats: ONNX (onnxruntime), ExecuTorch .pte (XNNPACK delegate) and
#: LiteRT .tflite (fp32, fp16 and int8 only). Their facts: ``training.ml.formats``.
COMPRESSION_FORMATS = ("onnx", "pte", "tflite")
#: Core ML variants (format "mlpackage"): fp16 weights, or k-means palettized weights of 8, 6, 4
#: or 2 bits. Built only when a project's policy names them (``CompressionConfig.coreml_variants``).
COREML_VARIANTS = ("fp16", "pal8", "pal6", "pal4", "pal2")


@dataclass(frozen=True)
class CompressionConfig:
    """Which compressed variants the nightly job builds, how, and what the policy accepts.

    ``variants`` names come from ``COMPRESSION_VARIANTS``; each is built in every format of
    ``formats`` that supports it (fp16 weights: ONNX only). ``max_accuracy_loss`` is a fraction
    (0.01 = 1 point of holdout accuracy below the float model) and ``min_agreement`` the share
    of holdout photos on which a compressed file must give the float model's top-1 answer.
    """

    variants: tuple[str, ...] = COMPRESSION_VARIANTS
    formats: tuple[str, ...] = COMPRESSION_FORMATS
    max_accuracy_loss: float = 0.01
    min_agreement: float = 0.95
    calibration_photos: int = 64  # int8: training photos the activation ranges are observed on
    prune_macs_ratio: float = 0.6  # pruned: multiply-adds left, as a share of the float model's
    fine_tune_epochs: int = 3  # pruned and distilled students: epochs against the teacher
    fine_tune_lr: float = 1e-3
    fine_tune_max_photos: int = 1000  # bounds the nightly cost on large sets (a stratified subset)
    distill_min_train_photos: int = 1000  # below this the student would learn the photos, not the task
    distill_student: str = "resolution"  # "resolution" (same network, smaller input) or "width"
    distill_input_size: int = 160
    distill_width_mult: float = 0.5
    distill_temperature: float = 4.0
    latency_threads: int = 1  # fixed thread count for every latency figure (phones: 1-4 big cores)
    latency_runs: int = 30  # batch-1 runs timed per file (after warm-up), besides the holdout
    seed: int = 0
    # Fidelity (issue 16): a compressed file's disagreement with the float model, measured on the
    # holdout and on augmented views (crop, flip, light) of every approved photo, must have an
    # upper 95% bound within max_disagreement (None: max_accuracy_loss); its holdout log-loss may
    # exceed the float model's by max_log_loss_increase (nats). fidelity_views views per photo,
    # of at most fidelity_max_photos photos (a stratified subset): this bounds the nightly cost.
    max_disagreement: float | None = None
    max_log_loss_increase: float = 0.05
    fidelity_views: int = 1
    fidelity_max_photos: int = 1000
    # Core ML: which variants to build (empty: none), and whether files this Linux host can only
    # check in structure (Core ML does not run here) may be offered to apps at all.
    coreml_variants: tuple[str, ...] = ()
    offer_unexecuted: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.variants) - set(COMPRESSION_VARIANTS))
        if unknown:
            raise ValueError(f"unknown variants {unknown}; known: {list(COMPRESSION_VARIANTS)}")
        formats = sorted(set(self.formats) - set(COMPRESSION_FORMATS))
        if formats or not self.formats:
            raise ValueError(f"formats must be a non-empty subset of {list(COMPRESSION_FORMATS)}, got {self.formats!r}")
        if "fp32" not in self.variants:
            raise ValueError("the fp32 variant is the float model itself and is always built")
        if not 0.0 <= self.max_accuracy_loss < 1.0 or not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError("max_accuracy_loss must be in [0, 1) and min_agreement in [0, 1]")
        if not 0.05 <= self.prune_macs_ratio < 1.0:
            raise ValueError(f"prune_macs_ratio must be in [0.05, 1), got {self.prune_macs_ratio!r}")
        if self.distill_student not in ("resolution", "width"):
            raise ValueError(f"distill_student must be 'resolution' or 'width', got {self.distill_student!r}")
        if self.distill_input_size < 32 or not 0.0 < self.distill_width_mult < 1.0:
            raise ValueError("distill_input_size must be >= 32 and distill_width_mult in (0, 1)")
        if self.max_disagreement is not None and not 0.0 <= self.max_disagreement < 1.0:
            raise ValueError("max_disagreement must be in [0, 1) or None")
        if self.max_log_loss_increase < 0 or self.fidelity_views < 0 or self.fidelity_max_photos < 0:
            raise ValueError("max_log_loss_increase, fidelity_views and fidelity_max_photos must be >= 0")
        if min(self.calibration_photos, self.latency_threads, self.latency_runs, self.fine_tune_max_photos) < 1:
            raise ValueError("calibration_photos, latency_threads, latency_runs, fine_tune_max_photos must be >= 1")
        if self.fine_tune_epochs < 0 or not self.fine_tune_lr > 0 or not self.distill_temperature > 0:
            raise ValueError("fine_tune_epochs must be >= 0, fine_tune_lr and distill_temperature > 0")
        unknown = sorted(set(self.coreml_variants) - set(COREML_VARIANTS))
        if unknown:
            raise ValueError(f"unknown Core ML variants {unknown}; known: {list(COREML_VARIANTS)}")
        object.__setattr__(self, "coreml_variants", tuple(v for v in COREML_VARIANTS if v in self.coreml_variants))
        object.__setattr__(self, "variants", tuple(v for v in COMPRESSION_VARIANTS if v in self.variants))
        object.__setattr__(self, "formats", tuple(f for f in COMPRESSION_FORMATS if f in self.formats))
