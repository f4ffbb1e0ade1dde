"""transfer_pipeline end to end: measure, decide, train, evaluate, export ONE file, verify."""

from __future__ import annotations

import hashlib
import json
from functools import partial
from pathlib import Path

import pytest
from PIL import Image

from tests.ml.conftest import photo_files
from tests.ml.digits import digit_images
from training.ml.config import BackboneConfig, Preprocessing
from training.ml.errors import PipelineError, VerificationError
from training.ml.pipeline import Sample
from training.ml.strategies import FineTuneConfig, strategy_choose
from training.ml.transfer import TRANSFER_STAGES, transfer_pipeline

pytestmark = pytest.mark.slow
ANTS_BEES = ("ants", "bees")
PHOTO_PRE = Preprocessing(input_size=96, resize=96)
DIGIT_PRE = Preprocessing(input_size=64, resize=64)


def _ants_bees(hymenoptera_dir: Path, *, train: int, holdout: int) -> list[Sample]:
    samples = []
    for label, name in enumerate(ANTS_BEES):
        files = [path for path, lab in photo_files(hymenoptera_dir / "train") if lab == name][: train + holdout]
        for i, path in enumerate(files):
            split = "train" if i < train else "holdout"
            opener = partial(Image.open, path)
            samples.append(Sample(key=f"{name}/{path.name}", label=label, split=split, open_image=opener))
    return samples


def _digits(*, per_label_train: int, per_label_holdout: int) -> list[Sample]:
    per_label = per_label_train + per_label_holdout
    images, targets = digit_images(count=10 * per_label, size=64)
    seen: dict[int, int] = {}
    samples = []
    for i, (image, target) in enumerate(zip(images, targets, strict=True)):
        seen[target] = seen.get(target, 0) + 1
        split = "train" if seen[target] <= per_label_train else "holdout"
        samples.append(Sample(key=f"digit{target}/{i}", label=target, split=split, open_image=image.copy))
    return samples


def _single_verified_file(result, out_dir: Path) -> dict:
    assert sorted(p.name for p in out_dir.iterdir()) == ["model.onnx"]  # no .onnx.data sidecar
    assert result.artifact_sha256 == hashlib.sha256(result.artifact_path.read_bytes()).hexdigest()
    v = result.verification
    assert v["ok"] and v["top1_agreement"] == 1.0 and v["max_abs_diff"] < 1e-4 and v["count"] == result.holdout_count
    assert result.onnx_metrics.confusion == result.metrics.confusion
    assert result.metrics.ece is not None and 0.0 <= result.metrics.ece <= 1.0
    return json.loads(json.dumps(result.to_dict(), allow_nan=False))


def test_ants_and_bees_small_and_similar_get_the_linear_probe(hymenoptera_dir, ml_weights_path, tmp_path):
    calls: list[tuple[str, float]] = []
    result = transfer_pipeline(
        samples=_ants_bees(hymenoptera_dir, train=12, holdout=4),
        labels=ANTS_BEES,
        backbone=BackboneConfig(weights_path=str(ml_weights_path)),
        preprocessing=PHOTO_PRE,
        out_dir=tmp_path,
        progress=lambda stage, fraction: calls.append((stage, fraction)),
    )
    record = _single_verified_file(result, tmp_path)
    decision = record["decision"]
    assert decision["choice"] == decision["rule_choice"] == "linear_probe" and decision["override"] is None
    assert decision["size"] == "small" and decision["similar"] is True and decision["reason"].startswith("rule:")
    assert decision["label_counts"] == {"ants": 12, "bees": 12} and decision["similarity"]["count"] == 24
    # The similarity pass filled the feature cache: only the holdout photos paid another forward pass.
    assert record["config"]["features"] == {"total": 32, "computed": 8, "cached": 24}
    assert record["config"]["strategy"] == "linear_probe" and record["config"]["decision"] == decision
    order = [stage for i, (stage, _) in enumerate(calls) if i == 0 or calls[i - 1][0] != stage]
    assert order == list(TRANSFER_STAGES) and calls[-1] == ("verify", 1.0)
    assert set(record["seconds"]) == {*TRANSFER_STAGES, "total"}


def test_digits_small_and_dissimilar_get_the_lower_layer_probe(ml_weights_path, tmp_path):
    result = transfer_pipeline(
        samples=_digits(per_label_train=6, per_label_holdout=3),
        labels=tuple(str(d) for d in range(10)),
        backbone=BackboneConfig(weights_path=str(ml_weights_path)),
        preprocessing=DIGIT_PRE,
        out_dir=tmp_path,
    )
    record = _single_verified_file(result, tmp_path)
    decision = record["decision"]
    assert decision["choice"] == "lower_layer_probe" and decision["similar"] is False
    assert decision["similarity"]["lower_accuracy"] > decision["similarity"]["top_accuracy"]
    assert result.metrics.accuracy >= 0.5  # 6 digits per label; chance is 0.1
    assert result.artifact_size < 1_000_000  # truncated backbone (~0.3 MB), not the 9 MB network
    assert record["config"]["features"] == {"total": 60, "computed": 0, "cached": 60}
    assert record["history"] and record["config"]["strategy_outcome"]["feature_dim"] == 128
    from training.ml.inference import onnx_metadata

    assert onnx_metadata(path_or_bytes=result.artifact_path)["strategy"] == "lower_layer_probe"


def test_override_fine_tunes_and_records_the_training_curve(hymenoptera_dir, ml_weights_path, tmp_path):
    result = transfer_pipeline(
        samples=_ants_bees(hymenoptera_dir, train=8, holdout=3),
        labels=ANTS_BEES,
        backbone=BackboneConfig(weights_path=str(ml_weights_path)),
        preprocessing=PHOTO_PRE,
        out_dir=tmp_path,
        strategy="fine_tune",
        fine_tune=FineTuneConfig(epochs=2, batch_size=8, trainable_blocks=3),
    )
    record = _single_verified_file(result, tmp_path)
    assert record["decision"]["override"] == "fine_tune" and record["decision"]["reason"].startswith("override:")
    assert record["decision"]["similarity"] is None  # an override does not pay for the measurement
    assert [r["epoch"] for r in record["history"]] == [1, 2]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy"} <= set(record["history"][0])
    assert record["config"]["strategy_config"]["trainable_blocks"] == 3
    assert record["config"]["seeds"]["strategy"] == 0


def test_a_decision_is_used_as_is_and_must_not_be_contradicted(ml_weights_path, tmp_path):
    decision = strategy_choose(label_counts={"a": 6, "b": 6}, similarity=None, override="fine_tune")
    with pytest.raises(PipelineError, match="contradicts"):
        transfer_pipeline(
            samples=_digits(per_label_train=2, per_label_holdout=1),
            labels=tuple(str(d) for d in range(10)),
            backbone=BackboneConfig(weights_path=str(ml_weights_path)),
            preprocessing=DIGIT_PRE,
            out_dir=tmp_path,
            strategy="linear_probe",
            decision=decision,
        )


def test_a_file_that_fails_verification_is_deleted(ml_weights_path, tmp_path, monkeypatch):
    import training.ml.export

    def export_garbage(*, model, path, preprocessing, labels=None, metadata=None):
        Path(path).write_bytes(b"\x08\x07 this is not a model")
        return path

    monkeypatch.setattr(training.ml.export, "onnx_export", export_garbage)
    with pytest.raises(VerificationError, match="cannot load"):
        transfer_pipeline(
            samples=_digits(per_label_train=3, per_label_holdout=1),
            labels=tuple(str(d) for d in range(10)),
            backbone=BackboneConfig(weights_path=str(ml_weights_path)),
            preprocessing=DIGIT_PRE,
            out_dir=tmp_path,
            strategy="lower_layer_probe",
        )
    assert not (tmp_path / "model.onnx").exists()
