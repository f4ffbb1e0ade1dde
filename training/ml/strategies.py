"""Training strategy by data set size x similarity to ImageNet (the classic transfer table).

| size  | similar to ImageNet | strategy                                                    |
|-------|---------------------|-------------------------------------------------------------|
| small | yes                 | ``linear_probe``: linear head on frozen top features        |
| small | no                  | ``lower_layer_probe``: linear head on lower-layer features  |
| large | yes                 | ``fine_tune``: pretrained network, trained end to end       |
| large | no                  | ``from_scratch``: the same trainer from random weights      |

``strategy_choose`` applies the table (torch-free: the web process can show the decision);
the four trainers live in ``training.ml.networks`` and run from ``transfer.transfer_pipeline``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from training.ml.config import LinearProbeConfig

#: Keys a measured selection adds to the decision record.
_SELECTION_KEYS = ("candidates", "winner", "why", "comparison", "selection")
STRATEGIES = ("linear_probe", "lower_layer_probe", "fine_tune", "from_scratch")
_TABLE = {
    ("small", True): "linear_probe",
    ("small", False): "lower_layer_probe",
    ("large", True): "fine_tune",
    ("large", False): "from_scratch",
}


@dataclass(frozen=True)
class StrategyThresholds:
    """Where the table's rows and columns split."""

    # "large" when the SMALLEST label has this many training photos: the ~200 photos per
    # class of a robust production model (background.md); one rare label keeps it "small".
    large_per_label: int = 200
    # similar when ImagenetSimilarity.score >= this (similarity.py explains the score).
    similarity_min_score: float = 0.0

    def __post_init__(self) -> None:
        if self.large_per_label < 1:
            raise ValueError("large_per_label must be >= 1")


@dataclass(frozen=True)
class LowerLayerConfig:
    """Lower-layer probe: cut after ``features[block]``, pool onto grid x grid, linear head."""

    block: int = 6  # 32 channels at stride 8: edges/textures, little ImageNet specificity
    grid: int = 2  # 2x2 pooling keeps coarse layout (digits need it): 32 * 4 = 128 features
    probe: LinearProbeConfig = field(default_factory=LinearProbeConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.block < 18 or self.grid < 1:
            raise ValueError("block must be in [0, 18) and grid >= 1")


@dataclass(frozen=True)
class FineTuneConfig:
    """Whole-network training (fine-tuning or from scratch) with phone-photo augmentation.

    Early stopping on a stratified validation slice of the train split (``patience`` epochs
    without a lower validation loss); the best epoch's weights are kept.
    """

    seed: int = 0
    epochs: int = 30
    patience: int = 6
    batch_size: int = 32
    lr: float = 1e-3  # AdamW, cosine decay over ``epochs``
    backbone_lr_mult: float = 0.1  # pretrained layers move slower than the new head
    weight_decay: float = 1e-2
    trainable_blocks: int | None = None  # top N of features[] trainable; None: all, 0: head only
    # BatchNorm keeps its pretrained statistics: small, augmented batches would otherwise shift
    # every feature the head (and the probe it started from) relies on.
    freeze_batchnorm: bool = True
    validation_fraction: float = 0.15
    class_weighting: bool = True
    label_smoothing: float = 0.1
    dropout: float = 0.2
    # Augmentation for phone photos: framing, mirror, tilt, light.
    augment: bool = True
    crop_scale: tuple[float, float] = (0.6, 1.0)
    hflip: bool = True
    rotation_degrees: float = 10.0
    color_jitter: float = 0.2  # brightness, contrast and saturation; hue gets a tenth of it

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("epochs, batch_size and patience must be >= 1")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.backbone_lr_mult:
            raise ValueError("lr must be > 0, weight_decay and backbone_lr_mult >= 0")
        if not 0.0 <= self.validation_fraction < 1.0 or not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("validation_fraction and label_smoothing must be in [0, 1)")
        if self.trainable_blocks is not None and self.trainable_blocks < 0:
            raise ValueError("trainable_blocks must be None or >= 0")
        object.__setattr__(self, "crop_scale", tuple(float(v) for v in self.crop_scale))


#: Random init needs a higher learning rate and more epochs than fine-tuning.
FROM_SCRATCH_DEFAULT = FineTuneConfig(
    lr=3e-3, backbone_lr_mult=1.0, epochs=60, patience=10, freeze_batchnorm=False
)


@dataclass(frozen=True)
class SelectionConfig:
    """Measured selection (``training.ml.selection``): which candidates run, how they are compared.

    Candidates are compared by stratified, group-aware k-fold cross-validation on the train
    split only; one replaces the rule's choice only when a paired comparison over the same
    out-of-fold photos puts the lower end of its 95% interval above 0.
    """

    folds: int = 5
    # Fine-tuning the top blocks is a candidate when EVERY label has this many training photos.
    fine_tune_min_per_label: int = 30
    # Wall-clock budget of the whole selection (probes are nearly free; expensive ones wait).
    budget_minutes: float = 60.0
    # Lower-layer probe: taps (block of ``features``) x pooling grids, chosen by inner CV.
    lower_blocks: tuple[int, ...] = (3, 6, 10, 13)
    lower_grids: tuple[int, ...] = (1, 2)
    # The fast fine-tuning candidate: the frozen part's activations are computed once per
    # photo and view (a centre view + ``fine_tune_views`` fixed augmented views), then the top
    # ``fine_tune.trainable_blocks`` blocks and the head train on them. 12 blocks are the whole
    # 14x14 and 7x7 stages (features[7:]): the frozen part is only the low-level filters, as a
    # whole-network fine-tune would leave them nearly unchanged; BatchNorm learns the new data's
    # statistics in these stages. A short cosine schedule on every photo, keeping the last
    # weights: no validation slice, so no early stopping on a loss that a few dozen photos make
    # noise of. Measured on textures unlike ImageNet (README, "Fine-tuning on 500 photos"): the
    # top 2 blocks with ImageNet statistics lost 3.3 points to a whole-network loop; stopping on
    # the validation loss kept epoch-2 weights and lost 2.3.
    fine_tune: FineTuneConfig = field(
        default_factory=lambda: FineTuneConfig(
            epochs=6, trainable_blocks=12, backbone_lr_mult=0.3, freeze_batchnorm=False, validation_fraction=0.0
        )
    )
    fine_tune_views: int = 4
    # The cached activations (float16, every photo x views) must fit this; else the candidate is
    # skipped with the reason. At 224 px one view of features[:7] is 49 KB: 4 GB is ~16,000 photos.
    fine_tune_cache_mb: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        if self.folds < 2 or self.fine_tune_min_per_label < 2 or self.fine_tune_views < 0:
            raise ValueError("folds and fine_tune_min_per_label must be >= 2, fine_tune_views >= 0")
        if not self.budget_minutes >= 0:
            raise ValueError("budget_minutes must be >= 0")
        if self.fine_tune_cache_mb < 1:
            raise ValueError("fine_tune_cache_mb must be >= 1")
        if not self.lower_blocks or not self.lower_grids:
            raise ValueError("lower_blocks and lower_grids must not be empty")
        if any(not 0 <= b < 18 for b in self.lower_blocks) or any(g < 1 for g in self.lower_grids):
            raise ValueError("lower_blocks must be in [0, 18) and lower_grids >= 1")
        if self.fine_tune.trainable_blocks is None or not 1 <= self.fine_tune.trainable_blocks < 18:
            raise ValueError("the fast fine-tuning candidate needs 1 <= trainable_blocks < 18")
        object.__setattr__(self, "lower_blocks", tuple(int(b) for b in self.lower_blocks))
        object.__setattr__(self, "lower_grids", tuple(int(g) for g in self.lower_grids))


@dataclass(frozen=True)
class StrategyDecision:
    """Which strategy runs and why; ``to_record()`` is stored with the training run."""

    label_counts: dict[str, int]
    size: str  # "small" | "large"
    similarity: dict | None  # ImagenetSimilarity.to_dict(), None when not measured
    similar: bool | None
    thresholds: StrategyThresholds
    rule_choice: str | None  # what the table says (None without a similarity measurement)
    override: str | None
    choice: str
    reason: str
    # Measured selection (``selection.SelectionOutcome.to_record()``): candidates, winner, why.
    selection: dict | None = None

    def to_record(self) -> dict:
        """JSON-ready record of inputs, measurements, thresholds, choice and reason."""
        return {
            "label_counts": dict(self.label_counts),
            "size": self.size,
            "similarity": self.similarity,
            "similar": self.similar,
            "thresholds": dataclasses.asdict(self.thresholds),
            "rule_choice": self.rule_choice,
            "override": self.override,
            "choice": self.choice,
            "reason": self.reason,
            **(self.selection or {}),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> StrategyDecision:
        """Rebuild from ``to_record()`` output (e.g. a decision stored before the nightly run)."""
        if record["choice"] not in STRATEGIES:
            raise ValueError(f"unknown strategy {record['choice']!r}")
        return cls(
            label_counts={str(k): int(v) for k, v in record["label_counts"].items()},
            size=record["size"],
            similarity=record.get("similarity"),
            similar=record.get("similar"),
            thresholds=StrategyThresholds(**record["thresholds"]),
            rule_choice=record.get("rule_choice"),
            override=record.get("override"),
            choice=record["choice"],
            reason=record["reason"],
            selection={k: record[k] for k in _SELECTION_KEYS if k in record} or None,
        )


def strategy_choose(
    *,
    label_counts: Mapping[str, int],
    similarity: Any | None,
    thresholds: StrategyThresholds = StrategyThresholds(),
    override: str | None = None,
) -> StrategyDecision:
    """Apply the size x similarity table; ``override`` (one of ``STRATEGIES``) wins.

    ``label_counts`` are training photos per label; ``similarity`` is an ``ImagenetSimilarity``
    (or its ``to_dict()``), and may be None only with an override.
    """
    counts = {str(k): int(v) for k, v in label_counts.items()}
    if len(counts) < 2 or any(v < 0 for v in counts.values()):
        raise ValueError(f"need counts for at least two labels, got {counts}")
    if override is not None and override not in STRATEGIES:
        raise ValueError(f"unknown strategy {override!r}; expected one of {STRATEGIES}")
    smallest_label = min(counts, key=counts.get)
    smallest = counts[smallest_label]
    size = "large" if smallest >= thresholds.large_per_label else "small"
    size_why = (
        f"smallest label {smallest_label!r} has {smallest} photos "
        f"{'>=' if size == 'large' else '<'} {thresholds.large_per_label} ({size})"
    )
    measured = None
    if similarity is not None:
        measured = similarity.to_dict() if hasattr(similarity, "to_dict") else dict(similarity)
    similar = rule = None
    if measured is not None:
        score = float(measured["score"])
        similar = score >= thresholds.similarity_min_score
        rule = _TABLE[(size, similar)]
        similar_why = (
            f"similarity score {score:+.3f} {'>=' if similar else '<'} {thresholds.similarity_min_score:+.3f} "
            f"({'similar' if similar else 'dissimilar'} to ImageNet: top-feature accuracy "
            f"{float(measured['top_accuracy']):.3f} vs lower-layer {float(measured['lower_accuracy']):.3f})"
        )
    if override is not None:
        choice = override
        if rule is None:
            reason = f"override: {override} (similarity not measured); {size_why}"
        else:
            agrees = "agrees with" if rule == override else "replaces"
            reason = f"override: {override} {agrees} the rule's {rule}; {size_why}; {similar_why}"
    elif rule is None:
        raise ValueError("similarity is required unless a strategy override is given")
    else:
        choice = rule
        reason = f"rule: {size_why}; {similar_why} -> {rule}"
    return StrategyDecision(
        label_counts=counts,
        size=size,
        similarity=measured,
        similar=similar,
        thresholds=thresholds,
        rule_choice=rule,
        override=override,
        choice=choice,
        reason=reason,
    )
