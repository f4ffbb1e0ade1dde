"""Files trained elsewhere: recognise the format, load the file in its runtime, read what it says.

``model_inspect`` (parent side) runs ``python -m training.ml.model_import`` on the file, so the
runtime (onnxruntime, ExecuTorch, the LiteRT interpreter, coremltools) is imported by a fresh
child process and never by the caller (the web process must not import torch). The child
loads the file the way an app's runtime does and reports JSON: the input's shape, dtype and
layout, the number of outputs (classes), the labels and preprocessing the file carries in its
metadata, and the weights' precision where it can be read. Core ML cannot be executed on Linux:
its package is opened with ``skip_model_load=True`` and only its structure is checked.

Formats (the extension of the stored file in brackets):

- ``onnx`` (.onnx): metadata_props ``labels`` (JSON list) and ``preprocessing`` (the manifest's
  input spec), as the platform's own exports write them;
- ``pte`` (.pte, ExecuTorch): no metadata; labels and preprocessing come from the request;
- ``tflite`` (.tflite, LiteRT): labels from the label file the TFLite metadata writer packs into
  the model (a zip appended to the flatbuffer), else from the request;
- ``mlmodel`` (.mlmodel) and ``mlpackage`` (a zipped .mlpackage folder): class labels of the
  classifier and the image input's scale and bias (-> mean and std).

No Django here.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from training.ml.errors import VerificationError
from training.ml.formats import (
    FORMATS,
    STRUCTURE_ONLY,
    FormatSpec,
    format_spec,
    mlprogram_weight_bits,
    tflite_interpreter,
    tflite_tensors,
)

_ROOT = Path(__file__).resolve().parents[2]

#: A Core ML NeuralNetwork (or ML Program without external weights) in one file; the nightly
#: job never builds it, so it is not in ``formats.FORMATS``: only imports carry it.
MLMODEL = FormatSpec(
    name="mlmodel", runtime="coreml", delegate=None, extension="mlmodel", content_type="application/octet-stream",
    variants=(), executable_here=False, converter="coremltools",
    description="Core ML model specification in one file (.mlmodel); runs on Apple platforms only",
)
IMPORT_FORMATS = ("onnx", "pte", "tflite", "mlmodel", "mlpackage")
#: Every format a version's file may have: the nightly job's, plus ``mlmodel`` from imports.
SERVED_FORMATS: dict[str, FormatSpec] = {**FORMATS, MLMODEL.name: MLMODEL}
#: Largest unpacked .mlpackage (a zip bomb must not fill the disk).
MLPACKAGE_MAX_UNPACKED = 1 << 30


def import_format_spec(name: str) -> FormatSpec:
    """The facts of an importable format (``formats.FORMATS`` plus ``mlmodel``)."""
    return SERVED_FORMATS[name] if name in SERVED_FORMATS else format_spec(name)


class UnknownFormat(VerificationError):
    """The bytes are none of the formats the platform imports."""


@dataclass(frozen=True)
class ModelFacts:
    """What the file says about itself."""

    format: str
    input_name: str
    input_shape: tuple  # as the runtime reports it; -1 for a free dimension
    input_dtype: str  # float32, uint8, int8, image (Core ML image input)
    layout: str  # NCHW, NHWC or image
    output_size: int | None  # classes, None when the file does not say
    labels: list[str] | None = None
    preprocessing: dict = field(default_factory=dict)  # mean/std/input_size the metadata gives
    precision: str = "fp32"
    input_quantization: tuple | None = None  # (scale, zero_point) of an integer input
    notes: list[str] = field(default_factory=list)

    @property
    def input_size(self) -> int | None:
        """The square side the input takes (None when not fixed or not square)."""
        dims = [d for d in self.input_shape]
        if self.layout == "NCHW" and len(dims) == 4:
            h, w = dims[2], dims[3]
        elif self.layout == "NHWC" and len(dims) == 4:
            h, w = dims[1], dims[2]
        elif self.layout == "image" and len(dims) == 2:
            h, w = dims
        else:
            return None
        return int(h) if h == w and isinstance(h, int) and h > 0 else None

    def to_dict(self) -> dict:
        return {
            "format": self.format, "input_name": self.input_name, "input_shape": list(self.input_shape),
            "input_dtype": self.input_dtype, "layout": self.layout, "output_size": self.output_size,
            "labels": self.labels, "preprocessing": self.preprocessing, "precision": self.precision,
            "input_quantization": list(self.input_quantization) if self.input_quantization else None,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict) -> ModelFacts:
        return cls(
            format=data["format"], input_name=data["input_name"], input_shape=tuple(data["input_shape"]),
            input_dtype=data["input_dtype"], layout=data["layout"], output_size=data["output_size"],
            labels=data.get("labels"), preprocessing=data.get("preprocessing") or {},
            precision=data.get("precision") or "fp32",
            input_quantization=tuple(data["input_quantization"]) if data.get("input_quantization") else None,
            notes=list(data.get("notes") or []),
        )


def format_detect(head: bytes, *, filename: str = "") -> str:
    """The format of a file from its first bytes; the file name only separates the protobufs.

    FlatBuffers carry a file identifier at bytes 4-8 (``TFL3`` for TFLite, ``ET..`` for
    ExecuTorch); a zip is a zipped .mlpackage; ONNX and .mlmodel are both protobufs without a
    magic number, so the name's extension decides between them and loading proves it.
    """
    if head[4:8] == b"TFL3":
        return "tflite"
    if head[4:6] == b"ET" and head[6:8].isalnum():
        return "pte"
    if head[:4] == b"PK\x03\x04":
        return "mlpackage"
    name = filename.lower()
    if name.endswith(".onnx"):
        return "onnx"
    if name.endswith(".mlmodel"):
        return "mlmodel"
    raise UnknownFormat(
        "Not a model file this platform imports: expected ONNX (.onnx), ExecuTorch (.pte), TFLite (.tflite), "
        "Core ML (.mlmodel) or a zipped .mlpackage."
    )


# --- the child side: one runtime per format ----------------------------------------------

def _dims(shape) -> tuple:
    return tuple(int(d) if isinstance(d, int) or str(d).lstrip("-").isdigit() else -1 for d in shape)


def _layout(shape: tuple) -> str:
    if len(shape) == 4 and shape[1] == 3:
        return "NCHW"
    if len(shape) == 4 and shape[3] == 3:
        return "NHWC"
    return "unknown"


def _classes(shape: tuple) -> int | None:
    """Classes of a [1, C] (or [C]) output."""
    dims = [d for d in shape if d != 1] if len(shape) > 1 else list(shape)
    return int(dims[-1]) if len(dims) == 1 and dims[0] > 0 else None


def _inspect_onnx(path: Path) -> ModelFacts:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = _dims(inputs[0].shape)
    if shape and shape[0] == -1:  # a free batch dimension: batch 1
        shape = (1, *shape[1:])
    meta = dict(session.get_modelmeta().custom_metadata_map)
    labels = json.loads(meta["labels"]) if "labels" in meta else None
    preprocessing = json.loads(meta["preprocessing"]) if "preprocessing" in meta else {}
    ops = _onnx_op_types(path)
    precision = "int8" if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv"} else "fp32"
    dtype = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(int8)": "int8"}.get(inputs[0].type,
                                                                                               inputs[0].type)
    return ModelFacts(
        format="onnx", input_name=inputs[0].name, input_shape=shape, input_dtype=dtype, layout=_layout(shape),
        output_size=_classes(_dims(outputs[0].shape)), labels=labels, preprocessing=preprocessing,
        precision=precision,
    )


def _onnx_op_types(path: Path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


def _inspect_pte(path: Path) -> ModelFacts:
    from executorch.extension.pybindings import _C

    module = _C._load_for_executorch_from_buffer(path.read_bytes())
    meta = module.method_meta("forward")
    if meta.num_inputs() != 1:
        raise VerificationError(f"The model's forward takes {meta.num_inputs()} inputs; one image tensor expected.")
    shape = tuple(int(d) for d in meta.input_tensor_meta(0).sizes())
    dtype = {6: "float32", 0: "uint8", 1: "int8"}.get(int(meta.input_tensor_meta(0).dtype()), "other")
    return ModelFacts(
        format="pte", input_name="input", input_shape=shape, input_dtype=dtype, layout=_layout(shape),
        output_size=_classes(tuple(int(d) for d in meta.output_tensor_meta(0).sizes())),
    )


def _inspect_tflite(path: Path) -> ModelFacts:
    payload = path.read_bytes()
    tensors = tflite_tensors(tflite_interpreter(payload))
    if len(tensors["inputs"]) != 1:
        raise VerificationError(f"The model takes {len(tensors['inputs'])} inputs; one image tensor expected.")
    source, target = tensors["inputs"][0], tensors["outputs"][0]
    shape = tuple(source["shape"])
    quantization = source["quantization"]
    return ModelFacts(
        format="tflite", input_name=source["name"], input_shape=shape, input_dtype=source["dtype"],
        layout=_layout(shape), output_size=_classes(tuple(target["shape"])), labels=_tflite_labels(payload),
        precision="int8" if quantization else "fp32",
        input_quantization=(quantization["scale"], quantization["zero_point"]) if quantization else None,
    )


def _tflite_labels(payload: bytes) -> list[str] | None:
    """Labels from the label file the TFLite metadata writer appends (as a zip) to the model."""
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            names = [n for n in zf.namelist() if n.lower().endswith(".txt")]
            preferred = [n for n in names if "label" in n.lower()] or names
            if not preferred:
                return None
            lines = zf.read(preferred[0]).decode("utf-8").splitlines()
    except (zipfile.BadZipFile, UnicodeDecodeError):
        return None
    labels = [line.strip() for line in lines if line.strip()]
    return labels or None


def _coreml_spec(path: Path, fmt: str):
    """The Core ML specification, read as ``MLModel(path, skip_model_load=True)`` reads it.

    ``import coremltools`` imports its converters, hence torch and ExecuTorch's exporter: 10 s
    of CPU and 30-80 s on a loaded host, per import. The specification is a protobuf that
    coremltools' own generated classes parse in 0.2 s, so only ``coremltools.proto`` is loaded
    (under a bare parent package; this child process does nothing else). A package is checked
    the way Core ML opens it: Manifest.json -> the root item -> its model.mlmodel, and every
    weight file the program names must be in the package.
    """
    import importlib.util
    import types

    if "coremltools" not in sys.modules:
        found = importlib.util.find_spec("coremltools")
        if found is None:
            raise VerificationError("coremltools is not installed on this host: Core ML files cannot be checked.")
        bare = types.ModuleType("coremltools")
        bare.__path__ = list(found.submodule_search_locations)
        sys.modules["coremltools"] = bare
    from coremltools.proto import Model_pb2

    spec_path = path
    if fmt == "mlpackage":
        try:
            manifest = json.loads((path / "Manifest.json").read_text())
            root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
        except (OSError, ValueError, KeyError) as exc:
            raise VerificationError(f"The .mlpackage has no readable Manifest.json root item: {exc}") from exc
        spec_path = path / "Data" / root["path"]
        if not spec_path.resolve().is_relative_to(path.resolve()) or not spec_path.is_file():
            raise VerificationError(f"The .mlpackage lacks its model specification ({root['path']}).")
    spec = Model_pb2.Model()
    try:
        spec.ParseFromString(spec_path.read_bytes())
    except Exception as exc:
        raise VerificationError(f"Not a Core ML model specification: {type(exc).__name__}: {exc}") from exc
    if spec.specificationVersion < 1 or spec.WhichOneof("Type") is None:
        raise VerificationError("Not a Core ML model specification (no version, no model type).")
    if spec.WhichOneof("Type") == "mlProgram":
        weights = sorted({m.decode() for m in re.findall(rb"@model_path/([\w./-]+)", spec.SerializeToString())})
        if fmt == "mlmodel" and weights:
            raise VerificationError("An ML program keeps its weights in a package: upload the zipped .mlpackage.")
        base = spec_path.parent
        missing = [w for w in weights if not (base / w).resolve().is_relative_to(base.resolve())
                   or not (base / w).is_file()]
        if missing:
            raise VerificationError(f"The .mlpackage lacks the weight file(s) {', '.join(missing)}.")
    return spec


def _inspect_coreml(path: Path, fmt: str) -> ModelFacts:
    spec = _coreml_spec(path, fmt)
    description = spec.description
    if len(description.input) != 1:
        raise VerificationError(f"The model takes {len(description.input)} inputs; one image expected.")
    feature = description.input[0]
    kind = feature.type.WhichOneof("Type")
    preprocessing: dict = {}
    if kind == "imageType":
        image = feature.type.imageType
        shape, layout, dtype = (int(image.height), int(image.width)), "image", "image"
        scale, bias = _coreml_scale_bias(spec, feature.name)
        if scale:
            # Core ML computes pixel * scale + bias on 0..255 pixels; the manifest's
            # (pixel / 255 - mean) / std is the same with std = 1 / (255 scale), mean = -bias std.
            std = [1.0 / (255.0 * scale)] * 3
            preprocessing = {"mean": [round(-b * s, 6) for b, s in zip(bias, std)], "std": [round(s, 6) for s in std]}
    elif kind == "multiArrayType":
        shape = tuple(int(d) for d in feature.type.multiArrayType.shape)
        layout, dtype = _layout(shape), "float32"
    else:
        raise VerificationError(f"The model's input is a {kind}; an image or a multi-array expected.")
    labels = _coreml_labels(spec)
    output_size = len(labels) if labels else None
    if output_size is None:
        for output in description.output:
            if output.type.WhichOneof("Type") == "multiArrayType":
                output_size = _classes(tuple(int(d) for d in output.type.multiArrayType.shape))
                break
    return ModelFacts(
        format=fmt, input_name=feature.name, input_shape=shape, input_dtype=dtype, layout=layout,
        output_size=output_size, labels=labels, preprocessing=preprocessing,
        precision=_coreml_precision(spec),
        notes=[f"{STRUCTURE_ONLY} (Core ML runs only on Apple platforms)"],
    )


def _coreml_labels(spec) -> list[str] | None:
    kind = spec.WhichOneof("Type")
    if kind in ("neuralNetworkClassifier", "pipelineClassifier", "treeEnsembleClassifier", "glmClassifier"):
        body = getattr(spec, kind)
        if hasattr(body, "stringClassLabels") and len(body.stringClassLabels.vector):
            return list(body.stringClassLabels.vector)
        if hasattr(body, "int64ClassLabels") and len(body.int64ClassLabels.vector):
            return [str(v) for v in body.int64ClassLabels.vector]
    if kind == "mlProgram":
        for op in _mlprogram_ops(spec):
            if op.type == "classify" and "classes" in op.inputs:
                for argument in op.inputs["classes"].arguments:
                    values = argument.value.immediateValue.list.values
                    labels = []
                    for value in values:
                        tensor = value.immediateValue.tensor
                        labels.extend(tensor.strings.values or [str(v) for v in tensor.ints.values])
                    if labels:
                        return [str(label) for label in labels]
    return None


def _mlprogram_ops(spec):
    function = spec.mlProgram.functions.get("main")
    if function is None:
        return []
    block = function.block_specializations.get(function.opset)
    return list(block.operations) if block is not None else []


def _coreml_scale_bias(spec, name: str) -> tuple[float | None, list[float]]:
    """The image input's scale and per-channel (R, G, B) bias."""
    kind = spec.WhichOneof("Type")
    if kind in ("neuralNetwork", "neuralNetworkClassifier"):
        for pre in getattr(spec, kind).preprocessing:
            if pre.featureName == name and pre.WhichOneof("preprocessor") == "scaler":
                s = pre.scaler
                return float(s.channelScale or 1.0), [float(s.redBias), float(s.greenBias), float(s.blueBias)]
        return 1.0, [0.0, 0.0, 0.0]
    if kind == "mlProgram":
        # coremltools writes ImageType(scale, bias) as the program's first ops: mul by a constant
        # named "<input>__scaled___y_0", then add "<input>__biased___y_0".
        scale, bias = 1.0, [0.0, 0.0, 0.0]
        for op in _mlprogram_ops(spec):
            if op.type != "const" or not op.outputs:
                continue
            out = op.outputs[0].name
            values = list(op.attributes["val"].immediateValue.tensor.floats.values) if "val" in op.attributes else []
            if out == f"{name}__scaled___y_0" and values:
                scale = float(values[0])
            elif out == f"{name}__biased___y_0" and values:
                bias = [float(v) for v in values] * (3 if len(values) == 1 else 1)
        return scale, bias[:3]
    return None, []


def _coreml_precision(spec) -> str:
    """fp32/fp16 from the weights' width; palettized packages as pal<bits>."""
    bits = mlprogram_weight_bits(spec)
    if bits is None:  # a NeuralNetwork .mlmodel: fp16 weights are flagged per layer
        return "fp16" if b"float16" in spec.SerializeToString().lower() else "fp32"
    return {32: "fp32", 16: "fp16"}.get(bits, f"pal{bits}")


def _inspect(path: Path, fmt: str) -> ModelFacts:
    if fmt == "onnx":
        return _inspect_onnx(path)
    if fmt == "pte":
        return _inspect_pte(path)
    if fmt == "tflite":
        return _inspect_tflite(path)
    if fmt in ("mlmodel", "mlpackage"):
        return _inspect_coreml(path, fmt)
    raise UnknownFormat(f"unknown model format {fmt!r}")


# --- the parent side ----------------------------------------------------------------------

def model_inspect(*, path: Path, format: str, timeout: float = 300.0) -> ModelFacts:
    """Load the file in its runtime in a child process; raise VerificationError with the runtime's words.

    ``path`` is the file, or the unpacked package folder for ``mlpackage``.
    """
    if format not in IMPORT_FORMATS:
        raise UnknownFormat(f"unknown model format {format!r}")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "OMP_NUM_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    command = [sys.executable, "-m", "training.ml.model_import", "--format", format, "--model", str(path)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        raise VerificationError(f"Loading the {format} file took longer than {timeout:.0f} s.") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-2:]
        raise VerificationError(f"The {format} runtime cannot load the file: {' | '.join(tail) or done.returncode}")
    report = json.loads(lines[-1])
    if "error" in report:
        raise VerificationError(report["error"])
    return ModelFacts.from_dict(report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=IMPORT_FORMATS, required=True)
    parser.add_argument("--model", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        facts = _inspect(args.model, args.format)
    except VerificationError as exc:
        print(json.dumps({"error": str(exc)}))
        return 0
    except Exception as exc:  # the runtime's own refusal, in its words
        message = " ".join(str(exc).split())[:500]
        print(json.dumps({"error": f"The {args.format} runtime cannot load the file: {type(exc).__name__}: {message}"}))
        return 0
    print(json.dumps(facts.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
