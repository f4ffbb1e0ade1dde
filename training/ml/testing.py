"""Tiny, real ONNX classifiers for tests and benchmarks (like ``torch.testing``: shipped, never used in production).

One builder for every caller (tests/training, tests/moderation, tests/integration, bench/):
the same kind of file the nightly job publishes (input "input", NCHW float32; output
"probabilities"), built with onnx.helper in milliseconds instead of exported from torch.
Plain numpy and onnx (imported when called): no Django, no torch, so bench scripts that put
the repository root on their path import it as they import the rest of ``training``.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np

# onnxruntime 1.31 and the ONNX files the exporter writes: opset 17, IR version 8.
OPSET = 17
IR_VERSION = 8


def tiny_onnx_classifier(
    *,
    num_classes: int,
    input_size: int,
    weights: Sequence[Sequence[float]] | None = None,
    conv_channels: int = 0,
    seed: int = 0,
    nudge: int = 0,
    name: str = "tiny",
    metadata: Mapping[str, object] | None = None,
) -> bytes:
    """The serialized bytes of a small image classifier, checked by ``onnx.checker``.

    Without ``conv_channels``: GlobalAveragePool -> Flatten -> Gemm -> Softmax, a classifier of
    the mean colour, whose ``weights`` are [classes][R, G, B]. With ``conv_channels``: a 3x3
    convolution and a ReLU first (weights drawn from ``seed``), so the file has some bulk.
    Missing ``weights`` are drawn from ``seed``; ``nudge`` adds 0.01 to that many convolution
    weights (the next night's "slightly different" model, mostly the same bytes). ``name`` is
    the graph's name; ``metadata`` becomes the file's metadata_props (values not str as JSON),
    as the pipeline stores "preprocessing" and an imported model may carry "labels".
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, initializers, features = [], [], "input"
    if conv_channels:
        conv = rng.normal(0, 0.5, (conv_channels, 3, 3, 3)).astype(np.float32)
        conv.reshape(-1)[:nudge] += 0.01
        nodes += [helper.make_node("Conv", ["input", "conv_w"], ["conv"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", ["conv"], ["relu"])]
        initializers.append(numpy_helper.from_array(conv, "conv_w"))
        features = "relu"
    width = conv_channels or 3
    head = (np.asarray(weights, dtype=np.float32) if weights is not None
            else rng.normal(0, 1.0, (num_classes, width)).astype(np.float32))
    if head.shape != (num_classes, width):
        raise ValueError(f"weights must be {num_classes} x {width}, not {' x '.join(map(str, head.shape))}")
    nodes += [
        helper.make_node("GlobalAveragePool", [features], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
        helper.make_node("Gemm", ["features", "head_w", "head_b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    initializers += [numpy_helper.from_array(head, "head_w"),
                     numpy_helper.from_array(np.zeros(num_classes, dtype=np.float32), "head_b")]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, input_size, input_size])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", num_classes])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    if metadata:
        helper.set_model_props(model, {key: value if isinstance(value, str) else json.dumps(value)
                                       for key, value in metadata.items()})
    onnx.checker.check_model(model)
    return model.SerializeToString()
