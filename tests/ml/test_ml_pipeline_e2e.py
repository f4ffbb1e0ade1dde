"""End to end on the real ants/bees photos: train, export, verify, then classify val/ as an app would."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.ml.conftest import WEIGHTS_SHA256, photo_files
from training.ml.config import IMAGENET_MEAN, IMAGENET_STD, BackboneConfig, LinearProbeConfig, Preprocessing
from training.ml.errors import ImageDecodeError, VerificationError
from training.ml.images import image_to_array
from training.ml.pipeline import STAGES, Sample, linear_probe_pipeline, split_for

pytestmark = pytest.mark.slow
LABELS = ("ants", "bees")


def _open(path: Path) -> Image.Image:
    return Image.open(path)


def _samples(folder: Path) -> list[Sample]:
    return [
        Sample(
            key=f"{label}/{path.name}",
            label=LABELS.index(label),
            split=split_for(hashlib.sha256(path.read_bytes()).hexdigest()),
            open_image=partial(_open, path),
        )
        for path, label in photo_files(folder)
    ]


@pytest.fixture(scope="module")
def trained(hymenoptera_dir, ml_weights_path, tmp_path_factory):
    """One pipeline run on train/ (holdout = hash split of train), shared by the tests below."""
    samples = _samples(hymenoptera_dir / "train")
    out_dir = tmp_path_factory.mktemp("run")
    calls: list[tuple[str, float]] = []
    started = time.perf_counter()
    result = linear_probe_pipeline(
        samples=samples,
        labels=LABELS,
        backbone=BackboneConfig(weights_path=str(ml_weights_path)),
        preprocessing=Preprocessing(),
        probe=LinearProbeConfig(seed=0),
        out_dir=out_dir,
        progress=lambda stage, fraction: calls.append((stage, fraction)),
    )
    seconds = time.perf_counter() - started
    print(f"\npipeline: {seconds:.1f} s, stages {result.seconds}")
    return {"result": result, "calls": calls, "samples": samples, "out_dir": out_dir}


def test_pipeline_trains_exports_and_verifies(trained):
    result, samples = trained["result"], trained["samples"]
    assert len(samples) == 244  # 123 ants + 121 bees; the .gif placeholder is skipped
    assert result.train_count + result.holdout_count == 244
    assert 0.15 <= result.holdout_count / 244 <= 0.25
    assert result.metrics.count == result.holdout_count
    assert result.metrics.accuracy >= 0.85
    # The exported file, run from the photos by onnxruntime, is the torch model.
    v = result.verification
    assert v["ok"] and v["top1_agreement"] == 1.0 and v["max_abs_diff"] < 1e-4 and v["count"] == result.holdout_count
    assert result.onnx_metrics.confusion == result.metrics.confusion
    assert sorted(p.name for p in trained["out_dir"].iterdir()) == ["model.onnx"]
    assert result.artifact_size == result.artifact_path.stat().st_size
    assert result.artifact_sha256 == hashlib.sha256(result.artifact_path.read_bytes()).hexdigest()
    assert v["artifact_sha256"] == result.artifact_sha256
    assert 1 <= result.best_epoch <= len(result.history)


def test_run_record_is_json_and_reproducible(trained):
    result = trained["result"]
    record = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert record["config"]["backbone"]["weights_sha256_or_name"] == WEIGHTS_SHA256
    assert record["config"]["seeds"]["probe"] == 0
    assert record["config"]["probe"] == {**record["config"]["probe"], "seed": 0, "refit_on_all": True}
    assert record["preprocessing"] == Preprocessing().to_manifest()
    assert set(record["seconds"]) == {*STAGES, "total"}
    assert record["labels"] == list(LABELS)


def test_progress_walks_the_stages_in_order(trained):
    calls = trained["calls"]
    order = [stage for i, (stage, _) in enumerate(calls) if i == 0 or calls[i - 1][0] != stage]
    assert order == list(STAGES)
    assert all(0.0 <= fraction <= 1.0 for _, fraction in calls)
    assert calls[-1] == ("verify", 1.0)
    features = [f for stage, f in calls if stage == "features"]
    assert features == sorted(features) and features[-1] == 1.0


def _client_predict(session, files: list[Path], preprocessing: Preprocessing) -> np.ndarray:
    """What an app does: its own preprocessing call, onnxruntime, nothing from training."""
    name = session.get_inputs()[0].name
    out = []
    for start in range(0, len(files), 32):
        batch = []
        for path in files[start : start + 32]:
            with Image.open(path) as image:
                batch.append(image_to_array(image, preprocessing=preprocessing))
        out.append(session.run(None, {name: np.stack(batch)})[0])
    return np.concatenate(out)


@pytest.fixture(scope="module")
def client_session(trained, tmp_path_factory):
    """An onnxruntime session from the file alone, copied where no sidecar could exist."""
    import onnxruntime as ort

    folder = tmp_path_factory.mktemp("download")
    downloaded = folder / "model.onnx"
    shutil.copyfile(trained["result"].artifact_path, downloaded)
    return ort.InferenceSession(downloaded.read_bytes(), providers=["CPUExecutionProvider"])


def test_exported_file_classifies_the_official_val_photos(client_session, hymenoptera_dir, record_property):
    meta = client_session.get_modelmeta().custom_metadata_map
    preprocessing = Preprocessing.from_manifest(json.loads(meta["preprocessing"]))
    labels = json.loads(meta["labels"])
    val = photo_files(hymenoptera_dir / "val")
    assert len(val) == 153
    started = time.perf_counter()
    probabilities = _client_predict(client_session, [path for path, _ in val], preprocessing)
    seconds = time.perf_counter() - started
    predicted = [labels[i] for i in probabilities.argmax(axis=1)]
    accuracy = float(np.mean([p == label for p, (_, label) in zip(predicted, val, strict=True)]))
    print(f"\nval accuracy of the ONNX file: {accuracy:.4f} on {len(val)} photos in {seconds:.1f} s")
    record_property("val_accuracy", accuracy)
    assert accuracy >= 0.90


@pytest.mark.parametrize(
    "mistake",
    ["imagenet_mean_std", "no_center_crop", "zero_one_scaling", "bgr"],
)
def test_wrong_preprocessing_is_detected_by_the_parity_check(client_session, hymenoptera_dir, mistake):
    """Apps that preprocess differently must fail parity loudly, even where top-1 mostly survives."""
    from training.ml.parity import predictions_compare

    files = [path for path, _ in photo_files(hymenoptera_dir / "val")][::4]  # 39 photos
    right = Preprocessing()
    reference = _client_predict(client_session, files, right)
    assert predictions_compare(reference=reference, candidate=_client_predict(client_session, files, right)).ok

    name = client_session.get_inputs()[0].name
    if mistake == "imagenet_mean_std":
        candidate = _client_predict(client_session, files, Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD))
    elif mistake == "zero_one_scaling":
        candidate = _client_predict(client_session, files, Preprocessing(mean=(0, 0, 0), std=(1, 1, 1)))
    else:
        batch = []
        for path in files:
            with Image.open(path) as image:
                if mistake == "no_center_crop":  # squash the whole photo to the input size
                    squashed = image.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
                    batch.append(image_to_array(squashed, preprocessing=right))
                else:  # bgr
                    batch.append(image_to_array(image, preprocessing=right)[::-1])
        candidate = client_session.run(None, {name: np.ascontiguousarray(np.stack(batch))})[0]
    report = predictions_compare(reference=reference, candidate=candidate)
    print(f"\n{mistake}: agreement {report.top1_agreement:.3f}, max |dp| {report.max_abs_diff:.3f}")
    assert not report.ok
    assert report.max_abs_diff > 0.05  # 50x the tolerance: not a rounding question


def test_pipeline_names_an_undecodable_photo(hymenoptera_dir, ml_weights_path, tmp_path):
    samples = _samples(hymenoptera_dir / "train")[:3] + _samples(hymenoptera_dir / "train")[-3:]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    samples.append(Sample(key="bees/broken.jpg", label=1, split="holdout", open_image=partial(_open, broken)))
    with pytest.raises(ImageDecodeError, match=r"bees/broken\.jpg"):
        linear_probe_pipeline(
            samples=samples,
            labels=LABELS,
            backbone=BackboneConfig(weights_path=str(ml_weights_path)),
            preprocessing=Preprocessing(),
            probe=LinearProbeConfig(),
            out_dir=tmp_path / "out",
        )
    assert not (tmp_path / "out").exists()  # nothing exported from a failed run


def _small_run(hymenoptera_dir, ml_weights_path, out_dir):
    every = _samples(hymenoptera_dir / "train")
    ants = [s for s in every if s.label == 0][:5]
    bees = [s for s in every if s.label == 1][:5]
    samples = [
        dataclasses.replace(s, split="holdout" if i >= 3 else "train")
        for group in (ants, bees)
        for i, s in enumerate(group)
    ]
    return linear_probe_pipeline(
        samples=samples,
        labels=LABELS,
        backbone=BackboneConfig(weights_path=str(ml_weights_path)),
        preprocessing=Preprocessing(),
        probe=LinearProbeConfig(epochs=20),
        out_dir=out_dir,
    )


def test_pipeline_refuses_and_deletes_an_artifact_that_disagrees(
    trained, hymenoptera_dir, ml_weights_path, tmp_path, monkeypatch
):
    """An exported file that is not the trained model (here: another run's file) must not pass."""
    import training.ml.export

    def export_someone_elses_model(*, model, path, preprocessing, labels=None, metadata=None):
        shutil.copyfile(trained["result"].artifact_path, path)
        return path

    monkeypatch.setattr(training.ml.export, "onnx_export", export_someone_elses_model)
    with pytest.raises(VerificationError, match="max probability difference") as info:
        _small_run(hymenoptera_dir, ml_weights_path, tmp_path)
    assert info.value.report["ok"] is False
    assert not (tmp_path / "model.onnx").exists()


def test_pipeline_refuses_an_artifact_that_does_not_load(hymenoptera_dir, ml_weights_path, tmp_path, monkeypatch):
    import training.ml.export

    def export_garbage(*, model, path, preprocessing, labels=None, metadata=None):
        Path(path).write_bytes(b"\x08\x07 this is not a model")
        return path

    monkeypatch.setattr(training.ml.export, "onnx_export", export_garbage)
    with pytest.raises(VerificationError, match="cannot load"):
        _small_run(hymenoptera_dir, ml_weights_path, tmp_path)
    assert not (tmp_path / "model.onnx").exists()
