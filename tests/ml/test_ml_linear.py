"""Linear probe on cached features: learns separable data, deterministic per seed."""

from __future__ import annotations

import pytest
import torch

from training.ml.config import LinearProbeConfig
from training.ml.linear import linear_probe_train


def _blobs(n_per_class: int, *, classes: int = 3, dim: int = 64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123)) * 4
    x = torch.cat([centres[c] + torch.randn(n_per_class, dim, generator=generator) for c in range(classes)])
    y = torch.arange(classes).repeat_interleave(n_per_class)
    # Post-ReLU6-like features: non-negative with channel-dependent scale.
    return (x.abs() * torch.linspace(0.1, 6.0, dim)), y


def test_learns_separable_features():
    x, y = _blobs(40)
    result = linear_probe_train(features=x, targets=y, num_classes=3, config=LinearProbeConfig())
    x_test, y_test = _blobs(30, seed=1)
    with torch.no_grad():
        assert (result.head(x).argmax(1) == y).float().mean() == 1.0
        assert (result.head(x_test).argmax(1) == y_test).float().mean() >= 0.98
    assert isinstance(result.head, torch.nn.Linear) and result.head.weight.shape == (3, 64)
    assert result.validation_count > 0 and result.refit
    assert 1 <= result.best_epoch <= len(result.history)
    first = result.history[0]
    assert set(first) == {"epoch", "train_loss", "val_loss", "val_accuracy"} and first["epoch"] == 1
    assert result.history[-1]["train_loss"] < first["train_loss"]


def test_same_seed_same_weights():
    x, y = _blobs(25)
    config = LinearProbeConfig(seed=7, epochs=30)
    a = linear_probe_train(features=x, targets=y, num_classes=3, config=config)
    b = linear_probe_train(features=x, targets=y, num_classes=3, config=config)
    assert torch.equal(a.head.weight, b.head.weight) and torch.equal(a.head.bias, b.head.bias)
    assert a.history == b.history


def test_accepts_inference_tensors_and_tiny_data():
    x, y = _blobs(2, classes=2)
    with torch.inference_mode():
        x = x * 1.0  # an inference tensor, as features_extract might hand over
    result = linear_probe_train(features=x, targets=y, num_classes=2, config=LinearProbeConfig(epochs=15))
    # 2 photos per label: nothing to spare for validation, so it trains the full budget.
    assert result.validation_count == 0 and not result.refit
    assert result.best_epoch == 15 and len(result.history) == 15
    assert result.history[0]["val_loss"] is None


def test_imbalanced_labels_are_not_ignored():
    x_major, _ = _blobs(100, classes=2)
    x, y = _blobs(100, classes=2)
    keep = torch.cat([torch.arange(100), torch.arange(100, 106)])  # 100 vs 6
    result = linear_probe_train(features=x[keep], targets=y[keep], num_classes=2, config=LinearProbeConfig())
    x_test, y_test = _blobs(50, classes=2, seed=3)
    with torch.no_grad():
        recall_minor = (result.head(x_test[y_test == 1]).argmax(1) == 1).float().mean()
    assert recall_minor >= 0.95
    del x_major


def test_progress_and_bad_inputs():
    x, y = _blobs(10, classes=2)
    seen = []
    linear_probe_train(
        features=x,
        targets=y,
        num_classes=2,
        config=LinearProbeConfig(epochs=5),
        progress=lambda e, n: seen.append((e, n)),
    )
    assert seen[0] == (1, 5) and seen[-1] == (5, 5)
    with pytest.raises(ValueError):
        linear_probe_train(features=x, targets=y + 5, num_classes=2, config=LinearProbeConfig())
    with pytest.raises(ValueError):
        linear_probe_train(features=x[:0], targets=y[:0], num_classes=2, config=LinearProbeConfig())
    with pytest.raises(ValueError):
        LinearProbeConfig(validation_fraction=1.0)
