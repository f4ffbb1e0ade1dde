"""LiteRT (.tflite) and Core ML (.mlpackage) files: built, loaded from their bytes, judged by the policy.

A tiny CNN keeps the conversions in seconds; the real MobileNetV2 on ants and bees runs in
bench/compression.py and in the slow nightly test (tests/training/test_nightly.py).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from training.ml.card import OFFERED, REJECTED, SKIPPED
from training.ml.config import CompressionConfig
from training.ml.formats import STRUCTURE_ONLY, format_of_filename, format_spec, mlpackage_unzip

from .test_ml_compress import LABELS, PRE, _samples, _tiny_model

# One view of each photo plus the holdout: enough witnesses to show < 5% disagreement when none
# disagree (< 1% would need 268 photos: tests/ml/test_ml_compress.py).
CONFIG = CompressionConfig(variants=("fp32", "fp16", "int8"), formats=("tflite",), coreml_variants=("fp16", "pal4"),
                           calibration_photos=16, latency_runs=5, max_disagreement=0.05)


def _run(tmp_path, config: CompressionConfig, model=None):
    from training.ml.compress import compression_pipeline

    samples = _samples()
    return compression_pipeline(
        model=model or _tiny_model(), float_onnx=tmp_path / "unused.onnx", labels=LABELS, preprocessing=PRE,
        train=[s for s in samples if s.split == "train"], holdout=[s for s in samples if s.split == "holdout"],
        out_dir=tmp_path / "out", config=config,
    )


@pytest.fixture(scope="module", autouse=True)
def _every_weight_at_the_variants_bits():
    """The tiny CNN's weights are all below PALETTE_LOW_BITS_MIN_ELEMENTS: palettize them at the
    variant's bits here, so the tests see 4-bit tables (the 8-bit rule has its own test)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("training.ml.export_mobile.PALETTE_LOW_BITS_MIN_ELEMENTS", 0)
        yield


@pytest.fixture(scope="module")
def mobile(tmp_path_factory):
    """TFLite fp32/fp16/int8 and Core ML fp16/pal4 of the tiny model, built and measured once."""
    model, tmp_path = _tiny_model(), tmp_path_factory.mktemp("mobile")
    with pytest.MonkeyPatch.context() as patch:
        # The tiny CNN has 3 convolutions: with MobileNetV2's 6 in float, no int8 one would be left.
        patch.setattr("training.ml.compress.FLOAT_STEM_CONVS", 1)
        result = _run(tmp_path, CONFIG, model=model)
    return result, model, {(r["variant"], r["format"]): r for r in result.card["variants"]}, tmp_path / "out"


def test_tflite_files_are_measured_by_litert_from_their_bytes_and_offered_within_the_loss(mobile):
    result, _, rows, _ = mobile
    json.dumps(result.card, allow_nan=False)  # JSON-ready
    for variant in ("fp32", "fp16", "int8"):
        row = rows[(variant, "tflite")]
        assert row["status"] == OFFERED, row
        assert row["file"] == f"{variant}.tflite"
        assert row["accuracy"] == pytest.approx(result.card["float"]["accuracy"], abs=0.01)
        assert row["top1_agreement"] >= 0.95 and row["latency_ms"] > 0 and row["peak_memory_mb"] >= 0
        tensors = row["tensors"]
        assert tensors["inputs"][0]["shape"] == [1, 3, PRE.input_size, PRE.input_size]
        assert tensors["outputs"][0]["shape"] == [1, len(LABELS)] and tensors["outputs"][0]["dtype"] == "float32"
    # fp32 files are held to the strict parity tolerance; fp16 halves the weights, int8 quarters them
    assert rows[("fp32", "tflite")]["max_prob_diff"] < 1e-3
    assert rows[("fp16", "tflite")]["size_ratio"] < 0.8
    assert rows[("int8", "tflite")]["size_ratio"] < rows[("fp16", "tflite")]["size_ratio"]
    # int8 input: the int8 file takes the scale and zero point apps must apply
    quantized = rows[("int8", "tflite")]["tensors"]["inputs"][0]
    assert quantized["dtype"] == "int8" and quantized["quantization"]["scale"] > 0
    assert rows[("fp32", "tflite")]["tensors"]["inputs"][0]["quantization"] is None
    assert result.card["recommended"]["tflite"] == "int8" and result.published
    shipped = {a.variant: a for a in result.artifacts if a.format == "tflite"}
    assert shipped["int8"].extension == "tflite" and shipped["int8"].recommended


def test_the_int8_tflite_file_runs_in_litert_like_the_torch_model(mobile):
    import torch
    from ai_edge_litert.interpreter import Interpreter

    from training.ml.compress import samples_arrays

    result, model, _, _ = mobile
    artifact = next(a for a in result.artifacts if (a.format, a.variant) == ("tflite", "int8"))
    interpreter = Interpreter(model_content=artifact.path.read_bytes())  # as an app holds it
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = source["quantization"]
    holdout = [s for s in _samples() if s.split == "holdout"]
    x = samples_arrays(holdout, PRE)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy().argmax(axis=1)
    answers = []
    for i in range(len(x)):
        q = np.clip(np.round(x[i : i + 1] / scale + zero_point), -128, 127).astype(np.int8)
        interpreter.set_tensor(source["index"], q)
        interpreter.invoke()
        answers.append(int(interpreter.get_tensor(target["index"]).argmax()))
    assert (np.array(answers) == expected).mean() >= 0.95


def _tflite_ops(payload: bytes) -> list[tuple[str, list[str]]]:
    """(operator, dtypes of its inputs) for each operator of a .tflite file, in execution order."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools.flatbuffer_utils import read_model_from_bytearray

    ops = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = read_model_from_bytearray(bytearray(payload))
    graph = model.subgraphs[0]
    return [(ops[model.operatorCodes[op.opcodeIndex].builtinCode],
             [types[graph.tensors[i].type] for i in op.inputs if i >= 0]) for op in graph.operators]


def test_the_int8_tflite_file_keeps_the_stem_and_head_in_float_behind_an_int8_input(mobile):
    """As in the ONNX and pte int8 files: the first convolutions and the classifier run in float
    (MobileNetV2 lost 11.8 points on ants/bees with them quantized), everything between in int8."""
    result = mobile[0]
    payload = next(a for a in result.artifacts if (a.format, a.variant) == ("tflite", "int8")).path.read_bytes()
    ops = _tflite_ops(payload)
    convs = [inputs for name, inputs in ops if name == "CONV_2D"]
    assert [c[1] for c in convs] == ["FLOAT32", "INT8", "INT8"]  # weights: stem (1 here) float, the rest int8
    assert [inputs for name, inputs in ops if name == "FULLY_CONNECTED"] == [["FLOAT32"] * 3]
    assert ops[0] == ("TRANSPOSE", ["INT8", "INT32"])  # the input layout change runs on the int8 input
    # The input's range is what preprocessing can produce (-1..1 here), not the photos' range:
    # a white pixel is not clipped, and the step is one 8-bit pixel level.
    q = next(r for r in result.card["variants"] if (r["variant"], r["format"]) == ("int8", "tflite"))
    scale, zero_point = (q["tensors"]["inputs"][0]["quantization"][k] for k in ("scale", "zero_point"))
    assert scale == pytest.approx(2 / 255, rel=1e-3)
    assert -128 <= round(-1 / scale + zero_point) and round(1 / scale + zero_point) <= 127


def test_equal_quantization_vectors_are_stored_once_and_the_model_is_unchanged(mobile):
    """Per-channel zero points are all 0: the shipped int8 file stores each length once."""
    from ai_edge_litert.tools.flatbuffer_utils import convert_object_to_bytearray, read_model_from_bytearray

    from training.ml.compress import samples_arrays
    from training.ml.export_mobile import tflite_shared_quantization
    from training.ml.formats import tflite_interpreter, tflite_runner, tflite_tensors

    result = mobile[0]
    shipped = next(a for a in result.artifacts if (a.format, a.variant) == ("tflite", "int8")).path.read_bytes()
    unshared = bytes(convert_object_to_bytearray(read_model_from_bytearray(bytearray(shipped))))
    # Two int8 convolutions of 32 channels: weights and biases carry four int64 zero vectors of 32, one is kept.
    assert len(unshared) - len(shipped) >= 3 * 32 * 8
    assert len(tflite_shared_quantization(unshared)) == len(shipped)
    assert tflite_tensors(tflite_interpreter(unshared)) == tflite_tensors(tflite_interpreter(shipped))
    x = samples_arrays([s for s in _samples() if s.split == "holdout"][:4], PRE)
    plain, shared = tflite_runner(unshared), tflite_runner(shipped)
    for i in range(len(x)):
        np.testing.assert_array_equal(shared(x[i : i + 1]), plain(x[i : i + 1]))


def test_core_ml_packages_are_checked_in_structure_and_not_offered_unless_the_policy_says(mobile):
    result, _, rows, _ = mobile
    for variant, bits in (("fp16", 16), ("pal4", 4)):
        row = rows[(variant, "mlpackage")]
        assert row["status"] == REJECTED and STRUCTURE_ONLY in row["reason"]
        assert row["executed"] is False and row["estimated"] is True and row["note"] == STRUCTURE_ONLY
        assert row["weight_bits"] == bits and row["latency_ms"] is None
        assert row["structure"]["labels"] == list(LABELS)
        assert row["structure"]["inputs"][0]["name"] == "input"
        assert row["accuracy"] == pytest.approx(result.card["float"]["accuracy"], abs=0.05)
        assert row["file"] == f"{variant}.mlpackage.zip"
    assert rows[("pal4", "mlpackage")]["size"] < rows[("fp16", "mlpackage")]["size"]
    assert not any(a.format == "mlpackage" for a in result.artifacts)
    assert "mlpackage" not in result.card["recommended"]


def test_a_policy_that_offers_unexecuted_files_offers_a_core_ml_package_within_the_loss(mobile, tmp_path):
    from training.ml.card import policy_apply
    from training.ml.compress import BuiltFile, coreml_check, model_probabilities, samples_arrays

    result, model, _, out_dir = mobile
    holdout = [s for s in _samples() if s.split == "holdout"]
    x = samples_arrays(holdout, PRE)
    reference = model_probabilities(model, x)
    built = BuiltFile("pal4", "mlpackage", "pal4", out_dir / "pal4.mlpackage.zip", PRE, {}, None)
    row = coreml_check(built=built, model=model, inputs=x, reference=reference, y_true=[s.label for s in holdout],
                       offer_unexecuted=True)
    [decided] = policy_apply([row], float_accuracy=result.card["float"]["accuracy"], max_accuracy_loss=0.05,
                             min_agreement=0.9, max_disagreement=0.2)  # 20 holdout photos only
    assert decided["status"] == OFFERED and decided["note"] == STRUCTURE_ONLY


def test_a_package_whose_input_does_not_match_the_manifest_fails(mobile, tmp_path):
    import dataclasses

    from training.ml.compress import BuiltFile, coreml_check, model_probabilities, samples_arrays

    _, model, _, out_dir = mobile
    path = out_dir / "fp16.mlpackage.zip"
    other = dataclasses.replace(PRE, input_size=40, resize=48)  # what the file says it is not
    holdout = [s for s in _samples() if s.split == "holdout"]
    x = samples_arrays(holdout, other)
    row = coreml_check(built=BuiltFile("fp16", "mlpackage", "fp16", path, other, {}, None), model=model, inputs=x,
                       reference=model_probabilities(model, x), y_true=[s.label for s in holdout],
                       offer_unexecuted=True)
    assert row["status"] == "failed" and "input" in row["reason"]


def test_the_zipped_package_holds_one_mlpackage_with_preprocessing_and_labels(mobile, tmp_path):
    out_dir = mobile[3]
    folder = mlpackage_unzip((out_dir / "pal4.mlpackage.zip").read_bytes(), tmp_path)
    assert folder.name.endswith(".mlpackage") and (folder / "Manifest.json").is_file()
    assert format_of_filename("x-v3-pal4.mlpackage.zip") is format_spec("mlpackage")
    with pytest.raises(Exception, match="zip"):
        mlpackage_unzip(b"not a zip", tmp_path / "bad")


@pytest.mark.parametrize(("module", "fmt", "package"), [("litert_torch", "tflite", "litert-torch"),
                                                       ("coremltools", "mlpackage", "coremltools")])
def test_a_missing_converter_skips_its_format_with_a_clear_reason_and_the_night_goes_on(
    tmp_path, monkeypatch, module, fmt, package
):
    from training.ml.compress import compression_pipeline
    from training.ml.export import onnx_export

    monkeypatch.setitem(sys.modules, module, None)  # "import module" raises ImportError
    model = _tiny_model()
    samples = _samples(train=8, holdout=4)
    float_onnx = onnx_export(model=model, path=tmp_path / "model.onnx", preprocessing=PRE, labels=LABELS)
    result = compression_pipeline(
        model=model, float_onnx=float_onnx, labels=LABELS, preprocessing=PRE,
        train=[s for s in samples if s.split == "train"], holdout=[s for s in samples if s.split == "holdout"],
        out_dir=tmp_path / "out",
        config=CompressionConfig(variants=("fp32",), formats=("onnx",) + ((fmt,) if fmt == "tflite" else ()),
                                 coreml_variants=("pal4",) if fmt == "mlpackage" else (), latency_runs=3),
    )
    skipped = [r for r in result.card["variants"] if r["format"] == fmt]
    assert skipped and all(r["status"] == SKIPPED for r in skipped)
    assert all(f"{package} is not installed" in r["reason"] for r in skipped)
    assert result.published  # the ONNX file still ships
    assert [a.format for a in result.artifacts] == ["onnx"]


def test_palettized_torch_weights_take_2_to_the_bits_values_and_lose_more_with_fewer_bits():
    import torch

    from training.ml.export_mobile import kmeans_1d, palettize_torch

    weights = np.random.default_rng(0).normal(size=5000)
    errors = {}
    for bits in (2, 4, 8):
        palette, index = kmeans_1d(weights, 2**bits)
        assert len(palette) == 2**bits and index.max() < 2**bits
        errors[bits] = float(np.abs(palette[index] - weights).mean())
    assert errors[8] < errors[4] < errors[2]
    model = _tiny_model()
    pal2 = palettize_torch(model, bits=2, min_elements=100, group_size=None, low_bits_min_elements=0)
    conv = pal2.net[3].weight  # 32x16x3x3: palettized; the stem (16x3x3x3 = 432) too
    assert torch.unique(conv).numel() <= 4 and pal2.palette_bits == [2]
    assert torch.equal(model.net[3].weight, _tiny_model().net[3].weight)  # the original is untouched
    # BatchNorm is folded into the convolutions first (as the Core ML converter does), so the
    # palettes are fitted to the weights the file stores; folding alone changes no answer.
    assert isinstance(pal2.net[1], torch.nn.Identity) and isinstance(model.net[1], torch.nn.BatchNorm2d)
    x = torch.randn(4, 3, PRE.input_size, PRE.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(palettize_torch(model, bits=None)(x), model(x), atol=1e-2)


def test_the_reference_client_runs_the_tflite_files_as_the_server_measured_them(mobile, monkeypatch):
    """mobile_api/client.py (self-contained, what apps port) quantizes the int8 input the same way."""
    import importlib.util
    from pathlib import Path

    from ai_edge_litert.interpreter import Interpreter

    from training.ml.compress import samples_arrays
    from training.ml.formats import tflite_runner

    client_path = Path(__file__).resolve().parents[2] / "mobile_api" / "client.py"
    spec = importlib.util.spec_from_file_location("model_client_tflite", client_path)
    client = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, client)  # its dataclasses look their module up
    spec.loader.exec_module(client)
    result = mobile[0]
    x = samples_arrays([s for s in _samples() if s.split == "holdout"][:4], PRE)
    for artifact in (a for a in result.artifacts if a.format == "tflite"):
        interpreter = Interpreter(model_path=str(artifact.path))
        interpreter.allocate_tensors()
        server = tflite_runner(artifact.path.read_bytes())
        for i in range(len(x)):
            app = client.tflite_invoke(interpreter, x[i : i + 1]).reshape(1, -1)
            np.testing.assert_allclose(app, server(x[i : i + 1]), atol=1e-6)


def test_grouped_palettes_follow_coremltools_rules_and_cost_less_than_one_palette_per_tensor():
    """One table per 16 output channels (as per_grouped_channel builds them); 8 bits below the size rule."""
    import torch

    from training.ml.export_mobile import palettize_torch

    model = _tiny_model()
    grouped = palettize_torch(model, bits=2, min_elements=100, group_size=16, low_bits_min_elements=0)
    conv = grouped.net[3].weight.reshape(2, -1)  # 32 output channels: two groups of 16
    assert all(torch.unique(group).numel() <= 4 for group in conv) and torch.unique(conv).numel() > 4
    # A weight whose output channels 16 does not divide (the 2-class head) stays fp16, as coremltools skips it.
    head = model.net[11].weight
    assert torch.equal(grouped.net[11].weight, head.half().float())
    # Smaller than low_bits_min_elements: 8-bit tables instead of 2-bit ones.
    mixed = palettize_torch(model, bits=2, min_elements=100, group_size=16, low_bits_min_elements=5000)
    assert mixed.palette_bits == [2, 8]  # 32x16x3x3 (4608) at 8 bits, 32x32x3x3 (9216) at 2
    assert torch.unique(mixed.net[3].weight.reshape(2, -1)[0]).numel() > 4
    assert torch.unique(mixed.net[6].weight.reshape(2, -1)[0]).numel() <= 4
    # Two tables of 4 values fit the folded weights closer than one table for the whole tensor.
    folded = palettize_torch(model, bits=None).net[6].weight
    per_tensor = palettize_torch(model, bits=2, min_elements=100, group_size=None, low_bits_min_elements=0)
    error = {name: float(((m.net[6].weight - folded) ** 2).mean()) for name, m in (
        ("tensor", per_tensor), ("grouped", grouped))}
    assert error["grouped"] < error["tensor"]


def test_the_structure_check_reads_grouped_palettes_and_refuses_a_package_that_differs(mobile, tmp_path):
    import shutil

    from training.ml.compress import BuiltFile, coreml_check, model_probabilities, samples_arrays
    from training.ml.export_mobile import coreml_export
    from training.ml.formats import mlpackage_inspect

    result, model, rows, out_dir = mobile
    package = mlpackage_inspect((out_dir / "pal4.mlpackage.zip").read_bytes())
    # Grouped tables: the iOS 18 opset, 16 channels per table, 4-bit indices.
    assert package["palette_groups"] == [16] and package["weight_bits"] == 4
    assert rows[("pal4", "mlpackage")]["structure"]["palette_groups"] == [16]
    holdout = [s for s in _samples() if s.split == "holdout"]
    x = samples_arrays(holdout, PRE)
    reference = model_probabilities(model, x)
    # A package palettized per tensor is not what the estimate scored: the row fails, naming why.
    per_tensor = tmp_path / "pal4.mlpackage.zip"
    coreml_export(model=model, path=per_tensor, preprocessing=PRE, labels=LABELS, variant="pal4", group_size=None)
    assert mlpackage_inspect(per_tensor.read_bytes())["palette_groups"] == []
    built = BuiltFile("pal4", "mlpackage", "pal4", per_tensor, PRE, {}, None)
    per_tensor_row = coreml_check(built=built, model=model, inputs=x, reference=reference,
                                  y_true=[s.label for s in holdout], offer_unexecuted=True)
    assert per_tensor_row["status"] == "failed"
    assert "look-up tables cover whole tensors output channels, the estimate 16" in per_tensor_row["reason"]
    shutil.copy(out_dir / "pal4.mlpackage.zip", tmp_path / "grouped.zip")
    row = coreml_check(built=BuiltFile("pal2", "mlpackage", "pal2", tmp_path / "grouped.zip", PRE, {}, None),
                       model=model, inputs=x, reference=reference, y_true=[s.label for s in holdout],
                       offer_unexecuted=True)
    assert row["status"] == "failed" and "stored weights have 4 bits, the variant promises 2" in row["reason"]
    # Weights below low_bits_min_elements keep 8-bit tables in the file too: a bigger package.
    mixed = tmp_path / "mixed.mlpackage.zip"
    coreml_export(model=model, path=mixed, preprocessing=PRE, labels=LABELS, variant="pal4", low_bits_min_elements=5000)
    assert mlpackage_inspect(mixed.read_bytes())["weight_bits"] == 4  # the 32x32x3x3 weight (9216)
    assert mixed.stat().st_size > (out_dir / "pal4.mlpackage.zip").stat().st_size
