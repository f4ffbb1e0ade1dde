"""Compression stage: from the trained float model to measured files apps can run.

``compression_pipeline`` builds each configured variant (fp32, fp16 weights, int8 static
quantization, channel-pruned + fine-tuned, distilled student, and their int8 versions) in
each format (ONNX for onnxruntime, ExecuTorch ``.pte`` with the XNNPACK delegate, LiteRT
``.tflite``; Core ML ``.mlpackage`` when the policy asks), loads every written file back with
its own runtime in a fresh process (``training.ml.measure``), runs the holdout photos through
it, and lets ``card.policy_apply`` decide which files apps are offered. Core ML cannot run on
Linux: its files are checked in structure and scored by an estimate (``coreml_check``).
Nothing here imports Django.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from training.ml.card import FAILED, SKIPPED, card_build, fidelity_summary
from training.ml.config import CompressionConfig, ParityTolerance, Preprocessing
from training.ml.errors import PipelineError, VerificationError
from training.ml.export_mobile import ConverterMissing
from training.ml.stages import StageClock
from training.ml.stats import proportion

#: Progress stages of ``compression_pipeline``.
COMPRESSION_STAGES = ("compress", "measure")

#: variant -> (source model, precision)
_VARIANTS = {
    "fp32": ("float", "fp32"),
    "fp16": ("float", "fp16"),
    "int8": ("float", "int8"),
    "pruned": ("pruned", "fp32"),
    "pruned-int8": ("pruned", "int8"),
    "distilled": ("distilled", "fp32"),
    "distilled-int8": ("distilled", "int8"),
    # Core ML only: k-means palettized weights
    "pal8": ("float", "pal8"),
    "pal6": ("float", "pal6"),
    "pal4": ("float", "pal4"),
    "pal2": ("float", "pal2"),
}

#: How each precision's file is made, as the card's ``details`` say it.
_TFLITE_METHODS = {
    "fp32": "litert-torch convert (float32)",
    "fp16": "litert-torch convert, then ai-edge-quantizer float16 weight-only (compute stays float32)",
    "int8": "int8: ai-edge-quantizer static_wi8_ai8 on the float file, per-channel int8 weights, int8 activations, "
            "int8 input; stem and head in float, float32 output",
}
_COREML_METHODS = {
    "fp16": "coremltools ML Program, fp16 weights and compute",
    "pal": "coremltools palettize_weights k-means, {bits}-bit look-up tables (fp16 values) per 16 output channels "
           "on weights of >= 2048 elements (8-bit below 16384 elements), the rest fp16",
}

#: Convolutions at the input that stay in float in int8 files (the stem: MobileNetV2's first
#: convolution and its first two inverted-residual blocks, 0.3% of the weights).
FLOAT_STEM_CONVS = 6


class _Skipped(Exception):
    """A variant the configuration or the data rule out (recorded as "skipped")."""


@dataclass(frozen=True)
class ShippedArtifact:
    """One offered file, ready to be stored: what the registry and the manifest need."""

    variant: str  # "fp32", "fp16", "int8", "pruned", "pruned-int8", "distilled", "distilled-int8"
    format: str  # a key of training.ml.formats.FORMATS: "onnx", "pte", "tflite", "mlpackage"
    precision: str  # "fp32" | "fp16" | "int8" | "pal8" | "pal6" | "pal4" | "pal2"
    path: Path  # the measured file (its bytes are what gets stored)
    sha256: str
    size: int
    preprocessing: dict  # Preprocessing.to_manifest() of THIS file's input (a student may use 160 px)
    recommended: bool  # the smallest offered file of its format
    measurements: dict  # its card row
    companions: list[dict] = field(default_factory=list)  # [] : every file is self-contained

    @property
    def extension(self) -> str:
        from training.ml.formats import format_spec

        return format_spec(self.format).extension


@dataclass
class CompressionResult:
    """The card (every attempt, measured) and the files the policy offers, recommended first."""

    card: dict
    artifacts: list[ShippedArtifact]
    seconds: dict[str, float]

    @property
    def published(self) -> bool:
        """The policy's verdict: the float model's file passed, so the offered files form a version."""
        return bool(self.card.get("published")) and bool(self.artifacts)


@dataclass(frozen=True)
class BuiltFile:
    """One written file of a variant, before it is measured: how it was made and what it must match."""

    variant: str
    format: str
    precision: str
    path: Path
    preprocessing: Preprocessing
    details: dict
    tolerance: ParityTolerance | None  # strict parity for fp32/fp16 files of the float model


def compression_pipeline(
    *,
    model,
    float_onnx: Path,
    labels: Sequence[str],
    preprocessing: Preprocessing,
    train: Sequence,
    holdout: Sequence,
    out_dir: Path,
    config: CompressionConfig = CompressionConfig(),
    progress: Callable[[str, float], None] | None = None,
    num_threads: int | None = None,
) -> CompressionResult:
    """Build, measure and judge every configured variant of ``model``.

    ``model`` is the trained float torch model (normalised NCHW images -> probabilities) and
    ``float_onnx`` its already verified fp32 ONNX export (reused, not exported again).
    ``train`` and ``holdout`` are ``pipeline.Sample`` lists: train photos calibrate int8 and
    fine-tune pruned/distilled students; holdout photos measure every file.
    A variant that cannot be built or loaded is recorded as "failed" with the error and is
    never offered; the run goes on with the others. Stages: ``COMPRESSION_STAGES``.
    """
    from training.ml.runtime import torch_threads

    clock = StageClock(progress)
    labels = tuple(labels)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not holdout:
        raise PipelineError("compression needs holdout photos to measure the files on")
    plan = compression_plan(config)

    with torch_threads(num_threads):
        with clock.stage("compress"):
            model = model.eval()
            evidence = _evidence_gather(
                model=model, train=train, holdout=holdout, preprocessing=preprocessing, config=config, clock=clock
            )
            sources = _Sources(
                model=model, float_onnx=Path(float_onnx), preprocessing=preprocessing, labels=labels,
                tuning=_stratified(train, limit=config.fine_tune_max_photos), config=config, out_dir=out_dir,
                calibration=_stratified(train, limit=config.calibration_photos),
            )
            built, unbuilt = _variants_build(plan=plan, sources=sources, progress=clock.reporter("compress"))
        with clock.stage("measure", opens=False):  # each file reports its own start
            measured = _variants_measure(
                built=built, evidence=evidence, sources=sources, config=config, progress=clock.reporter("measure")
            )

    rows = _ratios(_in_plan_order([*unbuilt, *measured], plan), eager_ms=evidence.eager_ms)
    card = card_build(
        labels=labels,
        holdout_count=len(holdout),
        float_model=_float_model_record(model=model, evidence=evidence, config=config),
        rows=rows,
        max_accuracy_loss=config.max_accuracy_loss,
        min_agreement=config.min_agreement,
        max_disagreement=config.max_disagreement,
        max_log_loss_increase=config.max_log_loss_increase,
        seconds=clock.rounded(),
        config=dataclasses.asdict(config),
    )
    return CompressionResult(card=card, artifacts=_offered_artifacts(card, built), seconds=card["seconds"])


# -- the stages --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Evidence:
    """What every file is measured against: the float model on the holdout and on augmented views."""

    holdout: Sequence  # the holdout Samples
    holdout_x: np.ndarray  # the holdout, preprocessed as the float model's manifest says
    holdout_y: list[int]
    reference: np.ndarray  # the float model's probabilities on the holdout
    views: list  # augmented views (Samples) of the approved photos
    views_x: np.ndarray
    views_reference: np.ndarray  # the float model's probabilities on the views
    eager_ms: float  # the float model's batch-1 latency run eagerly by torch: the card's baseline

    @property
    def float_accuracy(self) -> float:
        """The float model's holdout accuracy."""
        return float((self.reference.argmax(axis=1) == np.asarray(self.holdout_y)).mean())

    def inputs_for(self, preprocessing: Preprocessing, cache: dict) -> tuple[np.ndarray, np.ndarray]:
        """(holdout, views) preprocessed as ``preprocessing`` says (a student may use another input size)."""
        if preprocessing not in cache:
            cache[preprocessing] = (
                samples_arrays(self.holdout, preprocessing), samples_arrays(self.views, preprocessing)
            )
        return cache[preprocessing]


def _evidence_gather(*, model, train, holdout, preprocessing: Preprocessing, config: CompressionConfig,
                     clock: StageClock) -> _Evidence:
    """The float model's answers on the holdout and on augmented views; its eager latency."""
    holdout_x = samples_arrays(holdout, preprocessing)
    reference = model_probabilities(model, holdout_x)
    # Photos the model did not fit as it sees them: augmented views of every approved photo.
    t_views = time.perf_counter()
    views = augmented_views(
        _stratified([*train, *holdout], limit=config.fidelity_max_photos),
        per_photo=config.fidelity_views, seed=config.seed,
    )
    views_x = samples_arrays(views, preprocessing)
    views_reference = (
        model_probabilities(model, views_x) if views else np.zeros((0, reference.shape[1]), dtype=np.float32)
    )
    clock.seconds["views"] = time.perf_counter() - t_views
    eager_ms = eager_latency(model, holdout_x[:1], threads=config.latency_threads, runs=config.latency_runs)
    return _Evidence(
        holdout=holdout, holdout_x=holdout_x, holdout_y=[s.label for s in holdout], reference=reference, views=views,
        views_x=views_x, views_reference=views_reference, eager_ms=eager_ms,
    )


def _variants_build(
    *, plan: list[tuple[str, str]], sources: _Sources, progress: Callable[[float], None]
) -> tuple[list[BuiltFile], list[dict]]:
    """Write every planned file; returns (built files, card rows of the skipped and failed ones)."""
    built: list[BuiltFile] = []
    unbuilt: list[dict] = []
    for step, (variant, fmt) in enumerate(plan):
        progress(step / max(len(plan), 1))
        try:
            source = sources.get(variant_source(variant))
            built.append(_build(source=source, variant=variant, fmt=fmt, sources=sources))
        except (_Skipped, ConverterMissing) as exc:
            unbuilt.append(_row_unbuilt(variant, fmt, status=SKIPPED, reason=str(exc)))
        except Exception as exc:
            unbuilt.append(_row_unbuilt(variant, fmt, status=FAILED, reason=f"{type(exc).__name__}: {exc}"))
    return built, unbuilt


def _variants_measure(
    *, built: list[BuiltFile], evidence: _Evidence, sources: _Sources, config: CompressionConfig,
    progress: Callable[[float], None],
) -> list[dict]:
    """The card row of every built file: run by its own runtime (Core ML: checked and estimated)."""
    inputs_by_preprocessing = {sources.preprocessing: (evidence.holdout_x, evidence.views_x)}
    rows = []
    for index, item in enumerate(built):
        progress(index / max(len(built), 1))
        inputs, view_inputs = evidence.inputs_for(item.preprocessing, inputs_by_preprocessing)
        if item.format == "mlpackage":
            rows.append(coreml_check(
                built=item, model=sources.get(variant_source(item.variant)).model,
                inputs=inputs, reference=evidence.reference, y_true=evidence.holdout_y,
                offer_unexecuted=config.offer_unexecuted, views=view_inputs,
                views_reference=evidence.views_reference,
            ))
            continue
        rows.append(
            variant_check(
                built=item, inputs=inputs, reference=evidence.reference,
                y_true=evidence.holdout_y, threads=config.latency_threads, runs=config.latency_runs,
                views=view_inputs, views_reference=evidence.views_reference,
            )
        )
    return rows


def _float_model_record(*, model, evidence: _Evidence, config: CompressionConfig) -> dict:
    """The card's baseline: the float model as torch runs it, on the same holdout."""
    import torch

    n = len(evidence.holdout_y)
    accuracy = evidence.float_accuracy
    return {
        "accuracy": accuracy,
        "accuracy_ci95": proportion(round(accuracy * n), n).to_dict()["ci95"],
        "log_loss": round(log_loss(evidence.reference, evidence.holdout_y), 6),
        "views": len(evidence.views),
        "latency_ms": round(evidence.eager_ms, 3),
        "size": _state_dict_size(model),
        "threads": config.latency_threads,
        "runtime": f"torch {torch.__version__} eager",
    }


def _offered_artifacts(card: dict, built: list[BuiltFile]) -> list[ShippedArtifact]:
    """The files the policy offers, grouped by format, recommended first, then by size."""
    paths = {(b.variant, b.format): b for b in built}
    artifacts = [
        ShippedArtifact(
            variant=row["variant"], format=row["format"], precision=row["precision"],
            path=paths[(row["variant"], row["format"])].path, sha256=row["sha256"], size=row["size"],
            preprocessing=row["preprocessing"], recommended=row["recommended"], measurements=row,
        )
        for row in card["variants"]
        if row["status"] == "offered"
    ]
    artifacts.sort(key=lambda a: (a.format, not a.recommended, a.size))
    return artifacts


# -- the plan --------------------------------------------------------------------------------

def variant_source(variant: str) -> str:
    """Which model a variant is made from: "float", "pruned" or "distilled"."""
    return _VARIANTS[variant][0]


def variant_precision(variant: str) -> str:
    return _VARIANTS[variant][1]


def compression_plan(config: CompressionConfig) -> list[tuple[str, str]]:
    """(variant, format) pairs to build, in card order; each format builds the variants it has.

    ExecuTorch's XNNPACK fp16 path computes in half precision, which needs the ARMv8.2 fp16
    units of phones; this x86 verification host cannot prove such a file, so none is built.
    LiteRT builds fp32, fp16 and int8 of the float model; Core ML the policy's ``coreml_variants``.
    """
    from training.ml.formats import FORMATS

    plan = [
        (variant, fmt)
        for variant in config.variants
        for fmt in config.formats
        if variant in FORMATS[fmt].variants
    ]
    return plan + [(variant, "mlpackage") for variant in config.coreml_variants]


# -- building ------------------------------------------------------------------------------


@dataclass
class _Source:
    name: str
    model: object
    preprocessing: Preprocessing
    details: dict
    onnx_fp32: Path | None = None  # exported once, shared by fp32/fp16/int8 ONNX files


@dataclass
class _Sources:
    """The float model and, built on first use, its pruned and distilled students."""

    model: object
    float_onnx: Path
    preprocessing: Preprocessing
    labels: tuple[str, ...]
    tuning: list
    calibration: list
    config: CompressionConfig
    out_dir: Path
    cache: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)

    @property
    def tuning_y(self) -> list[int]:
        return [s.label for s in self.tuning]

    def get(self, name: str) -> _Source:
        if name not in self.cache:
            try:
                self.cache[name] = self._make(name)
            except Exception as exc:  # remembered: every variant of this source fails the same way
                self.cache[name] = exc
        found = self.cache[name]
        if isinstance(found, BaseException):
            raise found
        return found

    def tuning_arrays(self, preprocessing: Preprocessing) -> np.ndarray:
        if preprocessing not in self.arrays:
            self.arrays[preprocessing] = samples_arrays(self.tuning, preprocessing)
        return self.arrays[preprocessing]

    def calibration_arrays(self, preprocessing: Preprocessing) -> np.ndarray:
        wanted = {s.key for s in self.calibration}
        index = [i for i, s in enumerate(self.tuning) if s.key in wanted]
        if len(index) == len(wanted):  # the calibration photos are among the decoded tuning photos
            return self.tuning_arrays(preprocessing)[index]
        return samples_arrays(self.calibration, preprocessing)

    def _make(self, name: str) -> _Source:
        if name == "float":
            return _Source("float", self.model, self.preprocessing, {"source": "the trained float model"},
                           onnx_fp32=self.float_onnx)
        if name == "distilled" and len(self.tuning) < self.config.distill_min_train_photos:
            raise _Skipped(
                f"{len(self.tuning)} training photos < distill_min_train_photos "
                f"{self.config.distill_min_train_photos}: a student would learn the photos, not the task"
            )
        teacher = model_probabilities(self.model, self.tuning_arrays(self.preprocessing))
        if name == "pruned":
            student, details = prune_to_macs(
                self.model, input_size=self.preprocessing.input_size, macs_ratio=self.config.prune_macs_ratio,
                num_classes=len(self.labels),
            )
            details["fine_tune"] = student_train(
                student, inputs=self.tuning_arrays(self.preprocessing), teacher=teacher, targets=self.tuning_y,
                config=self.config, train_batchnorm=False,
            )
            return _Source("pruned", student, self.preprocessing, details)
        if name == "distilled":
            student, preprocessing, details = student_make(
                self.model, preprocessing=self.preprocessing, num_classes=len(self.labels), config=self.config
            )
            details["fine_tune"] = student_train(
                student, inputs=self.tuning_arrays(preprocessing), teacher=teacher, targets=self.tuning_y,
                config=self.config, train_batchnorm=True,
            )
            return _Source("distilled", student, preprocessing, details)
        raise PipelineError(f"unknown source {name!r}")


def _build(*, source: _Source, variant: str, fmt: str, sources: _Sources) -> BuiltFile:
    """Write one file for (variant, format) and say how it was made."""
    from training.ml import export, export_mobile
    from training.ml.formats import format_spec

    precision = variant_precision(variant)
    path = sources.out_dir / format_spec(fmt).file_name(variant)
    details = {**source.details}
    pre = source.preprocessing
    if fmt == "tflite":
        calibration = sources.calibration_arrays(pre) if precision == "int8" else None
        export_mobile.tflite_export(model=source.model, path=path, input_size=pre.input_size, precision=precision,
                                    calibration=calibration, float_stem_convs=FLOAT_STEM_CONVS,
                                    input_range=export_mobile.input_value_range(pre))
        details["tflite"] = _TFLITE_METHODS[precision]
        if calibration is not None:
            details["tflite"] = {"method": _TFLITE_METHODS[precision], "calibration_photos": len(calibration)}
    elif fmt == "mlpackage":
        export_mobile.coreml_export(model=source.model, path=path, preprocessing=pre, labels=sources.labels,
                                    variant=variant)
        details["coreml"] = _COREML_METHODS.get(variant) or _COREML_METHODS["pal"].format(bits=precision[3:])
    elif fmt == "onnx":
        if source.onnx_fp32 is None:
            source.onnx_fp32 = export.onnx_export(
                model=source.model, path=sources.out_dir / f"{source.name}-fp32.onnx", preprocessing=pre,
                labels=sources.labels, metadata={"variant": source.name},
            )
        if precision == "fp32":
            path = source.onnx_fp32
        elif precision == "fp16":
            onnx_fp16_weights(source=source.onnx_fp32, path=path)
            details["fp16"] = "weights stored as float16, cast to float32 at load (compute stays fp32)"
        else:
            calibration = sources.calibration_arrays(pre)
            onnx_int8(source=source.onnx_fp32, path=path, calibration=calibration)
            details["int8"] = {
                "method": "onnxruntime quantize_static QDQ, per-channel s8 weights, u8 activations; "
                "stem and head in float",
                "calibration_photos": len(calibration),
            }
    else:
        if precision == "fp32":
            pte_export(model=source.model, path=path, input_size=pre.input_size)
        else:
            calibration = sources.calibration_arrays(pre)
            pte_int8(model=source.model, path=path, input_size=pre.input_size, calibration=calibration)
            details["int8"] = {"method": "torchao PT2E, XNNPACKQuantizer symmetric per-channel; stem and head in float",
                               "calibration_photos": len(calibration)}
    strict = None
    if fmt == "mlpackage":
        pass  # not executed here: scored by an estimate, judged by the policy's loss and agreement
    elif source.name == "float" and precision == "fp32":
        strict = ParityTolerance()
    elif source.name == "float" and precision == "fp16":
        strict = ParityTolerance(max_abs_diff=1e-2, min_agreement=0.0)  # agreement: the policy's floor
    return BuiltFile(variant, fmt, precision, Path(path), pre, details, strict)


# -- files -----------------------------------------------------------------------------------


def onnx_fp16_weights(*, source: Path, path: Path) -> Path:
    """Store every float32 weight of an ONNX file as float16, cast back to float32 when loaded.

    Half the bytes to download; onnxruntime folds the casts at load, so inference runs in
    float32 on every phone (float16 compute is not available on all of them).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from training.ml.export import onnx_single_file_save

    proto = onnx.load_model(str(source))
    casts, kept = [], []
    for initializer in proto.graph.initializer:
        if initializer.data_type == TensorProto.FLOAT and np.prod(initializer.dims, dtype=np.int64) >= 16:
            half_name = f"{initializer.name}__fp16"
            half = numpy_helper.to_array(initializer).astype(np.float16)
            kept.append(numpy_helper.from_array(half, half_name))
            casts.append(helper.make_node("Cast", [half_name], [initializer.name], to=TensorProto.FLOAT,
                                          name=f"{initializer.name}__cast"))
        else:
            kept.append(initializer)
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(casts + nodes)  # casts first: the graph stays topologically sorted
    return onnx_single_file_save(proto, Path(path))


class _ArrayReader:
    """onnxruntime calibration data: one preprocessed photo per call."""

    def __init__(self, name: str, arrays: np.ndarray):
        self._items = iter([{name: arrays[i : i + 1]} for i in range(len(arrays))])

    def get_next(self):
        return next(self._items, None)


def onnx_int8(*, source: Path, path: Path, calibration: np.ndarray) -> Path:
    """int8 static quantization of an ONNX file (QDQ), activation ranges observed on ``calibration``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from training.ml.export import onnx_single_file_save
    from training.ml.inference import INPUT_NAME

    if len(calibration) == 0:
        raise PipelineError("int8 calibration needs at least one training photo")
    prepared, quantized = Path(path).with_suffix(".pre.onnx"), Path(path).with_suffix(".q.onnx")
    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
        quantize_static(
            str(prepared), str(quantized), _ArrayReader(INPUT_NAME, calibration), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=_float_nodes(prepared),
        )
        proto = onnx.load_model(str(quantized))
        _softmax_in_float(proto)
        original = onnx.load_model(str(source), load_external_data=False)
        del proto.metadata_props[:]
        proto.metadata_props.extend(original.metadata_props)  # preprocessing and labels travel along
        return onnx_single_file_save(proto, Path(path))
    finally:
        prepared.unlink(missing_ok=True)
        quantized.unlink(missing_ok=True)


def _float_nodes(path: Path) -> list[str]:
    """The ONNX nodes an int8 file keeps in float: the stem convolutions and the classifier head.

    Measured on ants/bees (bench/compression.py): quantizing everything moved two of 153
    holdout answers (-1.3 points) in both runtimes, whatever the calibration (MinMax,
    Percentile, Entropy; 64 or 244 photos); the stem is where MobileNetV2 loses it (few
    channels, raw pixel ranges). In float: the first three convolutions were enough for
    onnxruntime, ExecuTorch's XNNPACK needed six; then int8 agreed with the float model on
    every photo in both, for about 10 KB.
    """
    import onnx

    graph = onnx.load_model(str(path), load_external_data=False).graph
    convs = [node.name for node in graph.node if node.op_type == "Conv"][:FLOAT_STEM_CONVS]
    return convs + [node.name for node in graph.node if node.op_type in ("Gemm", "MatMul")]


def _softmax_in_float(proto) -> None:
    """Run the final softmax on dequantized logits: quantized probabilities no longer sum to 1.

    quantize_static wraps the softmax in Q/DQ pairs; the pair after it is dropped (the graph
    output is the softmax's own float output) so apps get real probabilities.
    """
    graph = proto.graph
    outputs = {o.name for o in graph.output}
    producers = {out: node for node in graph.node for out in node.output}
    for name in list(outputs):
        dq = producers.get(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        softmax = producers.get(q.input[0])
        if softmax is None or softmax.op_type != "Softmax":
            continue
        graph.node.remove(q)
        graph.node.remove(dq)
        softmax.output[0] = name  # the softmax writes the graph output directly


def _example(input_size: int):
    import torch

    return (torch.randn(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0)),)


def _pte_write(program, path: Path) -> Path:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_bytes(lowered.buffer)
    tmp.replace(path)
    return Path(path)


def pte_export(*, model, path: Path, input_size: int) -> Path:
    """ExecuTorch program (batch 1, XNNPACK delegate) of a float model."""
    import torch

    with torch.no_grad():
        return _pte_write(torch.export.export(model.eval(), _example(input_size)), path)


def pte_int8(*, model, path: Path, input_size: int, calibration: np.ndarray) -> Path:
    """int8 ExecuTorch program: torchao PT2E with the XNNPACK quantizer, calibrated on ``calibration``."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if len(calibration) == 0:
        raise PipelineError("int8 calibration needs at least one training photo")
    example = _example(input_size)
    with torch.no_grad():
        graph = torch.export.export(model.eval(), example).module()
        # The stem convolutions and the classifier head stay in float, as in the ONNX file
        # (see _float_nodes for the measurement behind it).
        convs = [n for n in graph.graph.nodes if n.op == "call_function" and "conv" in str(n.target)]
        float_names = {n.name for n in convs[:FLOAT_STEM_CONVS]}
        quantizer = (
            XNNPACKQuantizer()
            .set_global(get_symmetric_quantization_config(is_per_channel=True))
            .set_module_type(torch.nn.Linear, None)
            .set_filter_function(lambda node: node.name not in float_names)
        )
        prepared = prepare_pt2e(graph, quantizer)
        for i in range(len(calibration)):
            prepared(torch.from_numpy(np.ascontiguousarray(calibration[i : i + 1])))
        converted = convert_pt2e(prepared)
        return _pte_write(torch.export.export(converted, example), path)


# -- students ----------------------------------------------------------------------------------


def prune_to_macs(model, *, input_size: int, macs_ratio: float, num_classes: int, steps: int = 20):
    """Remove whole channels (L2 magnitude, torch-pruning) until MACs <= ``macs_ratio`` x the original.

    Works on a copy. The first convolution (the sensitive one) and the classifier keep their
    channels; channel counts are rounded to multiples of 8, which XNNPACK's kernels like.
    """
    import torch
    import torch_pruning as tp
    from torch import nn

    student = copy.deepcopy(model).eval()
    student.requires_grad_(True)  # torch-pruning traces dependencies through autograd
    example = _example(input_size)[0]
    base_macs, base_params = tp.utils.count_ops_and_params(student, example)
    convs = [m for m in student.modules() if isinstance(m, nn.Conv2d)]
    ignored = [m for m in student.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    ignored += convs[:1]
    pruner = tp.pruner.MetaPruner(
        student, example, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.9,
        iterative_steps=steps, ignored_layers=ignored, round_to=8,
    )
    macs = base_macs
    for _ in range(steps):
        if macs <= macs_ratio * base_macs:
            break
        pruner.step()
        macs, params = tp.utils.count_ops_and_params(student, example)
    if macs > macs_ratio * base_macs:
        raise PipelineError(f"pruning reached only {macs / base_macs:.2f} of the MACs (target {macs_ratio})")
    params = tp.utils.count_ops_and_params(student, example)[1]
    with torch.no_grad():
        student(example)  # still runs end to end
    student.requires_grad_(False)
    return student, {
        "source": "channel-pruned float model (torch-pruning, L2 magnitude)",
        "macs": {"before": int(base_macs), "after": int(macs), "ratio": round(macs / base_macs, 3),
                 "target": macs_ratio},
        "params": {"before": int(base_params), "after": int(params)},
    }


def student_make(model, *, preprocessing: Preprocessing, num_classes: int, config: CompressionConfig):
    """The distillation student and its input: same network at a lower resolution, or a narrower one."""
    import torchvision

    from training.ml.export import ProbabilityClassifier

    if config.distill_student == "resolution":
        size = config.distill_input_size
        resize = max(size, round(size * preprocessing.resize / preprocessing.input_size))
        student_pre = dataclasses.replace(preprocessing, input_size=size, resize=resize)
        details = {"source": f"distilled student: the trained network at {size} px (teacher {preprocessing.input_size} px)"}
        return copy.deepcopy(model), student_pre, details
    net = torchvision.models.mobilenet_v2(width_mult=config.distill_width_mult, num_classes=num_classes)
    details = {"source": f"distilled student: MobileNetV2 width {config.distill_width_mult}, from scratch"}
    return ProbabilityClassifier(net), preprocessing, details


def _logits(model, x):
    """Logits of a probability model: the network before softmax when reachable, else log p."""
    import torch

    from training.ml.export import ProbabilityClassifier

    if isinstance(model, ProbabilityClassifier):
        return model.net(x)
    return torch.log(model(x).clamp_min(1e-8))


def student_train(
    student, *, inputs: np.ndarray, teacher: np.ndarray, targets: Sequence[int], config: CompressionConfig,
    train_batchnorm: bool, batch_size: int = 32, alpha: float = 0.7,
) -> dict:
    """Knowledge distillation: the student matches the teacher's softened probabilities (and the labels).

    loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy(labels), with
    random horizontal flips. ``train_batchnorm`` False keeps the BatchNorm statistics (a pruned
    network sees the same inputs as before); a student at a new resolution needs new ones.
    """
    import torch
    import torch.nn.functional as F

    if config.fine_tune_epochs == 0 or len(inputs) == 0:
        student.eval()
        return {"epochs": 0}
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    x_all = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
    soft = torch.softmax(torch.log(torch.from_numpy(teacher).clamp_min(1e-8)) / config.distill_temperature, dim=1)
    y_all = torch.as_tensor(list(targets), dtype=torch.int64)
    student.requires_grad_(True)
    params = [p for p in student.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=config.fine_tune_lr, weight_decay=1e-4)
    history = []
    started = time.perf_counter()
    for epoch in range(config.fine_tune_epochs):
        student.train(train_batchnorm)
        order = torch.randperm(len(x_all), generator=generator)
        total, seen = 0.0, 0
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            if len(index) < 2 and train_batchnorm:
                continue  # BatchNorm cannot learn statistics from one photo
            x = x_all[index]
            flip = torch.rand(len(index), generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            logits = _logits(student, x)
            kd = F.kl_div(F.log_softmax(logits / config.distill_temperature, dim=1), soft[index],
                          reduction="batchmean") * config.distill_temperature**2
            loss = alpha * kd + (1 - alpha) * F.cross_entropy(logits, y_all[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(index)
            seen += len(index)
        history.append({"epoch": epoch + 1, "loss": round(total / max(seen, 1), 5)})
    student.eval()
    student.requires_grad_(False)
    return {"epochs": config.fine_tune_epochs, "photos": len(inputs), "lr": config.fine_tune_lr,
            "temperature": config.distill_temperature, "alpha": alpha, "history": history,
            "seconds": round(time.perf_counter() - started, 2)}


# -- measuring -------------------------------------------------------------------------------


def samples_arrays(samples: Sequence, preprocessing: Preprocessing) -> np.ndarray:
    """Preprocessed photos [N, 3, S, S] float32, exactly as an app feeds them (``image_to_array``)."""
    from training.ml.images import image_batches

    size = preprocessing.input_size
    out = np.empty((len(samples), 3, size, size), dtype=np.float32)
    done = 0
    for batch in image_batches([s.open_image for s in samples], preprocessing=preprocessing, batch_size=32):
        out[done : done + len(batch)] = batch
        done += len(batch)
    return out


def model_probabilities(model, inputs: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """The torch model's probabilities [N, C] for preprocessed inputs."""
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            out.append(model(torch.from_numpy(np.ascontiguousarray(inputs[start : start + batch_size]))).float())
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, 0), dtype=np.float32)


def eager_latency(model, x1: np.ndarray, *, threads: int, runs: int) -> float:
    """Median batch-1 latency (ms) of the float model run eagerly by torch: the baseline of the card."""
    import torch

    from training.ml.runtime import torch_threads

    x = torch.from_numpy(np.ascontiguousarray(x1[:1]))
    timings = []
    with torch_threads(threads), torch.inference_mode():
        for _ in range(3):
            model(x)
        for _ in range(runs):
            t0 = time.perf_counter()
            model(x)
            timings.append(time.perf_counter() - t0)
    return float(np.median(timings) * 1e3)


def _state_dict_size(model) -> int:
    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def variant_check(
    *, built: BuiltFile, inputs: np.ndarray, reference: np.ndarray, y_true: Sequence[int], threads: int, runs: int,
    views: np.ndarray | None = None, views_reference: np.ndarray | None = None,
) -> dict:
    """Load the file's bytes with its runtime in a fresh process, run ``inputs``, compare with ``reference``.

    ``inputs`` must be the holdout as the file's manifest says to preprocess it; feeding it
    anything else is exactly the app bug this check exists to catch (the tests do that).
    ``views`` (augmented photos, preprocessed the same way) run in the same process after the
    holdout; with the holdout they make the row's ``fidelity`` (agreement with the float model's
    ``views_reference``, probability differences). Accuracy and log-loss are the holdout's.
    Returns the card row (status "measured", or "failed" when the runtime cannot run the file).
    """
    from training.ml.inference import file_sha256
    from training.ml.measure import artifact_measure
    from training.ml.parity import predictions_compare

    row = {
        "variant": built.variant, "format": built.format, "precision": built.precision,
        "file": built.path.name, "size": built.path.stat().st_size, "sha256": file_sha256(built.path),
        "preprocessing": built.preprocessing.to_manifest(), "details": built.details,
    }
    if views is None or views_reference is None:
        views = np.zeros((0, *inputs.shape[1:]), dtype=np.float32)
        views_reference = np.zeros((0, np.asarray(reference).shape[1]), dtype=np.float32)
    try:
        measured = artifact_measure(
            path=built.path, format=built.format, inputs=np.concatenate([inputs, views]), threads=threads, runs=runs
        )
    except VerificationError as exc:
        return {**row, "status": FAILED, "reason": str(exc)}
    probabilities = measured.probabilities
    all_reference = np.concatenate([np.asarray(reference, dtype=np.float32), views_reference])
    if probabilities.shape != all_reference.shape:
        return {**row, "status": FAILED, "reason": f"output shape {probabilities.shape}, expected {all_reference.shape}",
                **measured.to_dict()}
    fidelity = _fidelity(all_reference, probabilities, holdout_n=len(inputs))
    probabilities = probabilities[: len(inputs)]
    failures = []
    if probabilities.shape != np.asarray(reference).shape:
        return {**row, "status": FAILED, "reason": f"output shape {probabilities.shape}, expected {reference.shape}",
                **measured.to_dict()}
    sums = probabilities.sum(axis=1)
    if len(sums) and not np.allclose(sums, 1.0, atol=1e-3):
        failures.append(f"outputs are not probabilities (row sums {sums.min():.4f}..{sums.max():.4f})")
    compared = predictions_compare(
        reference=reference, candidate=probabilities, y_true=y_true, tolerance=built.tolerance or ParityTolerance()
    )
    if built.tolerance is not None:
        failures += compared.failures
    file_log_loss, float_log_loss = log_loss(probabilities, y_true), log_loss(reference, y_true)
    return {
        **row,
        "status": "measured",
        "accuracy": compared.accuracy,
        "accuracy_n": len(y_true),
        "log_loss": round(file_log_loss, 6),
        "log_loss_increase": round(file_log_loss - float_log_loss, 6),
        "fidelity": fidelity,
        "top1_agreement": compared.top1_agreement,
        "max_prob_diff": compared.max_abs_diff,
        "mean_prob_diff": compared.mean_abs_diff,
        "disagreements": list(compared.disagreements),
        "parity_failures": failures,
        "parity_tolerance": dataclasses.asdict(built.tolerance) if built.tolerance else None,
        **measured.to_dict(),
    }


def log_loss(probabilities: np.ndarray, y_true: Sequence[int]) -> float:
    """Mean negative log-probability of the true label (nats); probabilities clipped at 1e-7."""
    p = np.asarray(probabilities, dtype=np.float64)
    if not len(p):
        return 0.0
    picked = p[np.arange(len(p)), np.asarray(y_true, dtype=np.int64)]
    return float(-np.log(np.clip(picked, 1e-7, 1.0)).mean())


def _fidelity(reference: np.ndarray, candidate: np.ndarray, *, holdout_n: int) -> dict:
    """Top-1 disagreements (holdout, views) and probability differences, float model vs file."""
    ref, cand = np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    differ = ref.argmax(axis=1) != cand.argmax(axis=1)
    diff = np.abs(cand - ref)
    kl = (ref * (np.log(np.clip(ref, 1e-7, 1.0)) - np.log(np.clip(cand, 1e-7, 1.0)))).sum(axis=1)
    return fidelity_summary(
        holdout_n=holdout_n, holdout_disagree=int(differ[:holdout_n].sum()),
        views_n=len(ref) - holdout_n, views_disagree=int(differ[holdout_n:].sum()),
        mean_prob_diff=round(float(diff.mean()), 6) if len(diff) else 0.0,
        max_prob_diff=round(float(diff.max()), 6) if len(diff) else 0.0,
        mean_kl=round(float(kl.mean()), 6) if len(kl) else 0.0,
    )


def augmented_views(samples: Sequence, *, per_photo: int, seed: int) -> list:
    """``per_photo`` augmented views of each sample (random crop, flip, brightness, contrast), as Samples.

    Deterministic: each view's randomness comes from ``seed`` and the sample's key, so the same
    photos give the same views every night, whatever else is in the set.
    """
    from training.ml.pipeline import Sample

    views = []
    for sample in samples:
        for index in range(per_photo):
            digest = hashlib.sha256(f"{seed}:{sample.key}:{index}".encode()).digest()
            views.append(
                Sample(
                    key=f"{sample.key}#view{index}", label=sample.label, split="view",
                    open_image=functools.partial(_view_open, sample.open_image, int.from_bytes(digest[:8], "big")),
                )
            )
    return views


def _view_open(open_image, seed: int):
    """One augmented view: a crop of 60-100% of the area (aspect 3:4-4:3), maybe mirrored, light changed."""
    from PIL import ImageEnhance

    from training.ml.images import image_rgb

    rng = np.random.default_rng(seed)
    image = image_rgb(open_image() if callable(open_image) else open_image)
    w, h = image.size
    area = rng.uniform(0.6, 1.0) * w * h
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    cw = int(round(min(w, max(1.0, np.sqrt(area * aspect)))))
    ch = int(round(min(h, max(1.0, np.sqrt(area / aspect)))))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    view = image.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    view = ImageEnhance.Brightness(view).enhance(rng.uniform(0.7, 1.3))
    return ImageEnhance.Contrast(view).enhance(rng.uniform(0.7, 1.3))


def coreml_check(
    *, built: BuiltFile, model, inputs: np.ndarray, reference: np.ndarray, y_true: Sequence[int], offer_unexecuted: bool,
    views: np.ndarray | None = None, views_reference: np.ndarray | None = None,
) -> dict:
    """The card row of a Core ML file: its structure checked here, its accuracy estimated in torch.

    Core ML does not run on Linux. The stored bytes are unzipped and read with
    ``skip_model_load`` (input name and shape against the manifest, labels, weight bit width);
    the accuracy and agreement are those of the torch model carrying the same fp16 or k-means
    palettized weights (``palettize_torch``), marked as estimates. Unless the policy offers
    unexecuted files, the row is rejected with the reason.
    """
    from training.ml.export_mobile import PALETTE_GROUP_SIZE, palettize_torch
    from training.ml.formats import PALETTE_BITS, STRUCTURE_ONLY, mlpackage_inspect
    from training.ml.inference import INPUT_NAME, file_sha256
    from training.ml.parity import predictions_compare

    row = {
        "variant": built.variant, "format": built.format, "precision": built.precision,
        "file": built.path.name, "size": built.path.stat().st_size, "sha256": file_sha256(built.path),
        "preprocessing": built.preprocessing.to_manifest(), "details": built.details,
    }
    try:
        structure = mlpackage_inspect(built.path.read_bytes())
    except VerificationError as exc:
        return {**row, "status": FAILED, "reason": str(exc)}
    size = built.preprocessing.input_size
    problems = []
    first = structure["inputs"][0] if structure["inputs"] else {}
    if first.get("name") != INPUT_NAME or first.get("shape") != [1, 3, size, size]:
        problems.append(f"input {first} is not {INPUT_NAME} [1, 3, {size}, {size}]")
    if structure["labels"] is None or len(structure["labels"]) != reference.shape[1]:
        problems.append(f"labels {structure['labels']} do not match the {reference.shape[1]} outputs")
    embedded = structure["metadata"].get("preprocessing")
    if embedded is None or json.loads(embedded) != json.loads(json.dumps(built.preprocessing.to_manifest())):
        problems.append("the embedded preprocessing differs from the manifest's")
    # The estimate palettizes what the file should hold: its fewest bits and channels per table.
    estimator = palettize_torch(model, bits=PALETTE_BITS.get(built.variant))
    bits = min(estimator.palette_bits, default=16)
    if structure["weight_bits"] != bits:
        problems.append(f"stored weights have {structure['weight_bits']} bits, the variant promises {bits}")
    if bits < 16 and structure["palette_groups"] != ([PALETTE_GROUP_SIZE] if PALETTE_GROUP_SIZE else []):
        problems.append(f"look-up tables cover {structure['palette_groups'] or 'whole tensors'} output channels, "
                        f"the estimate {PALETTE_GROUP_SIZE or 'whole tensors'}")
    if problems:
        return {**row, "status": FAILED, "reason": "; ".join(problems), "structure": structure}
    estimate = model_probabilities(estimator, inputs)
    compared = predictions_compare(reference=reference, candidate=estimate, y_true=y_true)
    # The same evidence as an executed file's (variant_check): the views, then the holdout's log-loss.
    if views is not None and views_reference is not None and len(views):
        fidelity = _fidelity(np.concatenate([np.asarray(reference, dtype=np.float32), views_reference]),
                             np.concatenate([estimate, model_probabilities(estimator, views)]), holdout_n=len(inputs))
    else:
        fidelity = _fidelity(reference, estimate, holdout_n=len(inputs))
    estimate_log_loss = log_loss(estimate, y_true)
    blocked = [] if offer_unexecuted else [
        f"{STRUCTURE_ONLY}; the project's policy does not offer files that were not executed"
    ]
    return {
        **row,
        "status": "measured",
        "executed": False,
        "note": STRUCTURE_ONLY,
        "estimated": True,
        "estimate": "accuracy and agreement of the torch model with the same stored weights "
                    "(fp16 or k-means palettized), computed in float32: Core ML does not run on this host",
        "accuracy": compared.accuracy,
        "accuracy_n": len(y_true),
        "log_loss": round(estimate_log_loss, 6),
        "log_loss_increase": round(estimate_log_loss - log_loss(reference, y_true), 6),
        "fidelity": fidelity,
        "top1_agreement": compared.top1_agreement,
        "max_prob_diff": compared.max_abs_diff,
        "mean_prob_diff": compared.mean_abs_diff,
        "disagreements": list(compared.disagreements),
        "parity_failures": blocked,
        "parity_tolerance": None,
        "latency_ms": None,
        "load_ms": None,
        "peak_memory_mb": None,
        "weight_bits": structure["weight_bits"],
        "structure": {key: structure[key]
                      for key in ("inputs", "outputs", "labels", "weight_bits", "palette_groups")},
    }


def _row_unbuilt(variant: str, fmt: str, *, status: str, reason: str) -> dict:
    return {"variant": variant, "format": fmt, "precision": variant_precision(variant), "status": status,
            "reason": reason, "size": None, "sha256": None, "details": {}}


def _in_plan_order(rows: list[dict], plan: list[tuple[str, str]]) -> list[dict]:
    order = {key: i for i, key in enumerate(plan)}
    return sorted(rows, key=lambda r: order.get((r["variant"], r["format"]), len(order)))


def _ratios(rows: list[dict], *, eager_ms: float) -> list[dict]:
    """Size against the fp32 file of the same format; latency against the float model run eagerly."""
    fp32 = {r["format"]: r["size"] for r in rows if r["variant"] == "fp32" and r.get("size")}
    out = []
    for row in rows:
        row = dict(row)
        if row.get("size") and fp32.get(row["format"]):
            row["size_ratio"] = round(row["size"] / fp32[row["format"]], 4)
        if row.get("latency_ms") and eager_ms > 0:
            row["latency_ratio"] = round(row["latency_ms"] / eager_ms, 4)
        out.append(row)
    return out


def _stratified(samples: Sequence, *, limit: int) -> list:
    """At most ``limit`` samples, labels keeping their shares, picked by key order (deterministic)."""
    ordered = sorted(samples, key=lambda s: s.key)
    if len(ordered) <= limit:
        return ordered
    by_label: dict[int, list] = {}
    for s in ordered:
        by_label.setdefault(s.label, []).append(s)
    picked = []
    for group in by_label.values():
        take = max(1, round(limit * len(group) / len(ordered)))
        step = len(group) / take
        picked += [group[int(i * step)] for i in range(min(take, len(group)))]
    return sorted(picked, key=lambda s: s.key)[: max(limit, len(by_label))]
