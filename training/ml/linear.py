"""Linear probe: a softmax classifier trained on cached, frozen backbone features.

Convex and small (1280 x C weights), so it trains in well under a second on CPU, is
deterministic for a seed, and cannot overfit the way fine-tuning a whole network on a few
hundred photos would (the "small data, similar to ImageNet" row of the strategy table).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from training.ml.config import LinearProbeConfig


@dataclass
class LinearProbeResult:
    """The trained head and how training went."""

    head: nn.Linear  # features -> logits, already un-standardised: use it on raw features
    history: list[dict] = field(default_factory=list)  # per epoch: epoch, train_loss, val_loss, val_accuracy
    best_epoch: int = 0  # epochs the final head was trained for
    validation_count: int = 0  # 0: no validation slice (too few samples), trained for config.epochs
    refit: bool = False  # True: the final head was retrained on all samples for best_epoch epochs
    seconds: float = 0.0


def linear_probe_train(
    *,
    features: torch.Tensor,
    targets: torch.Tensor,
    num_classes: int,
    config: LinearProbeConfig,
    progress: Callable[[int, int], None] | None = None,
) -> LinearProbeResult:
    """Train ``nn.Linear(D, num_classes)`` on features [N, D] and integer targets [N].

    ``progress(epoch, config.epochs)`` is called after each epoch of the selection run.
    """
    started = time.perf_counter()
    x = features.detach().to(torch.float32).clone()  # a normal tensor even from inference mode
    y = targets.detach().to(torch.int64).clone()
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need features [N, D] and targets [N] with N > 0, got {tuple(x.shape)} and {tuple(y.shape)}")
    if num_classes < 2 or int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(f"targets must be in [0, {num_classes}) with num_classes >= 2")

    train_idx, val_idx = stratified_split(y, fraction=config.validation_fraction, seed=config.seed)
    history: list[dict] = []
    if len(val_idx):
        head, best_epoch = _fit(
            x[train_idx],
            y[train_idx],
            num_classes,
            config,
            epochs=config.epochs,
            val=(x[val_idx], y[val_idx]),
            history=history,
            progress=progress,
        )
        refit = config.refit_on_all
        if refit:
            head, _ = _fit(x, y, num_classes, config, epochs=best_epoch, val=None, history=None, progress=None)
    else:
        head, best_epoch = _fit(
            x, y, num_classes, config, epochs=config.epochs, val=None, history=history, progress=progress
        )
        refit = False
    if progress is not None:
        progress(config.epochs, config.epochs)
    return LinearProbeResult(
        head=head,
        history=history,
        best_epoch=best_epoch,
        validation_count=len(val_idx),
        refit=refit,
        seconds=time.perf_counter() - started,
    )


def stratified_split(y: torch.Tensor, *, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class random validation slice; classes too small to spare a sample stay whole."""
    if fraction <= 0:
        return torch.arange(len(y)), torch.empty(0, dtype=torch.int64)
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for label in torch.unique(y).tolist():
        idx = torch.nonzero(y == label).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        take = round(len(idx) * fraction)
        # Keep at least 2 for training; a class with < 3 samples gives none to validation.
        take = min(take, max(0, len(idx) - 2))
        val.append(idx[:take])
        train.append(idx[take:])
    val_idx = torch.cat(val)
    if len(val_idx) < 2:  # a 1-sample validation loss is noise, not a stopping signal
        return torch.arange(len(y)), torch.empty(0, dtype=torch.int64)
    return torch.sort(torch.cat(train)).values, torch.sort(val_idx).values


def _fit(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    config: LinearProbeConfig,
    *,
    epochs: int,
    val: tuple[torch.Tensor, torch.Tensor] | None,
    history: list[dict] | None,
    progress: Callable[[int, int], None] | None,
) -> tuple[nn.Linear, int]:
    # Standardise with statistics of the data being fitted: features are post-ReLU6 averages
    # with very different scales per channel, and one learning rate must suit all backbones.
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # dead channels: leave as is
    xs = (x - mean) / std

    # Zero init: the problem is convex, so this loses nothing and needs no RNG (determinism).
    head = nn.Linear(x.shape[1], num_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    weight = None
    if config.class_weighting:
        counts = torch.bincount(y, minlength=num_classes).to(torch.float32)
        weight = torch.where(counts > 0, len(y) / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)

    best_loss, best_epoch, best_state, stale = math.inf, epochs, None, 0
    for epoch in range(1, epochs + 1):
        head.train()
        order = torch.randperm(len(xs), generator=generator)
        total, seen = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            loss = criterion(head(xs[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        record = {"epoch": epoch, "train_loss": total / seen, "val_loss": None, "val_accuracy": None}
        if val is not None:
            head.eval()
            with torch.no_grad():
                logits = head((val[0] - mean) / std)
                record["val_loss"] = float(criterion(logits, val[1]))
                record["val_accuracy"] = float((logits.argmax(dim=1) == val[1]).float().mean())
            if record["val_loss"] < best_loss - 1e-6:
                best_loss, best_epoch, stale = record["val_loss"], epoch, 0
                best_state = copy.deepcopy(head.state_dict())
            else:
                stale += 1
        if history is not None:
            history.append(record)
        if progress is not None:
            progress(epoch, config.epochs)
        if val is not None and stale >= config.patience:
            break
    if best_state is not None:
        head.load_state_dict(best_state)
    return _unstandardise(head, mean, std), best_epoch


def _unstandardise(head: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> nn.Linear:
    """Fold the standardisation into the head: W((x - m) / s) + b = (W / s) x + (b - W m / s)."""
    folded = nn.Linear(head.in_features, head.out_features)
    with torch.no_grad():
        weight = head.weight / std
        folded.weight.copy_(weight)
        folded.bias.copy_(head.bias - weight @ mean)
    folded.eval()
    folded.requires_grad_(False)
    return folded
