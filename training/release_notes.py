"""Release notes of a model version: its holdout metrics and the change since the previous one.

Pure functions over ``ModelVersion.metrics`` dicts (see training.ml.metrics.to_dict), shared
by the releases page and the newsletter; no queries here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

METRIC_NAMES = ("precision", "recall", "f1")


@dataclass(frozen=True)
class LabelChange:
    """One label's holdout metrics and their change since the previous version (None: new label)."""

    label: str
    precision: float | None
    recall: float | None
    f1: float | None
    support: int | None
    change: dict[str, float] | None = None

    @property
    def precision_change(self) -> float | None:
        return None if self.change is None else self.change.get("precision")

    @property
    def recall_change(self) -> float | None:
        return None if self.change is None else self.change.get("recall")

    @property
    def f1_change(self) -> float | None:
        return None if self.change is None else self.change.get("f1")


@dataclass(frozen=True)
class ReleaseNotes:
    """Holdout accuracy and per-label metrics of one version compared with its predecessor."""

    accuracy: float | None
    accuracy_change: float | None
    labels: list[LabelChange] = field(default_factory=list)


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def release_notes_build(*, metrics: dict, previous_metrics: dict | None) -> ReleaseNotes:
    """Compare two metrics dicts label by label (missing keys are tolerated, never invented)."""
    metrics = metrics or {}
    per_label = metrics.get("per_label") or {}
    previous_per_label = (previous_metrics or {}).get("per_label") or {}
    labels = []
    for name in sorted(per_label):
        current = per_label[name] or {}
        before = previous_per_label.get(name) if previous_metrics is not None else None
        change = None
        if before is not None:
            change = {}
            for metric in METRIC_NAMES:
                now_value, before_value = _number(current.get(metric)), _number(before.get(metric))
                if now_value is not None and before_value is not None:
                    change[metric] = now_value - before_value
        labels.append(
            LabelChange(
                label=name,
                precision=_number(current.get("precision")),
                recall=_number(current.get("recall")),
                f1=_number(current.get("f1")),
                support=current.get("support"),
                change=change,
            )
        )
    accuracy = _number(metrics.get("accuracy"))
    previous_accuracy = _number((previous_metrics or {}).get("accuracy"))
    accuracy_change = accuracy - previous_accuracy if accuracy is not None and previous_accuracy is not None else None
    return ReleaseNotes(accuracy=accuracy, accuracy_change=accuracy_change, labels=labels)
