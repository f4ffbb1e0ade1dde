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
    recall_ci95: list[float] | None = None  # 95% Wilson interval over ``support`` photos

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
    count: int | None = None  # holdout photos the accuracy rests on
    accuracy_ci95: list[float] | None = None  # its 95% Wilson interval


def accuracy_interval(metrics: dict | None) -> tuple[float | None, int | None, list[float] | None]:
    """(holdout accuracy, photos it rests on, 95% Wilson interval) of a stored metrics dict."""
    metrics = metrics or {}
    count = metrics.get("count") if isinstance(metrics.get("count"), int) else None
    accuracy = _number(metrics.get("accuracy"))
    return accuracy, count, _interval(accuracy, count, metrics.get("accuracy_ci95"))


def _interval(value: float | None, n: int | None, stored: list | None) -> list[float] | None:
    """The stored 95% interval of a proportion, or one computed from its value and n.

    Metrics stored before intervals were recorded have the value and n only: the number of
    successes is value x n.
    """
    if stored:
        return list(stored)
    if value is None or not n:
        return None
    from training.ml.stats import proportion  # scipy: only for versions stored without intervals

    return proportion(round(value * n), n).to_dict()["ci95"]


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
                recall_ci95=_interval(
                    _number(current.get("recall")), current.get("support"), current.get("recall_ci95")
                ),
            )
        )
    accuracy, count, interval = accuracy_interval(metrics)
    previous_accuracy = _number((previous_metrics or {}).get("accuracy"))
    accuracy_change = accuracy - previous_accuracy if accuracy is not None and previous_accuracy is not None else None
    return ReleaseNotes(
        accuracy=accuracy, accuracy_change=accuracy_change, labels=labels, count=count, accuracy_ci95=interval
    )
