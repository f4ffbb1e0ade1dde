"""LiteRT (.tflite) and Core ML (.mlpackage) files of a trained model, and what palettization costs.

The converters are heavy (litert-torch pulls jax and transformers; coremltools its own MIL
stack), so each is imported inside the function that needs it: only the training worker
ever loads them, and a machine without one raises ``ConverterMissing``, which the
compression stage records as a skipped format instead of failing the night.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.ml.config import Preprocessing
from training.ml.errors import PipelineError
from training.ml.formats import PALETTE_BITS, mlpackage_zip
from training.ml.inference import INPUT_NAME, METADATA_LABELS, METADATA_PREPROCESSING, OUTPUT_NAME

#: Weights smaller than this stay fp16 in palettized files (coremltools' default weight_threshold).
PALETTE_MIN_ELEMENTS = 2048
#: Output channels sharing one look-up table in palettized files (coremltools' per_grouped_channel
#: granularity, iOS 18 / macOS 15). One table per tensor cost MobileNetV2 5 points even at 8 bits;
#: one per 16 channels keeps 4 bits within the size target (README, "Core ML"). A weight whose
#: output channels are not a multiple of it (e.g. a 2-class classifier) stays fp16, as coremltools does.
PALETTE_GROUP_SIZE = 16
#: Below 8 bits, weights with fewer elements than this keep 8-bit palettes: the narrow early layers
#: and the depthwise convolutions (in MobileNetV2 5% of the palettized weights), measured to carry
#: most of the 4-bit loss (README, "Core ML"); the large late layers hold the bytes.
PALETTE_LOW_BITS_MIN_ELEMENTS = 16384


class ConverterMissing(PipelineError):
    """The package that builds a format is not installed on this machine: the format is skipped."""


def _import(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConverterMissing(
            f"{package} is not installed on this worker ({type(exc).__name__}: {exc}); "
            f"the format is disabled until it is (pip install {package})"
        ) from exc


def _example(input_size: int):
    import torch

    return (torch.randn(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0)),)


def _write_atomic(payload: bytes, path: Path) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    tmp.replace(path)
    return path


# -- LiteRT ------------------------------------------------------------------------------------


def tflite_export(*, model, path: Path, input_size: int, precision: str = "fp32",
                  calibration: np.ndarray | None = None, float_stem_convs: int = 0,
                  input_range: tuple[float, float] | None = None) -> Path:
    """Convert ``model`` (normalised NCHW float32 -> probabilities) to a .tflite file at ``path``.

    ``precision``: "fp32"; "fp16" (weights stored as float16: litert-torch's ``full_fp16_recipe``
    through ai-edge-quantizer); "int8" (see ``_tflite_int8``: int8 input tensor with the scale and
    zero point the manifest's ``tensors`` state, int8 weights and activations, the first
    ``float_stem_convs`` convolutions (the pipeline passes ``compress.FLOAT_STEM_CONVS``) and the classifier
    in float, float32 probabilities out; ``input_range``: the values preprocessing can produce,
    ``input_value_range``, else the range observed on ``calibration``). Every variant takes the
    manifest's NCHW layout.
    """
    litert_torch = _import("litert_torch", "litert-torch")
    import torch

    example = _example(input_size)
    model = model.eval()
    with torch.no_grad():
        if precision == "int8":
            payload = _tflite_int8(litert_torch, model, example, calibration, float_stem_convs, input_range)
        elif precision == "fp16":
            from litert_torch.generative.quantize.quant_recipes import full_fp16_recipe

            payload = bytes(litert_torch.convert(model, example, quant_config=full_fp16_recipe()).model_content())
        elif precision == "fp32":
            payload = bytes(litert_torch.convert(model, example).model_content())
        else:
            raise PipelineError(f"no tflite {precision!r} variant")
    return _write_atomic(payload, path)


def input_value_range(preprocessing: Preprocessing) -> tuple[float, float]:
    """The smallest and largest value preprocessing gives any pixel: (0 - mean) / std .. (1 - mean) / std."""
    pairs = list(zip(preprocessing.mean, preprocessing.std))
    return min(-m / s for m, s in pairs), max((1 - m) / s for m, s in pairs)


def _tflite_int8(litert_torch, model, example, calibration, float_stem_convs: int,
                 input_range: tuple[float, float] | None) -> bytes:
    """Static int8 by ai-edge-quantizer on the float .tflite file, the stem and head kept in float.

    The float file is converted first (BatchNorm folded, ReLU6 fused into the convolutions), then
    ``static_wi8_ai8``: per-channel symmetric int8 weights, int8 activations whose ranges are the
    min/max observed on ``calibration`` (training photos). The operators from the first to the
    ``float_stem_convs``-th convolution and the classifier (fully connected, softmax) stay float,
    as in the ONNX and pte int8 files (``compress._float_nodes`` has the measurement); the input
    layout transpose before them is quantized, so the file takes an int8 input tensor; its range
    is ``input_range`` (ai-edge-quantizer's moving-average min/max of the photos would clip
    bright pixels), which for one mean and std loses nothing the photo's 8-bit pixels had.
    Quantizing the stem and head too (litert-torch's PT2EQuantizer cannot leave them out) cost
    11.8 points on ants/bees (README).
    """
    import torch

    quantizer_module = _import("ai_edge_quantizer.quantizer", "ai-edge-quantizer")
    from ai_edge_quantizer import recipe

    if calibration is None or len(calibration) == 0:
        raise PipelineError("int8 calibration needs at least one training photo")
    fp32 = bytes(litert_torch.convert(model, example).model_content())
    quantizer = quantizer_module.Quantizer(fp32, recipe.static_wi8_ai8())
    for scope in _tflite_float_scopes(fp32, float_stem_convs):
        quantizer.update_quantization_recipe(regex=scope, operation_name=recipe.TFLOperationName.ALL_SUPPORTED,
                                             algorithm_key=recipe.AlgorithmName.NO_QUANTIZE)
    signature, input_name, input_tensor = _tflite_signature_input(fp32)
    photos = [{input_name: np.ascontiguousarray(calibration[i : i + 1], dtype=np.float32)}
              for i in range(len(calibration))]
    ranges = quantizer.calibrate({signature: photos}, num_threads=max(1, torch.get_num_threads()))
    if input_range is not None:
        observed = ranges[input_tensor]
        ranges[input_tensor] = {**observed, "min": np.full_like(observed["min"], min(input_range)),
                                "max": np.full_like(observed["max"], max(input_range))}
    quantized = quantizer.quantize(ranges, enable_progress_report=False).quantized_model
    return tflite_shared_quantization(bytes(quantized))


def _tflite_float_scopes(payload: bytes, float_stem_convs: int) -> list[str]:
    """Anchored regexes naming (by output tensors, ai-edge-quantizer's op scope) the ops kept in float:
    every op from the first convolution to the ``float_stem_convs``-th, and the classifier's."""
    import re

    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfl

    model = tfl.read_model(payload)
    graph = model.subgraphs[0]
    names = [tfl.TFL_OP_CODE_TO_NAME.get(model.operatorCodes[op.opcodeIndex].builtinCode) for op in graph.operators]
    convs = [i for i, name in enumerate(names) if name is not None and name.value in _TFLITE_CONVS]
    stem = range(convs[0], convs[min(float_stem_convs, len(convs)) - 1] + 1) if convs and float_stem_convs > 0 else ()
    kept = [i for i, name in enumerate(names) if i in stem or (name is not None and name.value in _TFLITE_HEAD)]
    return ["^" + re.escape(tfl.get_op_scope(graph.operators[i], graph.tensors)) + "$" for i in kept]


_TFLITE_CONVS = ("CONV_2D", "DEPTHWISE_CONV_2D")
_TFLITE_HEAD = ("FULLY_CONNECTED", "SOFTMAX")


def _tflite_signature_input(payload: bytes) -> tuple[str, str, str]:
    """The default signature's key, its single input's name (what calibration data is keyed by)
    and that input's tensor name (what the observed ranges are keyed by)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=payload)
    [(key, signature)] = interpreter.get_signature_list().items()
    [name] = signature["inputs"]
    [tensor] = interpreter.get_input_details()
    return key, name, tensor["name"]


def tflite_shared_quantization(payload: bytes) -> bytes:
    """The same .tflite model with equal quantization vectors stored once.

    Per-channel int8 weights and their int32 biases each carry a scale and an int64 zero point
    per output channel; the zero points are all 0, so MobileNetV2's 17k channels spend about
    0.27 MB on zeros (9% of the int8 file). FlatBuffers lets tables share one vector, so every
    tensor with the same values points at one copy; readers see the same model, byte for byte in
    every field.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    shared: dict[tuple[str, bytes], int] = {}

    class SharedQuantization(schema.QuantizationParametersT):
        def __init__(self, source):
            super().__init__()
            self.__dict__.update(source.__dict__)

        def Pack(self, builder):
            def vector(values, dtype):
                if values is None:
                    return None
                data = np.ascontiguousarray(values, dtype=dtype)
                key = (data.dtype.str, data.tobytes())
                if key not in shared:
                    shared[key] = builder.CreateNumpyVector(data)
                return shared[key]

            low, high = vector(self.min, np.float32), vector(self.max, np.float32)
            scale, zero_point = vector(self.scale, np.float32), vector(self.zeroPoint, np.int64)
            details = self.details.Pack(builder) if self.details is not None else None
            schema.QuantizationParametersStart(builder)
            for add, value in ((schema.QuantizationParametersAddMin, low), (schema.QuantizationParametersAddMax, high),
                               (schema.QuantizationParametersAddScale, scale),
                               (schema.QuantizationParametersAddZeroPoint, zero_point)):
                if value is not None:
                    add(builder, value)
            schema.QuantizationParametersAddDetailsType(builder, self.detailsType)
            if details is not None:
                schema.QuantizationParametersAddDetails(builder, details)
            schema.QuantizationParametersAddQuantizedDimension(builder, self.quantizedDimension)
            return schema.QuantizationParametersEnd(builder)

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(payload))
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            if tensor.quantization is not None:
                tensor.quantization = SharedQuantization(tensor.quantization)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


# -- Core ML -----------------------------------------------------------------------------------


def coreml_export(*, model, path: Path, preprocessing: Preprocessing, labels: Sequence[str], variant: str,
                  group_size: int | None = PALETTE_GROUP_SIZE,
                  low_bits_min_elements: int | None = None) -> Path:
    """A zipped Core ML ML Program (.mlpackage) of ``model`` at ``path``: "fp16" or "pal8/6/4/2".

    Input ``input`` is a float32 tensor [1, 3, S, S], normalised as ``preprocessing`` says (the
    manifest's mean/std differ per channel, which Core ML's ImageType cannot express), output
    ``probabilities`` [1, C]. Preprocessing and labels go into the package's user metadata.
    Palettized variants: k-means look-up tables of 2^bits fp16 values
    (``coremltools.optimize.coreml.palettize_weights``), one per ``group_size`` output channels
    (None: one per tensor), on every weight of at least ``PALETTE_MIN_ELEMENTS`` elements; smaller
    ones, and those whose output channels ``group_size`` does not divide, stay fp16. Below 8
    bits, weights of fewer than ``low_bits_min_elements`` (None: ``PALETTE_LOW_BITS_MIN_ELEMENTS``)
    elements get 8-bit tables. Grouped tables need iOS 18 / macOS 15 (the package's deployment
    target); fp16 and per-tensor packages run from iOS 16.
    """
    ct = _import("coremltools", "coremltools")
    import torch

    if variant != "fp16" and variant not in PALETTE_BITS:
        raise PipelineError(f"no Core ML {variant!r} variant")
    grouped = variant in PALETTE_BITS and group_size is not None
    size = preprocessing.input_size
    with torch.no_grad():
        program = torch.export.export(model.eval(), _example(size)).run_decompositions({})
    mlmodel = ct.convert(
        program,
        inputs=[ct.TensorType(name=INPUT_NAME, shape=(1, 3, size, size), dtype=np.float32)],
        outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)],
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16,
        minimum_deployment_target=ct.target.iOS18 if grouped else ct.target.iOS16,
        skip_model_load=True,  # loading compiles for prediction: macOS only
    )
    if variant in PALETTE_BITS:
        from coremltools.optimize.coreml import OpPalettizerConfig, OptimizationConfig, palettize_weights

        granularity = {"granularity": "per_grouped_channel", "group_size": group_size} if grouped else {}
        bits = PALETTE_BITS[variant]
        if low_bits_min_elements is None:
            low_bits_min_elements = PALETTE_LOW_BITS_MIN_ELEMENTS

        def palettes(nbits: int):
            return OpPalettizerConfig(mode="kmeans", nbits=nbits, weight_threshold=PALETTE_MIN_ELEMENTS, **granularity)

        # The converted program's weight constants, by size: the same rule palettize_torch applies.
        kept_at_8 = {} if bits >= 8 else {
            op.name: palettes(8) for op in mlmodel._mil_program.functions["main"].find_ops(op_type="const")
            if isinstance(op.val.val, np.ndarray) and PALETTE_MIN_ELEMENTS <= op.val.val.size < low_bits_min_elements
        }
        mlmodel = palettize_weights(mlmodel, OptimizationConfig(global_config=palettes(bits), op_name_configs=kept_at_8))
        mlmodel.user_defined_metadata["palette_group_size"] = str(group_size if grouped else 0)
        mlmodel.user_defined_metadata["palette_8bit_below_elements"] = str(low_bits_min_elements if bits < 8 else 0)
    mlmodel.user_defined_metadata[METADATA_PREPROCESSING] = json.dumps(preprocessing.to_manifest(), sort_keys=True)
    mlmodel.user_defined_metadata[METADATA_LABELS] = json.dumps(list(labels))
    mlmodel.user_defined_metadata["variant"] = variant
    mlmodel.short_description = f"{len(labels)}-class classifier, {variant}"
    with tempfile.TemporaryDirectory(prefix="coreml-") as tmp:
        folder = Path(tmp) / "model.mlpackage"
        mlmodel.save(str(folder))
        mlpackage_zip(folder, Path(path))
        shutil.rmtree(folder, ignore_errors=True)
    return Path(path)


# -- what palettization costs, estimated in torch ------------------------------------------------


def kmeans_1d(values: np.ndarray, clusters: int, *, iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means on scalars: (palette [k], index per value), palette sorted.

    Starts from the values' quantiles (deterministic); in one dimension the nearest centre is
    found by bisecting the midpoints, so each step is O(n log k).
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    k = int(min(clusters, np.unique(flat).size))
    centres = np.unique(np.quantile(flat, (np.arange(k) + 0.5) / k))
    for _ in range(iterations):
        index = np.searchsorted((centres[1:] + centres[:-1]) / 2, flat)
        sums = np.bincount(index, weights=flat, minlength=len(centres))
        counts = np.bincount(index, minlength=len(centres))
        moved = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
        if np.allclose(moved, centres, rtol=0, atol=1e-12):
            break
        centres = np.unique(moved)
    index = np.searchsorted((centres[1:] + centres[:-1]) / 2, flat)
    return centres, index


def _batchnorm_folded(model):
    """``model`` with every Conv2d -> BatchNorm2d pair inside a Sequential folded into one Conv2d.

    The Core ML converter folds BatchNorm before palettizing, so the look-up tables are fitted
    to the folded weights; the estimate must palettize the same tensors.
    """
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for module in list(model.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                module._modules[first] = fuse_conv_bn_eval(conv, norm)
                module._modules[second] = nn.Identity()
    return model


def palettize_torch(model, *, bits: int | None, min_elements: int = PALETTE_MIN_ELEMENTS,
                    group_size: int | None = PALETTE_GROUP_SIZE,
                    low_bits_min_elements: int | None = None):
    """A copy of ``model`` whose conv/linear weights are what a Core ML file of that variant stores.

    BatchNorm is folded into the convolutions first, as the converter does, and every weight is
    rounded to fp16 (the converter's weights). ``bits`` None: nothing more (the "fp16" package);
    else each weight of at least ``min_elements`` elements is replaced by k-means palettes of
    2^bits fp16 values, one per ``group_size`` output channels (None: one per tensor), exactly the
    grouping of ``coreml_export``; weights below the size, or whose output channels
    ``group_size`` does not divide, stay fp16, as ``palettize_weights`` leaves them; below 8 bits,
    weights of fewer than ``low_bits_min_elements`` (None: ``PALETTE_LOW_BITS_MIN_ELEMENTS``)
    elements get 8-bit palettes. Computation stays float32, so the score estimates the weights'
    cost, not fp16 arithmetic on the phone.
    The copy's ``palette_bits`` lists the bit widths it used (the structure check expects the
    fewest of them in the file; empty: nothing palettized).
    """
    import copy

    import torch
    from torch import nn

    out = _batchnorm_folded(copy.deepcopy(model).eval())
    if low_bits_min_elements is None:
        low_bits_min_elements = PALETTE_LOW_BITS_MIN_ELEMENTS
    widths = set()
    with torch.no_grad():
        for module in out.modules():
            if not isinstance(module, (nn.Conv2d, nn.Linear)):
                continue
            weight = module.weight.detach().cpu().numpy().astype(np.float16).astype(np.float32)
            channels = weight.shape[0]
            group = channels if group_size is None else group_size
            if bits is not None and weight.size >= min_elements and channels % group == 0:
                rows = weight.reshape(channels // group, -1)  # output channels lead: one row per group
                width = bits if bits >= 8 or weight.size >= low_bits_min_elements else 8
                widths.add(width)
                for row in rows:
                    palette, index = kmeans_1d(row, 2**width)
                    row[:] = palette.astype(np.float16).astype(np.float32)[index]
                weight = rows.reshape(weight.shape)
            module.weight.copy_(torch.from_numpy(weight))
            if module.bias is not None:
                module.bias.copy_(module.bias.half().float())
    out.palette_bits = sorted(widths)
    return out
