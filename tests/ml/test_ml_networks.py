"""The four strategies' trainers on tiny data: they learn, record history, stop early, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.ml.digits import digit_images
from training.ml.config import LinearProbeConfig, Preprocessing
from training.ml.images import image_to_array
from training.ml.linear import stratified_split
from training.ml.networks import LowerLayerClassifier, fine_tune, from_scratch, linear_probe, lower_layer_probe
from training.ml.strategies import FineTuneConfig, LowerLayerConfig

PRE = Preprocessing(input_size=64, resize=64)
FT_KEYS = {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"}


def _coloured(per_class: int, *, seed: int = 0) -> tuple[list[Image.Image], list[int]]:
    """Noisy reddish vs bluish photos (landscape, so the crop matters): easy, not trivial."""
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for label, base in enumerate([(190, 60, 50), (50, 70, 190)]):
        for _ in range(per_class):
            pixels = np.clip(np.array(base) + rng.normal(0, 45, (64, 80, 3)), 0, 255).astype(np.uint8)
            images.append(Image.fromarray(pixels))
            targets.append(label)
    return images, targets


def _probabilities(model, images) -> torch.Tensor:
    x = torch.from_numpy(np.stack([image_to_array(i, preprocessing=PRE) for i in images]))
    with torch.no_grad():
        return model(x)


@pytest.mark.slow
def test_fine_tune_learns_stops_early_and_keeps_the_best_epoch(ml_backbone):
    images, targets = _coloured(12)
    before = {k: v.clone() for k, v in ml_backbone.state_dict().items()}
    config = FineTuneConfig(epochs=8, batch_size=4, patience=8, trainable_blocks=2, lr=3e-3, validation_fraction=0.25)
    common = {"images": images, "targets": targets, "num_classes": 2, "backbone": ml_backbone, "preprocessing": PRE}
    learned = fine_tune(**common, config=config)
    assert learned.strategy == "fine_tune" and learned.train_accuracy >= 0.9
    assert learned.history[-1]["train_loss"] < learned.history[0]["train_loss"]
    assert all(set(r) == FT_KEYS for r in learned.history)
    assert [r["epoch"] for r in learned.history] == list(range(1, 9))

    # patience 1: training stops at the first epoch that does not improve (or runs out).
    config = FineTuneConfig(epochs=10, batch_size=4, patience=1, trainable_blocks=2, lr=3e-3, validation_fraction=0.25)
    outcome = fine_tune(**common, config=config)
    history = outcome.history
    best = outcome.best_epoch
    assert history[best - 1]["val_loss"] == min(r["val_loss"] for r in history)
    assert len(history) == best + 1 or len(history) == config.epochs
    # The returned model holds the best epoch's weights: its validation loss is the recorded one.
    y = torch.tensor(targets)
    _, val_idx = stratified_split(y, fraction=config.validation_fraction, seed=config.seed)
    probs = _probabilities(outcome.model, [images[i] for i in val_idx])
    assert torch.allclose(probs.sum(1), torch.ones(len(val_idx)), atol=1e-5)
    val_loss = float(torch.nn.functional.nll_loss(probs.log(), y[val_idx]))  # balanced: weights are 1
    assert val_loss == pytest.approx(history[best - 1]["val_loss"], abs=1e-4)
    # Only the top 2 blocks (and the head) moved; the caller's backbone is untouched.
    tuned = outcome.model.net.state_dict()
    assert torch.equal(tuned["features.0.0.weight"], before["features.0.0.weight"])
    assert not torch.equal(tuned["features.18.0.weight"], before["features.18.0.weight"])
    # freeze_batchnorm (default): even trainable blocks keep their pretrained BatchNorm statistics.
    assert torch.equal(tuned["features.18.1.running_mean"], before["features.18.1.running_mean"])
    assert all(torch.equal(v, before[k]) for k, v in ml_backbone.state_dict().items())
    assert outcome.details["validation_count"] == len(val_idx) == 6


@pytest.mark.slow
def test_fine_tune_is_deterministic_per_seed(ml_backbone):
    images, targets = _coloured(6)
    config = FineTuneConfig(epochs=2, batch_size=4, seed=3)
    runs = [
        fine_tune(images=images, targets=targets, num_classes=2, backbone=ml_backbone, preprocessing=PRE, config=config)
        for _ in range(2)
    ]
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in run.history] for run in runs]
    assert strip[0] == strip[1]
    a, b = (run.model.net.state_dict() for run in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_from_scratch_trains_every_layer_from_random_weights(tiny_backbone):
    images, targets = _coloured(5)
    outcome = from_scratch(
        images=images,
        targets=targets,
        num_classes=2,
        preprocessing=PRE,
        config=FineTuneConfig(epochs=2, batch_size=5, trainable_blocks=1),  # ignored: from scratch trains all
    )
    assert outcome.strategy == "from_scratch" and len(outcome.history) == 2
    assert outcome.details["trainable_parameters"] == sum(p.numel() for p in outcome.model.parameters())
    probs = _probabilities(outcome.model, images[:3])
    assert probs.shape == (3, 2) and torch.allclose(probs.sum(1), torch.ones(3), atol=1e-5)
    assert not outcome.model.training and all(not p.requires_grad for p in outcome.model.parameters())


@pytest.mark.slow
def test_lower_layer_probe_is_the_truncated_backbone_and_learns_digits(ml_backbone, tmp_path):
    from training.ml.export import onnx_export, onnx_predict

    images, targets = digit_images(count=80, size=64)
    outcome = lower_layer_probe(
        images=images,
        targets=targets,
        num_classes=10,
        backbone=ml_backbone,
        preprocessing=PRE,
        config=LowerLayerConfig(block=6, grid=2, probe=LinearProbeConfig(epochs=100)),
    )
    model = outcome.model
    assert isinstance(model, LowerLayerClassifier) and len(model.stem) == 7
    assert model.head.in_features == 32 * 4 and outcome.details["feature_dim"] == 128
    full = sum(p.numel() for p in ml_backbone.parameters())
    assert sum(p.numel() for p in model.parameters()) < full / 20  # the top layers are not shipped
    assert outcome.train_accuracy >= 0.9
    test_images, test_targets = digit_images(count=60, size=64, seed=1)
    probs = _probabilities(model, test_images)
    accuracy = float((probs.argmax(1) == torch.tensor(test_targets)).float().mean())
    assert accuracy >= 0.6, accuracy  # 8 digits per label; the linear probe gets ~0.5 here
    # Exports and runs in onnxruntime like the full model.
    path = onnx_export(model=model, path=tmp_path / "lower.onnx", preprocessing=PRE)
    x = np.stack([image_to_array(i, preprocessing=PRE) for i in test_images[:8]])
    assert np.abs(onnx_predict(path_or_bytes=path, batch=x) - probs[:8].numpy()).max() < 1e-4


@pytest.mark.slow
def test_linear_probe_strategy_uses_given_features(ml_backbone):
    images, targets = _coloured(6)
    from training.ml.features import features_extract

    features = features_extract(backbone=ml_backbone, images=images, preprocessing=PRE)
    outcome = linear_probe(
        images=images,
        targets=targets,
        num_classes=2,
        backbone=ml_backbone,
        preprocessing=PRE,
        config=LinearProbeConfig(epochs=30),
        features=features,
    )
    assert outcome.train_accuracy == 1.0
    probs = _probabilities(outcome.model, images)
    assert (probs.argmax(1) == torch.tensor(targets)).all()

