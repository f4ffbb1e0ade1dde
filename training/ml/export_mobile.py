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
                  calibration: np.ndarray | None = None) -> Path:
    """Convert ``model`` (normalised NCHW float32 -> probabilities) to a .tflite file at ``path``.

    ``precision``: "fp32"; "fp16" (weights stored as float16: litert-torch's ``full_fp16_recipe``
    through ai-edge-quantizer); "int8" (weights and activations int8, ranges observed on
    ``calibration``: torchao PT2E with litert-torch's ``PT2EQuantizer``; the converter makes the
    input tensor int8 too, with the scale and zero point the manifest's ``tensors`` state, while
    the output stays float32 probabilities). Every variant takes the manifest's NCHW layout.
    """
    litert_torch = _import("litert_torch", "litert-torch")
    import torch

    example = _example(input_size)
    model = model.eval()
    with torch.no_grad():
        if precision == "int8":
            edge = _tflite_int8(litert_torch, model, example, calibration)
        elif precision == "fp16":
            from litert_torch.generative.quantize.quant_recipes import full_fp16_recipe

            edge = litert_torch.convert(model, example, quant_config=full_fp16_recipe())
        elif precision == "fp32":
            edge = litert_torch.convert(model, example)
        else:
            raise PipelineError(f"no tflite {precision!r} variant")
    return _write_atomic(bytes(edge.model_content()), path)


def _tflite_int8(litert_torch, model, example, calibration):
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if calibration is None or len(calibration) == 0:
        raise PipelineError("int8 calibration needs at least one training photo")
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    graph = torch.export.export(model, example).module()
    prepared = prepare_pt2e(graph, quantizer)
    for i in range(len(calibration)):
        prepared(torch.from_numpy(np.ascontiguousarray(calibration[i : i + 1], dtype=np.float32)))
    converted = convert_pt2e(prepared, fold_quantize=False)
    return litert_torch.convert(converted, example, quant_config=QuantConfig(pt2e_quantizer=quantizer))


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
