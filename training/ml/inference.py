"""Running exported ONNX files with onnxruntime + numpy + Pillow only (no torch).

This is what an app does with a downloaded model, so the server's verification and the
reference client share it: preprocess with ``images.image_to_array``, run, read probabilities.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sized
from pathlib import Path

import numpy as np

from training.ml.config import Preprocessing
from training.ml.errors import VerificationError
from training.ml.images import ImageSource, image_batches

INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
METADATA_PREPROCESSING = "preprocessing"
METADATA_LABELS = "labels"


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def onnx_session(*, path_or_bytes: str | Path | bytes, num_threads: int | None = None):
    """An onnxruntime CPU InferenceSession; raises VerificationError if the file does not load."""
    import onnxruntime as ort

    from training.ml.runtime import threads_available

    options = ort.SessionOptions()
    # Same budget rule as torch: never more threads than cores we may use.
    options.intra_op_num_threads = num_threads or threads_available()
    options.inter_op_num_threads = 1
    source = path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    try:
        return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise VerificationError(f"onnxruntime cannot load the model: {type(exc).__name__}: {exc}") from exc


def onnx_metadata(*, path_or_bytes) -> dict[str, str]:
    """The metadata_props of an ONNX file, bytes or open session (e.g. ``preprocessing`` JSON)."""
    session = path_or_bytes if hasattr(path_or_bytes, "run") else onnx_session(path_or_bytes=path_or_bytes)
    return dict(session.get_modelmeta().custom_metadata_map)


def onnx_preprocessing(*, path_or_bytes) -> Preprocessing | None:
    """The preprocessing embedded in an exported file, or None if it carries none."""
    raw = onnx_metadata(path_or_bytes=path_or_bytes).get(METADATA_PREPROCESSING)
    return None if raw is None else Preprocessing.from_manifest(json.loads(raw))


def onnx_predict(*, path_or_bytes, batch: np.ndarray) -> np.ndarray:
    """Run a float32 NCHW batch through an ONNX file/bytes (or an open session); return probabilities."""
    session = path_or_bytes if hasattr(path_or_bytes, "run") else onnx_session(path_or_bytes=path_or_bytes)
    x = np.ascontiguousarray(batch, dtype=np.float32)
    (probabilities,) = session.run(None, {session.get_inputs()[0].name: x})
    return np.asarray(probabilities, dtype=np.float32)


def onnx_predict_images(
    *,
    path_or_bytes,
    images: Iterable[ImageSource],
    preprocessing: Preprocessing,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Probabilities [N, C] for images (PIL images or openers), preprocessed by ``image_to_array``."""
    session = path_or_bytes if hasattr(path_or_bytes, "run") else onnx_session(path_or_bytes=path_or_bytes)
    total = len(images) if isinstance(images, Sized) else -1
    outputs: list[np.ndarray] = []
    done = 0
    for batch in image_batches(images, preprocessing=preprocessing, batch_size=batch_size):
        outputs.append(onnx_predict(path_or_bytes=session, batch=batch))
        done += len(batch)
        if progress is not None:
            progress(done, total)
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(outputs)
