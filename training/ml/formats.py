"""The model file formats the platform builds, verifies and serves: one table of facts.

Everything that differs per format lives here, so the compression stage, the measuring
child process, the manifest, the import of models trained elsewhere and the docs agree:
the file extension, the runtime that loads it, the HTTP content type, the variants the
nightly job can build, whether this Linux host can execute it, and how to open a file from
its stored bytes and read its input/output tensors.

No torch, no Django, and no runtime at import time: the web process reads the table; the
loaders import their runtime (onnxruntime, ExecuTorch, LiteRT, coremltools) when called.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.ml.errors import VerificationError


@dataclass(frozen=True)
class FormatSpec:
    """Facts about one model file format."""

    name: str  # the protocol's ``format``: "onnx", "pte", "tflite", "mlpackage"
    runtime: str  # the manifest's ``runtime``
    delegate: str | None  # the manifest's ``delegate`` (the runtime's backend), if any
    extension: str  # without the leading dot; a file is "<stem>.<extension>"
    content_type: str  # what a download is served as
    variants: tuple[str, ...]  # variants the nightly job can build in this format
    executable_here: bool  # False: this Linux host can only check the file's structure
    converter: str | None  # the Python module that builds it (None: part of the base install)
    description: str

    def file_name(self, stem: str) -> str:
        """``stem`` plus this format's extension, e.g. ``int8.tflite`` or ``pal4.mlpackage.zip``."""
        return f"{stem}.{self.extension}"


ONNX = FormatSpec(
    name="onnx", runtime="onnxruntime", delegate=None, extension="onnx",
    content_type="application/octet-stream",
    variants=("fp32", "fp16", "int8", "pruned", "pruned-int8", "distilled", "distilled-int8"),
    executable_here=True, converter=None,
    description="ONNX, one self-contained file (weights inside); preprocessing and labels in metadata_props",
)
PTE = FormatSpec(
    name="pte", runtime="executorch", delegate="xnnpack", extension="pte",
    content_type="application/octet-stream",
    variants=("fp32", "int8", "pruned", "pruned-int8", "distilled", "distilled-int8"),
    executable_here=True, converter="executorch",
    description="ExecuTorch program, XNNPACK delegate, batch 1",
)
TFLITE = FormatSpec(
    name="tflite", runtime="litert", delegate=None, extension="tflite",
    content_type="application/octet-stream",
    variants=("fp32", "fp16", "int8"),
    executable_here=True, converter="litert_torch",
    description="LiteRT (TensorFlow Lite) flatbuffer converted by litert-torch, batch 1, NCHW input as the manifest says",
)
MLPACKAGE = FormatSpec(
    name="mlpackage", runtime="coreml", delegate=None, extension="mlpackage.zip",
    content_type="application/zip",
    variants=("fp16", "pal8", "pal6", "pal4", "pal2"),
    executable_here=False, converter="coremltools",
    description="Core ML ML Program (.mlpackage folder, served zipped), batch 1; runs on Apple platforms only",
)

#: Every format, in the order manifests list them.
FORMATS: dict[str, FormatSpec] = {spec.name: spec for spec in (ONNX, PTE, TFLITE, MLPACKAGE)}
#: The palettized Core ML variants and their bits per weight (k-means look-up tables).
PALETTE_BITS = {"pal8": 8, "pal6": 6, "pal4": 4, "pal2": 2}
#: What the card row of a file that cannot be executed here says instead of a measurement.
STRUCTURE_ONLY = "structure verified, not executed on this host"


def format_spec(name: str) -> FormatSpec:
    """The facts of format ``name``; VerificationError names the known ones otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
        raise VerificationError(f"unknown model format {name!r}; known: {sorted(FORMATS)}") from None


def format_of_filename(filename: str) -> FormatSpec | None:
    """The format a file name's extension says (longest extension first), or None."""
    lower = filename.lower()
    for spec in sorted(FORMATS.values(), key=lambda s: -len(s.extension)):
        if lower.endswith("." + spec.extension):
            return spec
    return None


# -- LiteRT (TFLite) ----------------------------------------------------------------------------


def tflite_interpreter(payload: bytes, *, num_threads: int = 1):
    """A LiteRT interpreter over a .tflite file's bytes, tensors allocated.

    Raises VerificationError when ai-edge-litert is missing or the bytes are not a model it loads.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise VerificationError(f"the LiteRT runtime is not installed (pip install ai-edge-litert): {exc}") from exc
    try:
        interpreter = Interpreter(model_content=bytes(payload), num_threads=max(1, int(num_threads)))
        interpreter.allocate_tensors()
    except Exception as exc:
        raise VerificationError(f"LiteRT cannot load the model: {type(exc).__name__}: {exc}") from exc
    return interpreter


def _tensor_detail(detail: dict) -> dict:
    scale, zero_point = detail.get("quantization") or (0.0, 0)
    quantized = np.dtype(detail["dtype"]).kind in "iu" and float(scale) != 0.0
    return {
        "name": str(detail["name"]),
        "shape": [int(d) for d in detail["shape"]],
        "dtype": np.dtype(detail["dtype"]).name,
        # real = scale * (q - zero_point); only integer tensors carry a scale
        "quantization": {"scale": float(scale), "zero_point": int(zero_point)} if quantized else None,
    }


def tflite_tensors(interpreter) -> dict:
    """The file's input and output tensors as the manifest states them (name, shape, dtype, quantization)."""
    return {
        "inputs": [_tensor_detail(d) for d in interpreter.get_input_details()],
        "outputs": [_tensor_detail(d) for d in interpreter.get_output_details()],
    }


def tflite_runner(payload: bytes, *, num_threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """A function float32 [1, 3, S, S] -> float32 [1, C] over a .tflite file's bytes.

    Integer inputs are quantized with the file's scale and zero point, integer outputs
    dequantized, as an app must do for a full-integer model.
    """
    interpreter = tflite_interpreter(payload, num_threads=num_threads)
    source = interpreter.get_input_details()[0]
    target = interpreter.get_output_details()[0]
    in_spec, out_spec = _tensor_detail(source), _tensor_detail(target)

    def run(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32).reshape(source["shape"])
        if in_spec["quantization"]:
            q = in_spec["quantization"]
            info = np.iinfo(source["dtype"])
            x = np.clip(np.round(x / q["scale"] + q["zero_point"]), info.min, info.max)
        interpreter.set_tensor(source["index"], x.astype(source["dtype"]))
        interpreter.invoke()
        y = interpreter.get_tensor(target["index"])
        if out_spec["quantization"]:
            q = out_spec["quantization"]
            y = (y.astype(np.float32) - q["zero_point"]) * q["scale"]
        return np.array(y, dtype=np.float32).reshape(1, -1)

    return run


# -- Core ML (.mlpackage, zipped) -----------------------------------------------------------------


def mlpackage_zip(folder: Path, path: Path) -> Path:
    """Zip an .mlpackage folder into ``path`` (written atomically), the folder as the archive's root.

    Entries are sorted and stamped with a fixed date so the same package gives the same bytes.
    """
    folder, path = Path(folder), Path(path)
    root = folder.name if folder.name.endswith(".mlpackage") else "model.mlpackage"
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(f"{root}/{file.relative_to(folder).as_posix()}", date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, file.read_bytes())
    tmp.replace(path)
    return path


def mlpackage_unzip(payload: bytes, directory: Path) -> Path:
    """Extract a zipped .mlpackage into ``directory``; returns the package folder.

    Refuses archives that are not zip files, hold no ``*.mlpackage/Manifest.json``, or
    have entries escaping the directory.
    """
    directory = Path(directory).resolve()
    try:
        archive = zipfile.ZipFile(io.BytesIO(bytes(payload)))
    except zipfile.BadZipFile as exc:
        raise VerificationError(f"not a zip archive of an .mlpackage: {exc}") from exc
    with archive:
        manifests = [n for n in archive.namelist() if n.endswith(".mlpackage/Manifest.json")]
        if len(manifests) != 1:
            raise VerificationError(f"the archive must hold one .mlpackage folder, found {len(manifests)}")
        for name in archive.namelist():
            target = (directory / name).resolve()
            if not str(target).startswith(str(directory) + os.sep):
                raise VerificationError(f"archive entry {name!r} escapes the package folder")
        archive.extractall(directory)
    return directory / manifests[0][: -len("/Manifest.json")]


def mlpackage_inspect(payload: bytes) -> dict:
    """What can be checked of a zipped .mlpackage on Linux: its structure, without running it.

    Loads the package with ``skip_model_load=True`` (prediction needs macOS) and reads the
    input (name, shape, dtype, image scale/bias if an ImageType), the output, class labels,
    the smallest weight bit width (palettized look-up tables: their index bits) and the size.
    """
    try:
        import coremltools as ct
    except ImportError as exc:
        raise VerificationError(f"coremltools is not installed: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="mlpackage-") as tmp:
        package = mlpackage_unzip(payload, Path(tmp))
        try:
            model = ct.models.MLModel(str(package), skip_model_load=True)
        except Exception as exc:
            raise VerificationError(f"coremltools cannot read the package: {type(exc).__name__}: {exc}") from exc
        spec = model.get_spec()
        bits = mlprogram_weight_bits(spec)
        palette_groups = mlprogram_palette_groups(spec)
        user = dict(spec.description.metadata.userDefined)
    inputs = [_coreml_feature(f) for f in spec.description.input]
    outputs = [_coreml_feature(f) for f in spec.description.output]
    labels = _coreml_labels(spec, user)
    return {
        "inputs": inputs,
        "outputs": outputs,
        "labels": labels,
        "weight_bits": bits,
        "palette_groups": sorted(set(palette_groups)),  # channels per look-up table ([]: per tensor)
        "metadata": user,
        "size": len(payload),
        "executed": False,
        "note": STRUCTURE_ONLY,
    }


def _coreml_feature(feature) -> dict:
    kind = feature.type.WhichOneof("Type")
    out = {"name": feature.name, "type": kind}
    if kind == "multiArrayType":
        array = feature.type.multiArrayType
        out["shape"] = [int(d) for d in array.shape]
        out["dtype"] = {65568: "float32", 65552: "float16", 131104: "int32", 65600: "float64"}.get(
            int(array.dataType), str(array.dataType))
    elif kind == "imageType":
        image = feature.type.imageType
        out["shape"] = [1, 3 if image.colorSpace != 10 else 1, int(image.height), int(image.width)]
        out["color_space"] = int(image.colorSpace)
    return out


def _coreml_labels(spec, user: dict) -> list[str] | None:
    if "labels" in user:
        try:
            return list(json.loads(user["labels"]))
        except ValueError:
            pass
    model_type = spec.WhichOneof("Type")
    if model_type == "neuralNetworkClassifier":
        labels = spec.neuralNetworkClassifier
        return [str(v) for v in labels.stringClassLabels.vector] or [str(v) for v in labels.int64ClassLabels.vector]
    return None


#: MIL DataType enum value -> bits per element (coremltools.proto.MIL_pb2.DataType).
_MIL_BITS = {10: 16, 11: 32, 12: 64, 13: 16, 21: 8, 22: 16, 23: 32, 24: 64, 25: 4, 31: 8, 32: 16, 33: 32,
             34: 64, 35: 4, 36: 2, 37: 1, 38: 6, 39: 3, 40: 8, 41: 8}


def mlprogram_weight_bits(spec) -> int | None:
    """Fewest bits per element among an ML Program's stored weight tensors (rank >= 2).

    A palettized weight (``constexpr_lut_to_dense``) counts log2 of its palette's size, the bits
    of each packed index (8, 6, 4, 2 or 1); an fp16 package gives 16. None for
    specs without an ML Program (e.g. a NeuralNetwork ``.mlmodel``).
    """
    if spec.WhichOneof("Type") != "mlProgram":
        return None
    widths = []
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                if op.type == "constexpr_lut_to_dense" and "lut" in op.attributes:
                    # iOS16 opset: the palette is an attribute of 2^bits entries; the indices are packed
                    dims = op.attributes["lut"].type.tensorType.dimensions
                    entries = int(np.prod([d.constant.size for d in dims])) if dims else 0
                    if entries > 1:
                        widths.append(int(round(np.log2(entries))))
                    continue
                if op.type == "constexpr_lut_to_dense" and "lut" in op.inputs:
                    # iOS18 opset: the palettes are an input [groups..., 2^bits, 1], one per channel group
                    dims = [d.constant.size for d in _input_value(op, "lut").type.tensorType.dimensions]
                    if len(dims) >= 2 and dims[-2] > 1:
                        widths.append(int(round(np.log2(dims[-2]))))
                    continue
                if op.type != "const":
                    continue
                for output in op.outputs:
                    tensor = output.type.tensorType
                    if tensor.rank >= 2 and int(tensor.dataType) in _MIL_BITS:
                        widths.append(_MIL_BITS[int(tensor.dataType)])
    return min(widths) if widths else None


def _input_value(op, name: str):
    """The inline value of an ML Program operation's input ``name`` (iOS18 constexpr ops)."""
    return op.inputs[name].arguments[0].value


def mlprogram_palette_groups(spec) -> list[int]:
    """Output channels per look-up table of each iOS18-palettized weight of an ML Program, in order.

    The palettes of a weight [C, ...] are an input [G, 1, ..., 2^bits, 1]: C / G channels share
    one. Empty for per-tensor (iOS16) or unpalettized programs.
    """
    if spec.WhichOneof("Type") != "mlProgram":
        return []
    groups = []
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                if op.type == "constexpr_lut_to_dense" and "lut" in op.inputs and "indices" in op.inputs:
                    channels = _input_value(op, "indices").type.tensorType.dimensions[0].constant.size
                    tables = _input_value(op, "lut").type.tensorType.dimensions[0].constant.size
                    groups.append(int(channels // max(tables, 1)))
    return groups
