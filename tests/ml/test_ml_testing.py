"""The shared tiny ONNX classifier (training/ml/testing.py) that tests and bench/ build their models with."""
from __future__ import annotations

import json

import numpy as np
import pytest

from training.ml.testing import tiny_onnx_classifier


def _run(payload: bytes, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(payload, providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"input": batch})[0]


def _solid(rgb: tuple[float, float, float], size: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, dtype=np.float32)[:, None, None], (3, size, size))


def test_the_mean_colour_classifier_answers_by_its_weights():
    payload = tiny_onnx_classifier(num_classes=2, input_size=8, weights=[[4, 0, -4], [-4, 0, 4]])
    probabilities = _run(payload, np.stack([_solid((1, 0, 0), 8), _solid((0, 0, 1), 8)]))
    assert probabilities.shape == (2, 2)
    assert probabilities.argmax(axis=1).tolist() == [0, 1]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_a_nudged_convolution_model_is_mostly_the_same_bytes_and_a_different_model():
    first = tiny_onnx_classifier(num_classes=3, input_size=16, conv_channels=16, seed=1)
    assert tiny_onnx_classifier(num_classes=3, input_size=16, conv_channels=16, seed=1) == first  # deterministic
    nudged = tiny_onnx_classifier(num_classes=3, input_size=16, conv_channels=16, seed=1, nudge=5)
    assert len(nudged) == len(first) and nudged != first
    photo = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    assert _run(first, photo).shape == (1, 3)
    assert not np.array_equal(_run(first, photo), _run(nudged, photo))


def test_metadata_is_stored_as_the_pipeline_stores_it():
    import onnx

    payload = tiny_onnx_classifier(num_classes=2, input_size=8, name="named",
                                   metadata={"preprocessing": {"input_size": 8}, "note": "as is"})
    model = onnx.load_from_string(payload)
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["preprocessing"]) == {"input_size": 8} and props["note"] == "as is"
    assert model.graph.name == "named"
    assert [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == ["batch", 3, 8, 8]


def test_weights_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match="2 x 3"):
        tiny_onnx_classifier(num_classes=2, input_size=8, weights=[[1, 2, 3]])
