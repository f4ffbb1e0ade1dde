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
    return values  # type: ignore[return-value]


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
