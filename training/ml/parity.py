"""Parity checks: does an exported model (and the way it is fed) reproduce the reference?

The reference is the float torch model on correctly preprocessed images. Differences in
max probability catch what top-1 agreement hides: with ImageNet mean/std instead of the
model's [-1, 1], or without the centre crop, most top-1 answers survive on easy photos but
the probabilities move by tenths (the tests measure this). That is the signature of an app
that preprocesses differently, the most common complaint about on-device models;
``preprocessing_diagnose`` then names the likely mistake from one photo and the app's tensor.
No torch here: the reference client and the web process can use it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from training.ml.config import DEFAULT_TOLERANCE, ParityTolerance, Preprocessing
from training.ml.errors import VerificationError
from training.ml.images import ImageSource
from training.ml.inference import METADATA_PREPROCESSING, onnx_metadata, onnx_predict_images, onnx_session

_MAX_LISTED = 20  # disagreeing indices kept in a report; enough to look at, small as JSON


@dataclass(frozen=True)
class ParityReport:
    """How a candidate's probabilities compare with the reference's on the same inputs."""

    count: int
    top1_agreement: float  # fraction of inputs with the same arg-max class
    max_abs_diff: float  # largest |p_candidate - p_reference| over all inputs and classes
    mean_abs_diff: float
    disagreements: tuple[int, ...]  # indices (first few) where the top-1 class differs
    accuracy: float | None  # candidate's accuracy if labels were given
    reference_accuracy: float | None
    tolerance: ParityTolerance

    @property
    def failures(self) -> list[str]:
        """Human-readable reasons this report fails its tolerance (empty when it passes)."""
        reasons = []
        if self.count == 0:
            reasons.append("no inputs were compared")
        if self.top1_agreement < self.tolerance.min_agreement:
            reasons.append(
                f"top-1 agreement {self.top1_agreement:.4f} < {self.tolerance.min_agreement} "
                f"(differs at {list(self.disagreements)})"
            )
        if not self.max_abs_diff <= self.tolerance.max_abs_diff:  # also catches NaN
            reasons.append(f"max probability difference {self.max_abs_diff:.3g} > {self.tolerance.max_abs_diff}")
        return reasons

    @property
    def ok(self) -> bool:
        """True when agreement and probability differences are within tolerance."""
        return not self.failures

    def to_dict(self) -> dict:
        """JSON-ready form, with the verdict."""
        data = asdict(self)
        for key in ("max_abs_diff", "mean_abs_diff"):
            if not math.isfinite(data[key]):
                data[key] = None  # NaN is not JSON; the failures list says what happened
        data["disagreements"] = list(self.disagreements)
        data["ok"] = self.ok
        data["failures"] = self.failures
        return data


def predictions_compare(
    *,
    reference: np.ndarray,
    candidate: np.ndarray,
    y_true: Sequence[int] | None = None,
    tolerance: ParityTolerance = DEFAULT_TOLERANCE,
) -> ParityReport:
    """Compare two probability matrices [N, C] row by row."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape or ref.ndim != 2:
        raise VerificationError(f"shape mismatch: reference {ref.shape}, candidate {cand.shape}")
    count = len(ref)
    if count == 0:
        return ParityReport(0, 0.0, 0.0, 0.0, (), None, None, tolerance)
    ref_top, cand_top = ref.argmax(axis=1), cand.argmax(axis=1)
    differ = np.flatnonzero(ref_top != cand_top)
    diff = np.abs(cand - ref)
    accuracy = reference_accuracy = None
    if y_true is not None:
        truth = np.asarray(y_true, dtype=np.int64)
        if truth.shape != (count,):
            raise VerificationError(f"y_true has shape {truth.shape}, expected ({count},)")
        accuracy = float((cand_top == truth).mean())
        reference_accuracy = float((ref_top == truth).mean())
    return ParityReport(
        count=count,
        top1_agreement=float(1.0 - len(differ) / count),
        max_abs_diff=float(diff.max()),  # NaN propagates, and then fails the check
        mean_abs_diff=float(diff.mean()),
        disagreements=tuple(int(i) for i in differ[:_MAX_LISTED]),
        accuracy=accuracy,
        reference_accuracy=reference_accuracy,
        tolerance=tolerance,
    )


@dataclass(frozen=True)
class OnnxVerification:
    """Outcome of ``onnx_verify``: the parity report and the file's probabilities [N, C]."""

    report: ParityReport
    probabilities: np.ndarray

    def to_dict(self) -> dict:
        """JSON-ready parity report (the probabilities are left out)."""
        return self.report.to_dict()


def onnx_verify(
    *,
    path_or_bytes,
    images: Iterable[ImageSource],
    reference: np.ndarray,
    preprocessing: Preprocessing,
    y_true: Sequence[int] | None = None,
    tolerance: ParityTolerance = DEFAULT_TOLERANCE,
    batch_size: int = 32,
    num_threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    raise_on_failure: bool = True,
) -> OnnxVerification:
    """Load an ONNX file like an app would, run ``images`` through it and compare with ``reference``.

    ``reference`` holds the float model's probabilities for the same images, in order.
    Raises VerificationError if the file does not load, embeds a different preprocessing
    than ``preprocessing``, returns malformed output, or (with ``raise_on_failure``) fails
    ``tolerance``; the error carries the report as a dict.
    """
    session = (
        path_or_bytes
        if hasattr(path_or_bytes, "run")
        else onnx_session(path_or_bytes=path_or_bytes, num_threads=num_threads)
    )
    embedded = onnx_metadata(path_or_bytes=session).get(METADATA_PREPROCESSING)
    if embedded is not None and json.loads(embedded) != json.loads(json.dumps(preprocessing.to_manifest())):
        raise VerificationError(
            f"the file's embedded preprocessing {embedded} differs from the one verified "
            f"({json.dumps(preprocessing.to_manifest(), sort_keys=True)})"
        )
    probabilities = onnx_predict_images(
        path_or_bytes=session, images=images, preprocessing=preprocessing, batch_size=batch_size, progress=progress
    )
    reference = np.asarray(reference)
    if probabilities.shape != reference.shape:
        raise VerificationError(f"ONNX output shape {probabilities.shape} differs from reference {reference.shape}")
    sums = probabilities.sum(axis=1)
    if len(sums) and not np.allclose(sums, 1.0, atol=1e-4):
        raise VerificationError(f"ONNX outputs are not probabilities (row sums {sums.min():.4f}..{sums.max():.4f})")
    report = predictions_compare(reference=reference, candidate=probabilities, y_true=y_true, tolerance=tolerance)
    if raise_on_failure and not report.ok:
        raise VerificationError(
            "ONNX file disagrees with the reference model: " + "; ".join(report.failures), report=report.to_dict()
        )
    return OnnxVerification(report=report, probabilities=probabilities)


@dataclass(frozen=True)
class PreprocessingDiagnosis:
    """How an app's input tensor for a photo compares with ``image_to_array`` of the same photo."""

    ok: bool
    mean_abs_diff: float | None  # app vs reference in normalised units (None: shapes differ)
    likely_cause: str | None  # the known mistake that reproduces the app's tensor best, if any fits
    candidates: dict  # mistake -> mean |diff| between its output and the app's tensor

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


def _mistakes(image, preprocessing: Preprocessing, reference: np.ndarray) -> dict[str, np.ndarray]:
    """What the usual preprocessing mistakes produce for ``image`` (numpy + Pillow only)."""
    from PIL import Image as PILImage

    from training.ml.config import IMAGENET_MEAN, IMAGENET_STD
    from training.ml.images import image_rgb, image_to_array

    size, variants = preprocessing.input_size, {}

    def normalised(**changes) -> np.ndarray:
        return image_to_array(image, preprocessing=dataclasses.replace(preprocessing, **changes))

    if (preprocessing.mean, preprocessing.std) != (IMAGENET_MEAN, IMAGENET_STD):
        variants["imagenet_mean_std"] = normalised(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    variants["scaled_0_1_no_mean_std"] = normalised(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    variants["raw_0_255_pixels"] = variants["scaled_0_1_no_mean_std"] * np.float32(255.0)
    variants["bgr_channel_order"] = reference[::-1]
    variants["hwc_memory_read_as_chw"] = reference.transpose(1, 2, 0).reshape(3, size, size)
    squashed = image_rgb(image).resize((size, size), resample=PILImage.Resampling.BILINEAR)
    variants["squashed_no_center_crop"] = image_to_array(squashed, preprocessing=preprocessing)
    variants["center_crop_without_resize"] = normalised(resize=max(size, min(image.size)))
    if preprocessing.resize != size:
        variants["resize_to_input_size"] = normalised(resize=size)
    return variants


def preprocessing_diagnose(
    *, image, app_array: np.ndarray, preprocessing: Preprocessing, tolerance: float = 0.03
) -> PreprocessingDiagnosis:
    """Check an app's model input for ``image`` and name the likely mistake if it is off.

    ``app_array`` is what the app feeds the model for this photo: [3, S, S] or [1, 3, S, S]
    (an [S, S, 3] array is reported as the HWC layout mistake). ``tolerance`` is a mean
    absolute difference; different JPEG decoders and resizers stay well below it.
    """
    from training.ml.images import image_to_array

    reference = image_to_array(image, preprocessing=preprocessing)
    app = np.asarray(app_array, dtype=np.float32)
    size = preprocessing.input_size
    if app.shape in ((size, size, 3), (1, size, size, 3)):
        return PreprocessingDiagnosis(False, None, "hwc_layout_instead_of_nchw", {})
    app = app.reshape(reference.shape) if app.size == reference.size else app
    if app.shape != reference.shape:
        return PreprocessingDiagnosis(False, None, f"wrong_shape_{'x'.join(map(str, app.shape))}", {})
    difference = float(np.abs(app - reference).mean())
    if difference <= tolerance:
        return PreprocessingDiagnosis(True, difference, None, {})
    candidates = {
        name: float(np.abs(app - variant).mean())
        for name, variant in _mistakes(image, preprocessing, reference).items()
    }
    best = min(candidates, key=candidates.get)
    cause = best if candidates[best] <= tolerance else "unknown"
    return PreprocessingDiagnosis(False, difference, cause, candidates)
