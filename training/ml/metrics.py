"""Classification metrics in plain numpy: accuracy, per-label precision/recall/F1, confusion."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training.ml.stats import proportion


@dataclass(frozen=True)
class ClassificationMetrics:
    """Metrics of one model on one labelled set; ``to_dict()`` is JSON-ready."""

    count: int
    accuracy: float
    macro_f1: float
    per_label: dict  # label -> {"precision", "recall", "f1", "support"}
    confusion: list  # rows = true label, columns = predicted label, in ``labels`` order
    labels: tuple
    # Expected calibration error (top-label, equal-width confidence bins); None without probabilities.
    ece: float | None = None
    # Predicted label index per item, in y_true order: what a paired comparison (the gate) needs.
    # Not in to_dict(): the figures above are what is shown and stored.
    predictions: tuple = ()

    @property
    def correct(self) -> int:
        """How many items were right (the diagonal of the confusion matrix)."""
        return int(sum(self.confusion[i][i] for i in range(len(self.labels))))

    def to_dict(self) -> dict:
        """Plain-JSON representation (stored with training runs and model versions).

        Every accuracy and recall comes with its n and a 95% Wilson interval
        (``accuracy_ci95`` over ``count``; per label ``recall_ci95`` over ``support``).
        """
        accuracy = proportion(self.correct, self.count)
        return {
            "count": self.count,
            "accuracy": self.accuracy,
            "correct": accuracy.successes,
            "accuracy_ci95": accuracy.to_dict()["ci95"],
            "macro_f1": self.macro_f1,
            "per_label": {k: _with_recall_interval(v) for k, v in self.per_label.items()},
            "confusion": [list(row) for row in self.confusion],
            "labels": list(self.labels),
            "ece": self.ece,
        }


def _with_recall_interval(row: dict) -> dict:
    """A per-label row plus ``recall_ci95`` (Wilson, over the label's ``support`` photos)."""
    hits = round(row["recall"] * row["support"])
    return {**row, "recall_ci95": proportion(hits, row["support"]).to_dict()["ci95"]}


def classification_metrics(
    *,
    y_true: Sequence[int],
    y_pred: Sequence[int],
    labels: Sequence[str],
    probabilities: np.ndarray | None = None,
    ece_bins: int = 15,
) -> ClassificationMetrics:
    """Compute metrics for integer predictions; a label never predicted gets precision 0.

    With ``probabilities`` [N, C] the expected calibration error is computed too.
    """
    true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    n = len(labels)
    if len(true) != len(pred):
        raise ValueError(f"y_true has {len(true)} items, y_pred {len(pred)}")
    if len(set(labels)) != n:
        raise ValueError("labels must be unique")
    for name, values in (("y_true", true), ("y_pred", pred)):
        if len(values) and (values.min() < 0 or values.max() >= n):
            raise ValueError(f"{name} holds indices outside [0, {n})")
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (true, pred), 1)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    # Zero denominators give 0 (sklearn's zero_division=0), never NaN: NaN is not valid JSON.
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(n), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(n), where=denom > 0)
    per_label = {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }
    # Macro over labels that occur in y_true or y_pred (sklearn's default label set).
    present = (support > 0) | (predicted > 0)
    return ClassificationMetrics(
        count=len(true),
        accuracy=float(tp.sum() / len(true)) if len(true) else 0.0,
        macro_f1=float(f1[present].mean()) if present.any() else 0.0,
        per_label=per_label,
        confusion=confusion.tolist(),
        labels=tuple(labels),
        ece=None if probabilities is None else expected_calibration_error(
            probabilities=probabilities, y_true=true, bins=ece_bins
        ),
        predictions=tuple(int(p) for p in pred),
    )


def expected_calibration_error(*, probabilities: np.ndarray, y_true: Sequence[int], bins: int = 15) -> float:
    """Top-label ECE: sum over equal-width confidence bins of |accuracy - confidence| x bin share.

    0 means the model's confidence matches how often it is right; an over-confident model
    that is 99% sure and right 80% of the time has ECE near 0.19.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    if probs.ndim != 2 or len(probs) != len(true):
        raise ValueError(f"probabilities must be [N, C] with N = {len(true)}, got {probs.shape}")
    if bins < 1:
        raise ValueError("bins must be >= 1")
    if len(true) == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == true).astype(np.float64)
    # Bin i holds confidences in (i/bins, (i+1)/bins]; confidence 0 joins the first bin.
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total)
