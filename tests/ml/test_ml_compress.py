"""Compression: every variant built, loaded back by its own runtime, measured; the policy decides.

A tiny CNN on coloured photos keeps these in seconds per file; the real MobileNetV2 on ants and
bees runs in the benchmark (bench/compression.py) and in the slow nightly test
(tests/training/test_nightly.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from functools import partial

import numpy as np
import pytest
from PIL import Image

from training.ml.card import OFFERED, REJECTED
from training.ml.config import IMAGENET_MEAN, IMAGENET_STD, CompressionConfig, Preprocessing
from training.ml.pipeline import Sample

PRE = Preprocessing(input_size=48, resize=56)
LABELS = ("red", "blue")


def _photo(label: int, i: int) -> Image.Image:
    rng = np.random.default_rng(1000 * label + i)
    base = np.array([200, 40, 40] if label == 0 else [40, 40, 200], dtype=np.float32)
    pixels = np.clip(base + rng.normal(0, 40, size=(60, 70, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _samples(train: int = 24, holdout: int = 10) -> list[Sample]:
    out = []
    for label in (0, 1):
        for i in range(train + holdout):
            out.append(Sample(key=f"{label}/{i:03d}", label=label, split="train" if i < train else "holdout",
                              open_image=partial(_photo, label, i)))
    return out


def _tiny_model(seed: int = 0):
    """A small trained CNN (ProbabilityClassifier, like the real job's model)."""
    import torch
    from torch import nn

    from training.ml.compress import samples_arrays
    from training.ml.export import ProbabilityClassifier

    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 2),
    )
    train = [s for s in _samples() if s.split == "train"]
    x = torch.from_numpy(samples_arrays(train, PRE))
    y = torch.tensor([s.label for s in train])
    optimiser = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(30):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimiser.step()
    model = ProbabilityClassifier(net).eval()
    model.requires_grad_(False)
    return model


def _float_onnx(model, tmp_path):
    from training.ml.export import onnx_export

    return onnx_export(model=model, path=tmp_path / "model.onnx", preprocessing=PRE, labels=LABELS)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    """Every variant in both formats (the student at 32 px), measured once for the tests below."""
    from training.ml.compress import compression_pipeline

    tmp_path = tmp_path_factory.mktemp("compress")
    model = _tiny_model()
    samples = _samples()
    stages = []
    result = compression_pipeline(
        model=model, float_onnx=_float_onnx(model, tmp_path), labels=LABELS, preprocessing=PRE,
        train=[s for s in samples if s.split == "train"], holdout=[s for s in samples if s.split == "holdout"],
        out_dir=tmp_path / "out",
        # One view of each of the 68 photos plus the 20 holdout photos: 88 witnesses, enough to
        # show < 5% disagreement when none disagree (< 1% would need 268: see the test below).
        config=CompressionConfig(formats=("onnx", "pte"), distill_min_train_photos=10, distill_input_size=32, prune_macs_ratio=0.6,
                                 calibration_photos=16, fine_tune_epochs=2, latency_runs=5, max_disagreement=0.05),
        progress=lambda stage, fraction: stages.append(stage),
    )
    return result, model, stages


def test_every_variant_and_format_is_built_measured_and_offered_within_the_loss(compressed):
    result, _, stages = compressed
    card = json.loads(json.dumps(result.card, allow_nan=False))  # JSON-ready
    built = {(r["variant"], r["format"]): r for r in card["variants"]}
    expected = {(v, f) for v in ("fp32", "int8", "pruned", "pruned-int8", "distilled", "distilled-int8")
                for f in ("onnx", "pte")} | {("fp16", "onnx")}
    assert set(built) == expected
    for row in card["variants"]:
        assert row["status"] == OFFERED, row  # red vs blue: nothing loses accuracy
        assert row["accuracy"] == pytest.approx(card["float"]["accuracy"], abs=0.01)
        assert row["latency_ms"] > 0 and row["threads"] == 1 and row["peak_memory_mb"] >= 0
        assert row["top1_agreement"] >= 0.95
        # Each figure says what it rests on: the holdout for accuracy; holdout + views for fidelity.
        assert row["accuracy_n"] == 20 and row["fidelity"]["holdout"]["n"] == 20
        assert row["fidelity"]["views"]["n"] == 68 and row["fidelity"]["n"] == 88
        assert row["log_loss_increase"] <= 0.05 and row["fidelity"]["mean_kl"] >= 0
    # Shrinking really shrinks: fp16 halves the weights (this tiny model's graph and metadata are
    # a tenth of its file, hence 0.65 rather than 0.5), int8 quarters them, students are smaller.
    assert built[("fp16", "onnx")]["size_ratio"] < 0.65
    assert built[("int8", "pte")]["size_ratio"] < built[("fp32", "pte")]["size_ratio"] == 1.0
    assert built[("pruned", "onnx")]["details"]["macs"]["ratio"] <= 0.6
    assert built[("distilled", "onnx")]["preprocessing"]["input_size"] == 32
    assert stages[0] == "compress" and stages[-1] == "measure"


def test_the_recommended_file_per_format_is_the_smallest_offered(compressed):
    result, _, _ = compressed
    for fmt in ("onnx", "pte"):
        offered = [a for a in result.artifacts if a.format == fmt]
        recommended = [a for a in offered if a.recommended]
        assert len(recommended) == 1
        assert recommended[0].size == min(a.size for a in offered)
        assert result.card["recommended"][fmt] == recommended[0].variant
    for artifact in result.artifacts:  # the measured bytes are the bytes to ship
        assert hashlib.sha256(artifact.path.read_bytes()).hexdigest() == artifact.sha256
        assert artifact.size == artifact.path.stat().st_size


def test_the_pte_file_runs_in_executorch_from_its_bytes_like_the_torch_model(compressed):
    import torch
    from executorch.runtime import Runtime

    from training.ml.compress import samples_arrays

    result, model, _ = compressed
    pte = next(a for a in result.artifacts if a.format == "pte" and a.variant == "fp32")
    # The method refers to its program, the program to these bytes: all three must stay alive
    # (a temporary program is freed under the method, and executing it then crashes).
    payload = pte.path.read_bytes()
    program = Runtime.get().load_program(payload)
    method = program.load_method("forward")
    x = samples_arrays(_samples(train=0, holdout=3), PRE)
    for i in range(len(x)):
        got = method.execute([torch.from_numpy(x[i : i + 1])])[0]
        assert torch.allclose(got, model(torch.from_numpy(x[i : i + 1])), atol=1e-4)


@pytest.mark.parametrize("fmt", ["onnx", "pte"])
def test_the_parity_check_fails_when_the_photos_are_preprocessed_wrongly(compressed, fmt):
    """ImageNet mean/std instead of the model's own: what a careless app does. The check must catch it."""
    from training.ml.compress import BuiltFile, model_probabilities, samples_arrays, variant_check
    from training.ml.config import ParityTolerance

    result, model, _ = compressed
    artifact = next(a for a in result.artifacts if a.format == fmt and a.variant == "fp32")
    holdout = [s for s in _samples() if s.split == "holdout"]
    reference = model_probabilities(model, samples_arrays(holdout, PRE))
    built = BuiltFile("fp32", fmt, "fp32", artifact.path, PRE, {}, ParityTolerance())
    y = [s.label for s in holdout]

    right = variant_check(built=built, inputs=samples_arrays(holdout, PRE), reference=reference, y_true=y,
                          threads=1, runs=2)
    assert right["parity_failures"] == [] and right["max_prob_diff"] < 1e-4

    wrong_pre = dataclasses.replace(PRE, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    wrong = variant_check(built=built, inputs=samples_arrays(holdout, wrong_pre), reference=reference, y_true=y,
                          threads=1, runs=2)
    assert wrong["parity_failures"] and "max probability difference" in wrong["parity_failures"][0]
    from training.ml.card import policy_apply

    (judged,) = policy_apply([wrong], float_accuracy=1.0, max_accuracy_loss=0.01, min_agreement=0.95)
    assert judged["status"] == REJECTED and "max probability difference" in judged["reason"]


def test_the_int8_onnx_file_loads_without_warnings_every_initializer_used(tmp_path, capfd):
    """onnxruntime warned on every load about the softmax's dropped quantize pair (its scale, zero point)."""
    import onnx
    import onnxruntime as ort

    from training.ml.compress import onnx_int8, samples_arrays

    model = _tiny_model()
    train = [s for s in _samples() if s.split == "train"]
    path = onnx_int8(source=_float_onnx(model, tmp_path), path=tmp_path / "int8.onnx",
                     calibration=samples_arrays(train, PRE)[:8])

    graph = onnx.load_model(str(path)).graph
    read = {name for node in graph.node for name in node.input}
    assert [init.name for init in graph.initializer if init.name not in read] == []
    assert any(node.op_type == "QuantizeLinear" for node in graph.node)  # it is an int8 file
    options = ort.SessionOptions()
    options.log_severity_level = 1  # info and above: what an app developer's logs show
    capfd.readouterr()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    log = capfd.readouterr()
    # Info lines say what onnxruntime's own optimiser folded ("no longer used"): not a warning.
    assert [line for line in (log.out + log.err).splitlines() if "[W:" in line or "[E:" in line] == []
    assert "not used by any node" not in log.out + log.err
    probabilities = session.run(None, {session.get_inputs()[0].name: samples_arrays(train, PRE)[:2]})[0]
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_views_are_deterministic_augmentations_of_every_photo():
    from training.ml.compress import augmented_views

    samples = _samples(train=2, holdout=1)
    first, again = augmented_views(samples, per_photo=2, seed=0), augmented_views(samples, per_photo=2, seed=0)
    assert len(first) == 2 * len(samples) and {v.label for v in first} == {0, 1}
    pixels = [np.asarray(v.open_image()) for v in first]
    assert all(np.array_equal(a, np.asarray(b.open_image())) for a, b in zip(pixels, again, strict=True))
    original = np.asarray(samples[0].open_image())
    assert not any(p.shape == original.shape and np.array_equal(p, original) for p in pixels)  # really changed
    other = augmented_views(samples, per_photo=2, seed=1)
    assert not np.array_equal(pixels[0], np.asarray(other[0].open_image()))


def test_a_compressed_file_too_few_photos_vouch_for_stays_unoffered_and_fp32_is_recommended(tmp_path):
    from training.ml.compress import compression_pipeline

    model = _tiny_model()
    samples = _samples()
    result = compression_pipeline(
        model=model, float_onnx=_float_onnx(model, tmp_path), labels=LABELS, preprocessing=PRE,
        train=[s for s in samples if s.split == "train"], holdout=[s for s in samples if s.split == "holdout"],
        out_dir=tmp_path / "out",
        config=CompressionConfig(variants=("fp32", "int8"), formats=("onnx",), calibration_photos=16,
                                 latency_runs=5, fidelity_views=0),
    )
    rows = {r["variant"]: r for r in result.card["variants"]}
    assert rows["int8"]["status"] == REJECTED, rows["int8"]
    assert "20 photos cannot show < 1.0%" in rows["int8"]["reason"] and "need >= 268" in rows["int8"]["reason"]
    assert result.card["recommended"] == {"onnx": "fp32"} and [a.variant for a in result.artifacts] == ["fp32"]
    assert "views" in result.card["seconds"]


def test_a_broken_file_is_recorded_as_failed_and_never_offered(tmp_path):
    from training.ml.compress import BuiltFile, variant_check

    bad = tmp_path / "int8.pte"
    bad.write_bytes(b"not a program" * 10)
    row = variant_check(built=BuiltFile("int8", "pte", "int8", bad, PRE, {}, None),
                        inputs=np.zeros((2, 3, 48, 48), np.float32), reference=np.full((2, 2), 0.5, np.float32),
                        y_true=[0, 1], threads=1, runs=2)
    assert row["status"] == "failed" and "pte runtime failed" in row["reason"]


def test_distillation_is_skipped_below_the_data_threshold_and_nothing_else_changes(tmp_path):
    from training.ml.compress import compression_pipeline

    model = _tiny_model()
    samples = _samples(train=8, holdout=4)
    result = compression_pipeline(
        model=model, float_onnx=_float_onnx(model, tmp_path), labels=LABELS, preprocessing=PRE,
        train=[s for s in samples if s.split == "train"], holdout=[s for s in samples if s.split == "holdout"],
        out_dir=tmp_path / "out",
        config=CompressionConfig(variants=("fp32", "distilled-int8"), formats=("onnx",), latency_runs=3),
    )
    rows = {r["variant"]: r for r in result.card["variants"]}
    assert rows["distilled-int8"]["status"] == "skipped"
    assert "16 training photos < distill_min_train_photos 1000" in rows["distilled-int8"]["reason"]
    assert [a.variant for a in result.artifacts] == ["fp32"] and result.artifacts[0].recommended
