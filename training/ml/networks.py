"""The four strategies' trainers (see ``strategies.py``); each returns a probability model to export.

Every returned model maps normalised NCHW float32 images (``image_to_array``) to softmax
probabilities [N, C], is in eval mode with contiguous weights, and exports with ``onnx_export``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn

from training.ml.backbone import backbone_feature_dim
from training.ml.config import LinearProbeConfig, Preprocessing
from training.ml.errors import ImageDecodeError
from training.ml.export import ProbabilityClassifier, classifier_assemble, onnx_export
from training.ml.features import features_extract
from training.ml.images import ImageSource, image_rgb, image_to_array, resized_size
from training.ml.inference import INPUT_NAME, onnx_session
from training.ml.linear import linear_probe_train, stratified_split
from training.ml.similarity import layer_features_extract, lower_pool
from training.ml.strategies import FineTuneConfig, LowerLayerConfig

Progress = Callable[[int, int], None]
logger = logging.getLogger(__name__)

#: From this many images (photos x (centre + augmented views)) the frozen part runs in
#: onnxruntime: measured here at 224 px, 1 thread, 14 ms of CPU per image against 46 ms in
#: eager torch, for a one-off export of about 13 CPU seconds (break-even near 400 images).
FROZEN_ONNX_MIN_IMAGES = 1000
#: Early stopping counts an epoch as better only when its validation loss drops by more than this.
MIN_LOSS_IMPROVEMENT = 1e-6
#: Images per batch when only predicting (no gradients), for whole networks and for the top blocks.
EVAL_BATCH = 64
TOP_EVAL_BATCH = 128


@dataclass
class StrategyOutcome:
    """A trained probability model and how training went."""

    strategy: str
    model: nn.Module = field(repr=False)  # normalised images -> probabilities, eval mode
    history: list[dict]  # per epoch; keys depend on the trainer (always "epoch", "train_loss")
    best_epoch: int
    train_accuracy: float  # on the train split, without augmentation
    details: dict  # config and outcome, JSON-ready
    seconds: float


class LowerLayerClassifier(nn.Module):
    """Truncated backbone (``features[:block+1]``) -> grid pooling -> Linear -> softmax."""

    def __init__(self, *, stem: nn.Sequential, head: nn.Linear, grid: int):
        super().__init__()
        self.stem = stem
        self.head = head
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised NCHW float32 images -> class probabilities [N, C]."""
        return torch.softmax(self.head(lower_pool(self.stem(x), grid=self.grid)), dim=1)


def linear_probe(
    *,
    images: Sequence[ImageSource],
    targets: Sequence[int],
    num_classes: int,
    backbone: nn.Module,
    preprocessing: Preprocessing,
    config: LinearProbeConfig,
    batch_size: int = 32,
    features: torch.Tensor | None = None,
    progress: Progress | None = None,
) -> StrategyOutcome:
    """Linear head on frozen top features (pass cached ``features`` [N, 1280] to skip extraction)."""
    started = time.perf_counter()
    if features is None:
        features = features_extract(
            backbone=backbone, images=images, preprocessing=preprocessing, batch_size=batch_size
        )
    y = torch.as_tensor(list(targets), dtype=torch.int64)
    fitted = linear_probe_train(features=features, targets=y, num_classes=num_classes, config=config, progress=progress)
    return StrategyOutcome(
        strategy="linear_probe",
        model=classifier_assemble(backbone=backbone, head=fitted.head),
        history=fitted.history,
        best_epoch=fitted.best_epoch,
        train_accuracy=_head_accuracy(fitted.head, features, y),
        details={"config": dataclasses.asdict(config), **_probe_outcome(fitted)},
        seconds=time.perf_counter() - started,
    )


def lower_layer_probe(
    *,
    images: Sequence[ImageSource],
    targets: Sequence[int],
    num_classes: int,
    backbone: nn.Module,
    preprocessing: Preprocessing,
    config: LowerLayerConfig,
    batch_size: int = 32,
    features: torch.Tensor | None = None,
    progress: Progress | None = None,
) -> StrategyOutcome:
    """Linear head on grid-pooled activations after ``features[config.block]``.

    The model is the truncated backbone + head: the layers above the cut are not shipped.
    Pass cached lower-layer ``features`` to skip extraction.
    """
    started = time.perf_counter()
    if features is None:
        features = layer_features_extract(
            backbone=backbone,
            images=images,
            preprocessing=preprocessing,
            block=config.block,
            grid=config.grid,
            batch_size=batch_size,
        ).lower
    y = torch.as_tensor(list(targets), dtype=torch.int64)
    fitted = linear_probe_train(
        features=features, targets=y, num_classes=num_classes, config=config.probe, progress=progress
    )
    stem = copy.deepcopy(backbone.features[: config.block + 1]).to(memory_format=torch.contiguous_format)
    model = LowerLayerClassifier(stem=stem, head=copy.deepcopy(fitted.head), grid=config.grid).eval()
    model.requires_grad_(False)
    return StrategyOutcome(
        strategy="lower_layer_probe",
        model=model,
        history=fitted.history,
        best_epoch=fitted.best_epoch,
        train_accuracy=_head_accuracy(fitted.head, features, y),
        details={
            "config": dataclasses.asdict(config),
            "feature_dim": int(features.shape[1]),
            "parameters": sum(p.numel() for p in model.parameters()),
            **_probe_outcome(fitted),
        },
        seconds=time.perf_counter() - started,
    )


def fine_tune(
    *,
    images: Sequence[ImageSource],
    targets: Sequence[int],
    num_classes: int,
    backbone: nn.Module,
    preprocessing: Preprocessing,
    config: FineTuneConfig,
    progress: Progress | None = None,
) -> StrategyOutcome:
    """Fine-tune a copy of the pretrained ``backbone`` (top ``trainable_blocks`` or all) with a new head."""
    torch.manual_seed(config.seed)  # the head's init and dropout
    net = copy.deepcopy(backbone)
    net.classifier = nn.Sequential(nn.Dropout(p=config.dropout), nn.Linear(backbone_feature_dim(net), num_classes))
    return _network_train(
        strategy="fine_tune",
        net=net,
        images=images,
        targets=targets,
        num_classes=num_classes,
        preprocessing=preprocessing,
        config=config,
        progress=progress,
    )


def from_scratch(
    *,
    images: Sequence[ImageSource],
    targets: Sequence[int],
    num_classes: int,
    preprocessing: Preprocessing,
    config: FineTuneConfig,
    width_mult: float = 1.0,
    progress: Progress | None = None,
) -> StrategyOutcome:
    """Train MobileNetV2 from random weights with the fine-tuning trainer (every layer trains)."""
    torch.manual_seed(config.seed)
    net = torchvision.models.mobilenet_v2(
        weights=None, num_classes=num_classes, width_mult=width_mult, dropout=config.dropout
    )
    return _network_train(
        strategy="from_scratch",
        net=net,
        images=images,
        targets=targets,
        num_classes=num_classes,
        preprocessing=preprocessing,
        # Random BatchNorm statistics must be learned: never frozen from scratch.
        config=dataclasses.replace(config, trainable_blocks=None, freeze_batchnorm=False),
        progress=progress,
    )


def images_resized(*, images: Sequence[ImageSource], preprocessing: Preprocessing) -> list[Image.Image]:
    """Decode each image once, as RGB with the shorter side at ``preprocessing.resize``.

    ``image_to_array`` of the result equals ``image_to_array`` of the original (the resize is
    its first step), so evaluation is exact while augmentation crops from a small copy.
    """
    out = []
    for index, source in enumerate(images):
        owned = None
        try:
            if not isinstance(source, Image.Image):
                source = owned = source()
            image = image_rgb(source)
            size = resized_size(*image.size, shorter_side=preprocessing.resize)
            out.append(image.resize(size, resample=Image.Resampling.BILINEAR) if size != image.size else image.copy())
        except Exception as exc:
            message = f"image {index} could not be decoded: {type(exc).__name__}: {exc}"
            raise ImageDecodeError(message, index=index) from exc
        finally:
            if owned is not None:
                owned.close()  # we opened it: free the file handle now
    return out


def _train_transform(config: FineTuneConfig, preprocessing: Preprocessing):
    from torchvision.transforms import v2

    steps: list = []
    if config.augment:
        steps.append(v2.RandomResizedCrop(preprocessing.input_size, scale=config.crop_scale, antialias=True))
        if config.hflip:
            steps.append(v2.RandomHorizontalFlip())
        if config.rotation_degrees > 0:
            steps.append(v2.RandomRotation(config.rotation_degrees))
        if config.color_jitter > 0:
            c = config.color_jitter
            steps.append(v2.ColorJitter(brightness=c, contrast=c, saturation=c, hue=min(0.5, c / 10)))
    else:
        steps.append(v2.CenterCrop(preprocessing.input_size))
    steps += [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(preprocessing.mean), std=list(preprocessing.std)),
    ]
    return v2.Compose(steps)


def _network_train(
    *,
    strategy: str,
    net: nn.Module,
    images: Sequence[ImageSource],
    targets: Sequence[int],
    num_classes: int,
    preprocessing: Preprocessing,
    config: FineTuneConfig,
    progress: Progress | None,
    resized: list[Image.Image] | None = None,
) -> StrategyOutcome:
    """Train ``net`` (a MobileNetV2 with its new classifier) on the photos, augmented every epoch."""
    started = time.perf_counter()
    y = _targets_check(targets, len(images))
    if resized is None:
        resized = images_resized(images=images, preprocessing=preprocessing)
    train_idx, val_idx = stratified_split(y, fraction=config.validation_fraction, seed=config.seed)
    val_x = images_arrays(resized, val_idx.tolist(), preprocessing)

    frozen = _freeze(net, config.trainable_blocks)
    net.to(memory_format=torch.channels_last)
    head_params = list(net.classifier.parameters())
    head_ids = {id(p) for p in head_params}
    body_params = [p for p in net.parameters() if p.requires_grad and id(p) not in head_ids]
    optimizer, scheduler = _optimizer_build(head=head_params, body=body_params, config=config)
    criterion, val_criterion = _criteria(y[train_idx], num_classes=num_classes, config=config)
    transform = _train_transform(config, preprocessing)
    generator = torch.Generator().manual_seed(config.seed)

    def batches():
        """One epoch: every training photo once, freshly augmented, in a new order."""
        order = train_idx[torch.randperm(len(train_idx), generator=generator)].tolist()
        for idx in _batch_slices(order, config.batch_size):
            yield torch.stack([transform(resized[i]) for i in idx]).contiguous(memory_format=torch.channels_last), y[idx]

    history, best = _epochs_run(
        module=net,
        batches=batches,
        modes=lambda: _train_modes(net, frozen=frozen, freeze_batchnorm=config.freeze_batchnorm),
        optimizer=optimizer,
        scheduler=scheduler,
        criterion=criterion,
        validation=(lambda: _logits(net, val_x), y[val_idx], val_criterion) if len(val_idx) else None,
        config=config,
        progress=progress,
    )
    model, train_accuracy = _network_finish(net, train_x=images_arrays(resized, train_idx.tolist(), preprocessing),
                                            train_y=y[train_idx])
    return StrategyOutcome(
        strategy=strategy,
        model=model,
        history=history,
        best_epoch=best.best_epoch(history),
        train_accuracy=train_accuracy,
        details={
            "config": dataclasses.asdict(config),
            "validation_count": len(val_idx),
            "epochs_run": len(history),
            "trainable_parameters": sum(p.numel() for group in optimizer.param_groups for p in group["params"]),
            "seconds": round(time.perf_counter() - started, 3),
        },
        seconds=time.perf_counter() - started,
    )


def _targets_check(targets: Sequence[int], count: int) -> torch.Tensor:
    """The targets as int64, one per image (ValueError otherwise)."""
    y = torch.as_tensor(list(targets), dtype=torch.int64)
    if len(y) != count or len(y) == 0:
        raise ValueError(f"need one target per image, got {len(y)} targets for {count} images")
    return y


def _optimizer_build(*, head: list, body: list, config: FineTuneConfig):
    """AdamW with the head at ``lr`` and the trainable body at ``lr * backbone_lr_mult``; cosine decay."""
    groups = [{"params": head, "lr": config.lr}]
    if body and config.backbone_lr_mult > 0:
        groups.append({"params": body, "lr": config.lr * config.backbone_lr_mult})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)


def _criteria(y_train: torch.Tensor, *, num_classes: int, config: FineTuneConfig) -> tuple[nn.Module, nn.Module]:
    """(training loss, validation loss): class-weighted; only training is label-smoothed."""
    weight = _class_weights(y_train, num_classes) if config.class_weighting else None
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
    return criterion, nn.CrossEntropyLoss(weight=weight)  # no smoothing: an honest stopping signal


def _batch_slices(order: Sequence, batch_size: int):
    """Consecutive batches of ``order``; a trailing batch of one is dropped (BatchNorm cannot train on it)."""
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        if len(idx) < 2 and start > 0:
            continue
        yield idx


def _train_modes(module: nn.Module, *, frozen: Sequence[nn.Module] = (), freeze_batchnorm: bool) -> None:
    """Training mode, except frozen blocks and (if asked) BatchNorm, which keep their statistics."""
    module.train()
    for part in frozen:
        part.eval()  # frozen BatchNorm keeps its ImageNet statistics
    if freeze_batchnorm:
        for part in module.modules():
            if isinstance(part, nn.BatchNorm2d):
                part.eval()


def _epoch_train(module: nn.Module, batches, *, criterion, optimizer) -> dict:
    """One pass over ``batches`` of (x, target); the loss and accuracy on what it saw."""
    loss_sum, correct, seen = 0.0, 0, 0
    for x, target in batches:
        logits = module(x)
        loss = criterion(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(target)
        correct += int((logits.argmax(1) == target).sum())
        seen += len(target)
    return {"train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1)}  # on augmented views


def _epochs_run(*, module, batches, modes, optimizer, scheduler, criterion, validation, config: FineTuneConfig,
                progress) -> tuple[list[dict], _BestEpoch]:
    """Train up to ``config.epochs`` epochs, stopping early on the validation loss; the best weights are loaded.

    ``batches()`` yields one epoch's (x, target); ``validation`` is (logits(), targets, loss) or None.
    """
    history: list[dict] = []
    best = _BestEpoch(epochs=config.epochs)
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        modes()
        stats = _epoch_train(module, batches(), criterion=criterion, optimizer=optimizer)
        lr = optimizer.param_groups[0]["lr"]  # the head's rate this epoch
        scheduler.step()
        record = {"epoch": epoch, **stats, "val_loss": None, "val_accuracy": None, "lr": lr}
        if validation is not None:
            logits, targets, val_criterion = validation
            best.update(record, logits=logits(), targets=targets, criterion=val_criterion, module=module, epoch=epoch)
        if best.epoch_end(record, started=t0, history=history, progress=progress, epochs=config.epochs,
                          patience=config.patience if validation is not None else None):
            break
    if best.state is not None:
        module.load_state_dict(best.state)
    return history, best


def _network_finish(net: nn.Module, *, train_x: torch.Tensor, train_y: torch.Tensor) -> tuple[nn.Module, float]:
    """(the frozen probability model, its accuracy on the unaugmented training photos)."""
    net.eval()
    train_accuracy = float((_logits(net, train_x).argmax(1) == train_y).float().mean())
    net.to(memory_format=torch.contiguous_format)
    net.requires_grad_(False)
    return ProbabilityClassifier(net).eval(), train_accuracy


class _BestEpoch:
    """Early stopping on the validation loss: remembers the best epoch and its weights."""

    def __init__(self, *, epochs: int):
        self.loss, self.epoch, self.state, self.stale = math.inf, epochs, None, 0

    def update(self, record: dict, *, logits, targets, criterion, module: nn.Module, epoch: int) -> None:
        """Score this epoch into ``record``; keep a copy of ``module``'s weights if it is the best so far."""
        record["val_loss"] = float(criterion(logits, targets))
        record["val_accuracy"] = float((logits.argmax(1) == targets).float().mean())
        if record["val_loss"] < self.loss - MIN_LOSS_IMPROVEMENT:
            self.loss, self.epoch, self.stale = record["val_loss"], epoch, 0
            self.state = copy.deepcopy(module.state_dict())
        else:
            self.stale += 1

    def best_epoch(self, history: list) -> int:
        """The epoch whose weights were kept (the last one run when nothing was validated)."""
        return self.epoch if self.state is not None else len(history)

    def epoch_end(self, record: dict, *, started: float, history: list, progress, epochs: int, patience) -> bool:
        """Close the epoch's record; True when training should stop (``patience`` None: never early)."""
        record["seconds"] = round(time.perf_counter() - started, 3)
        history.append(record)
        if progress is not None:
            progress(record["epoch"], epochs)
        return patience is not None and self.stale >= patience


def _freeze(net: nn.Module, trainable_blocks: int | None) -> list[nn.Module]:
    """Make only the top ``trainable_blocks`` of ``features`` (and the head) trainable; return the frozen ones."""
    net.requires_grad_(True)
    if trainable_blocks is None:
        return []
    blocks = list(net.features)
    frozen = blocks[: max(0, len(blocks) - trainable_blocks)]
    for module in frozen:
        module.requires_grad_(False)
    return frozen


def _class_weights(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    counts = torch.bincount(y, minlength=num_classes).to(torch.float32)
    return torch.where(counts > 0, len(y) / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))


def images_arrays(resized: Sequence[Image.Image], index: Sequence[int], preprocessing: Preprocessing) -> torch.Tensor:
    """The centre crops an app feeds (``image_to_array``) of ``resized[index]``, as one NCHW batch."""
    size = preprocessing.input_size
    if not index:
        return torch.empty((0, 3, size, size))
    return torch.from_numpy(np.stack([image_to_array(resized[i], preprocessing=preprocessing) for i in index]))


def _logits(net: nn.Module, x: torch.Tensor, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out.append(net(x[start : start + batch_size].contiguous(memory_format=torch.channels_last)))
    return torch.cat(out) if out else torch.empty(0)


def _head_accuracy(head: nn.Linear, features: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((head(features).argmax(dim=1) == y).float().mean())


def _probe_outcome(fitted) -> dict:
    return {
        "best_epoch": fitted.best_epoch,
        "validation_count": fitted.validation_count,
        "refit_on_all": fitted.refit,
        "seconds": round(fitted.seconds, 3),
    }


# -- fast fine-tuning: the frozen part runs once per photo and view, not every epoch ---------


@dataclass
class FrozenActivations:
    """Outputs of the frozen ``features[:cut]`` for each photo: [N, views, C, H, W] float16.

    View 0 is the centre crop an app feeds (evaluation); views 1.. are fixed augmented views
    (framing, mirror, tilt, light) drawn once, so training never re-runs the frozen layers.
    """

    cut: int
    views: torch.Tensor
    seconds: float
    runtime: str = "torch"  # what ran the frozen part (FrozenRunner)


class TopBlocks(nn.Module):
    """The trainable top of MobileNetV2: ``features[cut:]`` -> global average pool -> classifier."""

    def __init__(self, *, blocks: nn.Sequential, classifier: nn.Module):
        super().__init__()
        self.blocks = blocks
        self.classifier = classifier

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        """Frozen-part activations -> logits (torchvision's MobileNetV2.forward after the cut)."""
        return self.classifier(torch.nn.functional.adaptive_avg_pool2d(self.blocks(a), 1).flatten(1))


def frozen_activations(
    *,
    backbone: nn.Module,
    resized: Sequence[Image.Image],
    preprocessing: Preprocessing,
    config: FineTuneConfig,
    views: int,
    seed: int = 0,
    batch_size: int = 32,
    progress: Progress | None = None,
    runtime: str = "auto",
    runner: FrozenRunner | None = None,
) -> FrozenActivations:
    """Run the frozen part once per photo and view (``resized`` from ``images_resized``).

    ``runtime``: "auto" uses onnxruntime from ``FROZEN_ONNX_MIN_IMAGES`` images (photos x
    (views + 1)) up, where the one-off export pays for itself; else "torch" or "onnxruntime".
    ``runner``: a ``frozen_runner`` built already for this cut (``runtime`` is then ignored).
    """
    started = time.perf_counter()
    cut = frozen_cut(backbone, config)
    if runner is None:
        if runtime == "auto":
            runtime = frozen_runtime_auto(len(resized) * (views + 1))
        runner = frozen_runner(backbone.features[:cut], preprocessing=preprocessing, runtime=runtime)
    elif runner.blocks != cut:
        raise ValueError(f"the runner holds features[:{runner.blocks}], the config freezes features[:{cut}]")
    stem = runner
    transform = _train_transform(dataclasses.replace(config, augment=True), preprocessing)
    per_photo = max(1, batch_size // (views + 1))
    chunks = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the augmented views are fixed for a seed
        with torch.inference_mode():
            for start in range(0, len(resized), per_photo):
                group = resized[start : start + per_photo]
                x = []
                for image in group:
                    x.append(torch.from_numpy(image_to_array(image, preprocessing=preprocessing)))
                    x += [transform(image) for _ in range(views)]
                out = stem(torch.stack(x))
                chunks.append(out.reshape(len(group), views + 1, *out.shape[1:]).to(torch.float16).contiguous())
                if progress is not None:
                    progress(start + len(group), len(resized))
    acts = torch.cat(chunks).clone() if chunks else torch.empty(0)
    return FrozenActivations(cut=cut, views=acts, seconds=time.perf_counter() - started, runtime=stem.runtime)


def frozen_cut(backbone: nn.Module, config: FineTuneConfig) -> int:
    """How many blocks of ``backbone.features`` stay frozen under ``config.trainable_blocks``."""
    cut = len(backbone.features) - int(config.trainable_blocks or 0)
    if not 0 < cut < len(backbone.features):
        raise ValueError(f"trainable_blocks must leave a frozen part, got {config.trainable_blocks}")
    return cut


def frozen_runtime_auto(images: int) -> str:
    """onnxruntime from ``FROZEN_ONNX_MIN_IMAGES`` images up (the export pays for itself), else torch."""
    return "onnxruntime" if images >= FROZEN_ONNX_MIN_IMAGES else "torch"


class FrozenRunner:
    """The frozen ``features[:cut]`` as a function of a normalised NCHW float32 batch.

    ``runtime`` "onnxruntime": the part is exported once and run by an onnxruntime session
    (fused convolutions: about 3x less CPU than eager torch on these cores); "torch": eager,
    channels_last. The outputs agree to about 1e-5 (tested), far below the float16 cache.
    """

    def __init__(self, stem: nn.Module, *, preprocessing: Preprocessing, runtime: str):
        self.runtime = runtime
        self.blocks = len(stem)  # stem is features[:blocks]
        self._stem = stem.eval()
        self._session = None
        if runtime == "onnxruntime":
            self._session = _frozen_session(stem, preprocessing=preprocessing)
        elif runtime == "torch":
            self._stem.to(memory_format=torch.channels_last)
        else:
            raise ValueError(f"runtime must be 'auto', 'torch' or 'onnxruntime', got {runtime!r}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._session is not None:
            return torch.from_numpy(self._session.run(None, {INPUT_NAME: x.numpy()})[0])
        return self._stem(x.contiguous(memory_format=torch.channels_last))


def frozen_runner(stem: nn.Module, *, preprocessing: Preprocessing, runtime: str) -> FrozenRunner:
    """A ``FrozenRunner``; falls back to torch when the export or the session fails (logged)."""
    if runtime == "onnxruntime":
        try:
            return FrozenRunner(stem, preprocessing=preprocessing, runtime=runtime)
        except Exception as exc:  # any exporter or runtime failure: eager torch still works
            logger.warning("frozen part runs in torch: onnxruntime failed: %s: %s", type(exc).__name__, exc)
    return FrozenRunner(stem, preprocessing=preprocessing, runtime="torch")


def _frozen_session(stem: nn.Module, *, preprocessing: Preprocessing):
    """Export a copy of ``stem`` to a temporary ONNX file and open it with torch's thread count."""
    part = copy.deepcopy(stem).to(memory_format=torch.contiguous_format)
    with tempfile.TemporaryDirectory() as tmp:
        path = onnx_export(model=part, path=Path(tmp) / "frozen.onnx", preprocessing=preprocessing)
        return onnx_session(path_or_bytes=path.read_bytes(), num_threads=torch.get_num_threads())


def top_blocks_train(
    *,
    backbone: nn.Module,
    acts: FrozenActivations,
    targets: torch.Tensor,
    index: torch.Tensor,
    num_classes: int,
    config: FineTuneConfig,
    progress: Progress | None = None,
) -> tuple[TopBlocks, list[dict], int]:
    """Train a copy of ``features[cut:]`` and a new head on the cached activations of ``index``.

    Each epoch shows every photo once, as one of its views drawn at random; early stopping on
    the centre views of a stratified validation slice keeps the best epoch's weights.
    Returns (the trained top, history, best epoch).
    """
    torch.manual_seed(config.seed)  # the head's init and dropout
    top = TopBlocks(
        blocks=copy.deepcopy(backbone.features[acts.cut :]),
        classifier=nn.Sequential(nn.Dropout(p=config.dropout), nn.Linear(backbone_feature_dim(backbone), num_classes)),
    )
    top.requires_grad_(True)
    top.to(memory_format=torch.channels_last)
    y_all = targets.to(torch.int64)
    y = y_all[index]
    train_pos, val_pos = stratified_split(y, fraction=config.validation_fraction, seed=config.seed)
    train_idx, val_idx = index[train_pos], index[val_pos]
    if config.backbone_lr_mult <= 0:
        top.blocks.requires_grad_(False)
    optimizer, scheduler = _optimizer_build(
        head=list(top.classifier.parameters()), body=list(top.blocks.parameters()), config=config
    )
    criterion, val_criterion = _criteria(y_all[train_idx], num_classes=num_classes, config=config)
    generator = torch.Generator().manual_seed(config.seed)
    n_views = acts.views.shape[1]

    def batches():
        """One epoch: every training photo once, as one of its cached views drawn at random."""
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        view = torch.randint(0, n_views, (len(order),), generator=generator)
        for positions in _batch_slices(range(len(order)), config.batch_size):
            idx, v = order[positions.start : positions.stop], view[positions.start : positions.stop]
            yield acts.views[idx, v].float().contiguous(memory_format=torch.channels_last), y_all[idx]

    history, best = _epochs_run(
        module=top,
        batches=batches,
        modes=lambda: _train_modes(top, freeze_batchnorm=config.freeze_batchnorm),
        optimizer=optimizer,
        scheduler=scheduler,
        criterion=criterion,
        validation=(lambda: top_blocks_logits(top, acts, val_idx), y_all[val_idx], val_criterion)
        if len(val_idx) else None,
        config=config,
        progress=progress,
    )
    top.eval()
    return top, history, best.best_epoch(history)


def top_blocks_logits(top: TopBlocks, acts: FrozenActivations, index: torch.Tensor, batch_size: int = TOP_EVAL_BATCH) -> torch.Tensor:
    """Logits of the centre views (view 0) of ``index``."""
    top.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(index), batch_size):
            x = acts.views[index[start : start + batch_size], 0].float().contiguous(memory_format=torch.channels_last)
            out.append(top(x))
    return torch.cat(out) if out else torch.empty(0)


def fine_tune_cached(
    *,
    backbone: nn.Module,
    acts: FrozenActivations,
    targets: Sequence[int],
    num_classes: int,
    config: FineTuneConfig,
    views: int,
    progress: Progress | None = None,
) -> StrategyOutcome:
    """Fine-tune the top blocks on all photos' cached activations; the model is a whole MobileNetV2."""
    started = time.perf_counter()
    y = torch.as_tensor(list(targets), dtype=torch.int64)
    top, history, best_epoch = top_blocks_train(
        backbone=backbone, acts=acts, targets=y, index=torch.arange(len(y)), num_classes=num_classes,
        config=config, progress=progress,
    )
    train_accuracy = float((top_blocks_logits(top, acts, torch.arange(len(y))).argmax(1) == y).float().mean())
    net = copy.deepcopy(backbone)
    for offset, block in enumerate(top.blocks):
        net.features[acts.cut + offset] = block
    net.classifier = top.classifier
    net.to(memory_format=torch.contiguous_format)
    net.requires_grad_(False)
    return StrategyOutcome(
        strategy="fine_tune",
        model=ProbabilityClassifier(net).eval(),
        history=history,
        best_epoch=best_epoch,
        train_accuracy=train_accuracy,
        details={
            "config": dataclasses.asdict(config),
            "method": "top blocks on cached frozen activations",
            "frozen_blocks": acts.cut,
            "views": views,
            "epochs_run": len(history),
            "trainable_parameters": sum(p.numel() for p in top.parameters()),
            "seconds": round(time.perf_counter() - started + acts.seconds, 3),
        },
        seconds=time.perf_counter() - started + acts.seconds,
    )
