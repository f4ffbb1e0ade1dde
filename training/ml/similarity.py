"""Measured similarity of a labelled photo set to ImageNet, from the pretrained network itself.

Idea: MobileNetV2's top features (the 1280-d pooled output) are specialised to ImageNet's
objects; its lower layers (edges, textures, simple shapes) are generic. On data like
ImageNet the top features separate the labels much better than lower-layer features; on
data unlike ImageNet (digits, X-rays, spectrograms) they separate them no better, often
worse, because the specialised top layers discard what matters. So we measure both with the
same cheap classifier (cross-validated ridge classifier on standardised features, closed form)
and compare chance-normalised accuracies ("skill" = (acc - chance) / (1 - chance), chance =
majority-label share, so 2-label and 10-label sets are comparable):

    score = skill(top) - skill(lower)          similar  <=>  score >= threshold (default 0)

Threshold 0 means "the ImageNet-specific layers add separating power beyond generic
features". Measured here: ants/bees at 96 px +0.15 to +0.42 over 12-60 photos per label
(e.g. 60 per label: top 0.82 vs lower 0.68, +0.27); scikit-learn digits at 64 px -0.23
(150 digits: top 0.74 vs lower 0.95); see tests/ml/test_ml_similarity.py. Below ~96 px
photos drift off ImageNet's statistics and the score of real photos shrinks towards 0
(ants/bees at 64 px: about +0.08), so measure at >= 96 px. Both layers come from ONE
forward pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence, Sized
from dataclasses import asdict, dataclass

import torch

from training.ml.config import Preprocessing
from training.ml.images import ImageSource, image_batches

#: Lower-layer cut: output of ``features[6]`` (32 channels, stride 8, after the 3rd stage).
DEFAULT_LOWER_BLOCK = 6
#: Lower-layer activations are average-pooled onto a grid x grid map (keeps coarse layout).
DEFAULT_LOWER_GRID = 2
#: score >= threshold: similar to ImageNet.
SIMILARITY_THRESHOLD = 0.0


@dataclass(frozen=True)
class LayerFeatures:
    """Pooled lower-layer features [N, C_low * grid^2] and top features [N, 1280] of the same images."""

    lower: torch.Tensor
    top: torch.Tensor
    block: int
    grid: int


def lower_pool(x: torch.Tensor, *, grid: int) -> torch.Tensor:
    """Average-pool activations [N, C, H, W] onto a grid x grid map and flatten to [N, C*grid*grid]."""
    return torch.nn.functional.adaptive_avg_pool2d(x, grid).flatten(1)


def layer_features_extract(
    *,
    backbone: torch.nn.Module,
    images: Iterable[ImageSource],
    preprocessing: Preprocessing,
    block: int = DEFAULT_LOWER_BLOCK,
    grid: int = DEFAULT_LOWER_GRID,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> LayerFeatures:
    """Lower-layer (after ``features[block]``) and top pooled features from one forward pass.

    ``top`` equals ``backbone(x)`` for a ``backbone_load`` backbone (pooled 1280-d output).
    """
    layers = backbone.features
    if not 0 <= block < len(layers) - 1:
        raise ValueError(f"block must be in [0, {len(layers) - 1}), got {block}")
    total = len(images) if isinstance(images, Sized) else -1
    backbone.eval()
    backbone.to(memory_format=torch.channels_last)
    lowers, tops, done = [], [], 0
    with torch.inference_mode():
        for batch in image_batches(images, preprocessing=preprocessing, batch_size=batch_size):
            x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
            for index, layer in enumerate(layers):
                x = layer(x)
                if index == block:
                    lowers.append(lower_pool(x, grid=grid).float())
            tops.append(torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1).float())
            done += len(batch)
            if progress is not None:
                progress(done, total)
    if not tops:
        raise ValueError("no images")
    # Clone outside inference mode so the tensors can be trained on later.
    return LayerFeatures(lower=torch.cat(lowers).clone(), top=torch.cat(tops).clone(), block=block, grid=grid)


@dataclass(frozen=True)
class ImagenetSimilarity:
    """Measured similarity to ImageNet; ``to_dict()`` is JSON-ready."""

    top_accuracy: float  # cross-validated accuracy of a linear classifier on top features
    lower_accuracy: float  # the same on lower-layer features
    chance: float  # majority-label share
    score: float  # skill(top) - skill(lower), skill = (acc - chance) / (1 - chance)
    threshold: float
    similar: bool
    count: int
    folds: int
    block: int
    grid: int
    seconds: float

    @property
    def label(self) -> str:
        """"similar" or "dissimilar"."""
        return "similar" if self.similar else "dissimilar"

    def to_dict(self) -> dict:
        """JSON-ready form with the label."""
        return {**asdict(self), "label": self.label}


def similarity_from_features(
    *,
    features: LayerFeatures,
    targets: Sequence[int] | torch.Tensor,
    threshold: float = SIMILARITY_THRESHOLD,
    folds: int = 5,
    ridge: float = 0.1,
    seed: int = 0,
) -> ImagenetSimilarity:
    """Score similarity from already extracted features (see the module docstring)."""
    started = time.perf_counter()
    y = torch.as_tensor(targets, dtype=torch.int64)
    counts = torch.bincount(y)
    present = counts[counts > 0]
    if len(present) < 2:
        raise ValueError("need at least two labels to measure similarity")
    folds = int(min(folds, int(present.min())))
    if folds < 2:
        raise ValueError("need at least two photos of every label to cross-validate")
    top = _cv_accuracy(features.top, y, folds=folds, ridge=ridge, seed=seed)
    lower = _cv_accuracy(features.lower, y, folds=folds, ridge=ridge, seed=seed)
    chance = float(present.max()) / len(y)
    score = _skill(top, chance) - _skill(lower, chance)
    return ImagenetSimilarity(
        top_accuracy=round(top, 4),
        lower_accuracy=round(lower, 4),
        chance=round(chance, 4),
        score=round(score, 4),
        threshold=threshold,
        similar=score >= threshold,
        count=len(y),
        folds=folds,
        block=features.block,
        grid=features.grid,
        seconds=round(time.perf_counter() - started, 3),
    )


def imagenet_similarity_measure(
    *,
    backbone: torch.nn.Module,
    images: Sequence[ImageSource],
    targets: Sequence[int],
    preprocessing: Preprocessing,
    threshold: float = SIMILARITY_THRESHOLD,
    block: int = DEFAULT_LOWER_BLOCK,
    grid: int = DEFAULT_LOWER_GRID,
    folds: int = 5,
    batch_size: int = 32,
) -> ImagenetSimilarity:
    """Extract both layers in one pass and score similarity; ``seconds`` includes extraction."""
    started = time.perf_counter()
    features = layer_features_extract(
        backbone=backbone, images=images, preprocessing=preprocessing, block=block, grid=grid, batch_size=batch_size
    )
    measured = similarity_from_features(features=features, targets=targets, threshold=threshold, folds=folds)
    return ImagenetSimilarity(**{**asdict(measured), "seconds": round(time.perf_counter() - started, 3)})


def _skill(accuracy: float, chance: float) -> float:
    return (accuracy - chance) / (1.0 - chance) if chance < 1.0 else 0.0


def _cv_accuracy(x: torch.Tensor, y: torch.Tensor, *, folds: int, ridge: float, seed: int) -> float:
    """Stratified k-fold accuracy of a ridge classifier (closed form, deterministic)."""
    generator = torch.Generator().manual_seed(seed)
    fold_of = torch.empty(len(y), dtype=torch.int64)
    for label in torch.unique(y).tolist():
        idx = torch.nonzero(y == label).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        fold_of[idx] = torch.arange(len(idx)) % folds
    correct = 0
    for k in range(folds):
        train, test = fold_of != k, fold_of == k
        correct += int((ridge_predict(x[train], y[train], x[test], ridge=ridge) == y[test]).sum())
    return correct / len(y)


def ridge_predict(x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, *, ridge: float) -> torch.Tensor:
    """Ridge classifier (least squares onto one-hot targets), solved in closed form in the dual."""
    mean, std = x.mean(0), x.std(0, unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    xs = ((x - mean) / std).double()
    xt = ((x_test - mean) / std).double()
    targets = torch.nn.functional.one_hot(y, int(y.max()) + 1).double()
    targets = targets - targets.mean(0)
    # Penalty proportional to the dimension (each standardised feature has variance 1), so
    # 1280-d top features and 128-d lower features are regularised alike.
    gram = xs @ xs.T + ridge * xs.shape[1] * torch.eye(len(xs), dtype=torch.float64)
    alpha = torch.linalg.solve(gram, targets)
    return (xt @ xs.T @ alpha).argmax(1)
