"""Assemble the deployable classifier and export it as ONE self-contained ONNX file.

torch 2.14's exporter is ``torch.onnx.export(dynamo=True)`` (the TorchScript-based one is
deprecated). By default it writes weights to a ``.onnx.data`` sidecar; apps download one
file and check one sha256, so the weights are kept inside the protobuf (MobileNetV2 is
~9 MB, far below protobuf's 2 GB limit). The preprocessing manifest and the labels are
embedded as ONNX metadata, so the file describes its own input.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from training.ml.config import Preprocessing
from training.ml.errors import ExportError

# Running ONNX files needs no torch; it lives in inference.py (shared with the reference
# client) and is re-exported here so export and check read as one API.
from training.ml.inference import (  # noqa: F401
    INPUT_NAME,
    METADATA_LABELS,
    METADATA_PREPROCESSING,
    OUTPUT_NAME,
    file_sha256,
    onnx_metadata,
    onnx_predict,
    onnx_session,
)

# Initializer names the dynamo exporter gives the head of ``classifier_assemble``'s model.
HEAD_WEIGHT = "net.classifier.1.weight"
HEAD_BIAS = "net.classifier.1.bias"


class ProbabilityClassifier(nn.Module):
    """torchvision MobileNetV2 (with its real classifier) followed by softmax."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net  # plain torchvision layout: net.state_dict() loads into mobilenet_v2()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised NCHW float32 images -> class probabilities [N, C]."""
        return torch.softmax(self.net(x), dim=1)


def classifier_assemble(*, backbone: nn.Module, head: nn.Linear) -> ProbabilityClassifier:
    """Full model: normalised [N, 3, S, S] float32 -> softmax probabilities [N, C], eval mode.

    Works on copies, so the caller's backbone (possibly channels_last, shared with feature
    extraction) and head are left untouched.
    """
    net = copy.deepcopy(backbone)
    # Same Dropout(0.2) + Linear as torchvision's mobilenet_v2, so the state dict is standard.
    net.classifier = nn.Sequential(nn.Dropout(p=0.2), copy.deepcopy(head))
    # Contiguous weights: exporting a channels_last module only adds layout noise to the graph.
    net.to(memory_format=torch.contiguous_format)
    model = ProbabilityClassifier(net)
    model.eval()
    model.requires_grad_(False)
    return model


def onnx_export(
    *,
    model: nn.Module,
    path: Path,
    preprocessing: Preprocessing,
    labels: Sequence[str] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Export ``model`` to a single .onnx file at ``path`` with a dynamic batch dimension.

    Input ``input`` [batch, 3, S, S] float32 (normalised as ``preprocessing`` says), output
    ``probabilities`` [batch, C]. Preprocessing (and labels, if given) go into the file's
    metadata_props as JSON. The file is written atomically.
    """
    path = Path(path)
    size = preprocessing.input_size
    model.eval()
    # Batch 2, not 1: torch.export specialises size-1 dimensions to constants.
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        with torch.inference_mode(False), torch.no_grad(), _quiet_exporter_logs():
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                dynamic_shapes=({0: batch},),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                verbose=False,
            )
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}") from exc
    if program is None:
        raise ExportError("torch.onnx.export returned no program")

    # model_proto holds every initializer in memory, so saving it without external data
    # folds what would have been the .onnx.data sidecar into the one file.
    proto = program.model_proto
    _metadata_set(proto, preprocessing=preprocessing, labels=labels, metadata=metadata)
    return onnx_single_file_save(proto, path)


def onnx_export_with_head(
    *,
    template: bytes,
    head: nn.Linear,
    path: Path,
    preprocessing: Preprocessing,
    labels: Sequence[str] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``template`` (an earlier export of the same frozen backbone) with ``head``'s weights.

    A linear probe changes nothing but the head, so a night's export need not trace the
    network again (about 9 s here): the graph is reused and only the head's two
    initializers and the metadata are replaced. Raises ``ExportError`` when the template
    has no head of the right shape; the caller's parity check still runs on the result.
    """
    import onnx
    from onnx import numpy_helper

    proto = onnx.load_model_from_string(template)
    weights = {
        HEAD_WEIGHT: head.weight.detach().to(torch.float32).contiguous().numpy(),
        HEAD_BIAS: head.bias.detach().to(torch.float32).contiguous().numpy(),
    }
    found = {}
    for index, initializer in enumerate(proto.graph.initializer):
        if initializer.name in weights:
            if tuple(initializer.dims) != weights[initializer.name].shape:
                raise ExportError(
                    f"template head {initializer.name} has shape {tuple(initializer.dims)}, "
                    f"the new head {weights[initializer.name].shape}"
                )
            found[initializer.name] = index
    if set(found) != set(weights):
        raise ExportError(f"template has no head initializers {sorted(set(weights) - set(found))}")
    for name, index in found.items():
        proto.graph.initializer[index].CopyFrom(numpy_helper.from_array(weights[name], name=name))
    _metadata_set(proto, preprocessing=preprocessing, labels=labels, metadata=metadata)
    return onnx_single_file_save(proto, Path(path))


def _metadata_set(proto, *, preprocessing: Preprocessing, labels, metadata) -> None:
    props = {METADATA_PREPROCESSING: json.dumps(preprocessing.to_manifest(), sort_keys=True)}
    if labels is not None:
        props[METADATA_LABELS] = json.dumps(list(labels))
    props.update(metadata or {})
    del proto.metadata_props[:]
    for key, value in sorted(props.items()):
        proto.metadata_props.add(key=key, value=str(value))


def onnx_unused_remove(graph) -> int:
    """Remove what ``graph`` computes or stores but never uses; the number of entries removed.

    Nodes whose outputs nothing reads (repeated: their inputs may become unused), then
    initializers no node reads (and their graph-input entries, as older exporters list them),
    then shape annotations of names that no longer exist. onnxruntime warns about every
    unused initializer on each load (e.g. the scale and zero point of a quantize pair that
    ``quantize_static`` put after the softmax and the int8 step took out); an app developer
    should not see warnings on a file the platform calls verified. The graph's outputs and
    its real inputs stay as they are.
    """
    outputs = {output.name for output in graph.output}
    removed = 0
    while True:
        read = outputs | _names_read(graph.node)
        dead = [node for node in graph.node if not any(name in read for name in node.output if name)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
        removed += len(dead)
    unused = [init for init in graph.initializer if init.name not in read]
    unused_names = {init.name for init in unused}
    for init in unused:
        graph.initializer.remove(init)
    for entry in [i for i in graph.input if i.name in unused_names]:
        graph.input.remove(entry)
    known = read | {name for node in graph.node for name in node.output}
    for info in [v for v in graph.value_info if v.name not in known]:
        graph.value_info.remove(info)
    return removed + len(unused)


def _names_read(nodes) -> set[str]:
    """Every tensor name the nodes read, including from inside their subgraphs (If, Loop, Scan)."""
    names = set()
    for node in nodes:
        names.update(name for name in node.input if name)
        for attribute in node.attribute:
            subgraphs = ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs)
            for subgraph in subgraphs:
                names |= _names_read(subgraph.node)
    return names


def onnx_single_file_save(proto, path: Path) -> Path:
    """Save ``proto`` with every weight inside, atomically, without what its graph does not use."""
    import onnx

    onnx_unused_remove(proto.graph)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        onnx.save_model(proto, tmp_name, save_as_external_data=False)
        _check_self_contained(Path(tmp_name))
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def _quiet_exporter_logs():
    """Keep the exporter's per-initializer INFO lines (hundreds per export) out of worker logs."""
    names = ("onnx_ir", "onnxscript", "torch.onnx", "torch.export")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _check_self_contained(path: Path) -> None:
    import onnx
    from onnx.external_data_helper import uses_external_data

    proto = onnx.load_model(str(path), load_external_data=False)
    external = [t.name for t in _initializers(proto.graph) if uses_external_data(t)]
    if external:
        raise ExportError(f"{len(external)} tensors still point to external data, e.g. {external[:3]}")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"exported ONNX model is invalid: {exc}") from exc


def _initializers(graph):
    """Every tensor stored in a graph: initializers and tensor attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            subgraphs = [attr.g] if attr.HasField("g") else []
            for sub in [*subgraphs, *attr.graphs]:
                yield from _initializers(sub)
