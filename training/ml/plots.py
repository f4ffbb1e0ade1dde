"""PNG renderings of a run: confusion matrix and training curves (for the admin and reports).

matplotlib is imported inside the functions (Agg, no pyplot: no global state, no display,
safe in worker threads), so importing this module costs nothing.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)  # attach the Agg canvas explicitly: no backend selection involved
    return figure


def _png(figure, dpi: int) -> bytes:
    buffer = io.BytesIO()
    # Fixed metadata: identical inputs give identical bytes (no timestamp).
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def confusion_matrix_png(
    *,
    confusion: Sequence[Sequence[int]],
    labels: Sequence[str],
    title: str | None = None,
    normalize: bool = True,
    dpi: int = 100,
) -> bytes:
    """Confusion matrix (rows = true, columns = predicted) as PNG bytes.

    Colours are row-normalised (recall per true label) when ``normalize``; cells show counts.
    """
    import numpy as np

    counts = np.asarray(confusion, dtype=np.int64)
    n = len(labels)
    if counts.shape != (n, n):
        raise ValueError(f"confusion must be {n}x{n} for {n} labels, got {counts.shape}")
    rows = counts.sum(axis=1, keepdims=True)
    shade = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0) if normalize else counts
    side = min(12.0, 2.5 + 0.6 * n)
    figure = _figure(side + 1.0, side)
    ax = figure.add_subplot()
    image = ax.imshow(shade, cmap="Blues", vmin=0, vmax=1 if normalize else max(1, int(counts.max())))
    figure.colorbar(image, ax=ax, label="share of true label" if normalize else "photos")
    ax.set_xticks(range(n), labels=list(labels), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(labels))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = (shade.max() if shade.size else 0) / 2
    for i in range(n):
        for j in range(n):
            colour = "white" if shade[i, j] > threshold else "black"
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=colour)
    ax.set_title(title or f"confusion matrix ({int(counts.sum())} photos)")
    return _png(figure, dpi)


def training_curves_png(
    *,
    history: Sequence[Mapping],
    best_epoch: int | None = None,
    title: str | None = None,
    dpi: int = 100,
) -> bytes:
    """Loss and accuracy per epoch (train and validation, whichever the history has) as PNG bytes.

    ``history`` is ``PipelineResult.history``: dicts with "epoch" and some of "train_loss",
    "val_loss", "train_accuracy", "val_accuracy" (None values are skipped).
    """
    if not history:
        raise ValueError("history is empty")
    figure = _figure(9.0, 3.8)
    loss_ax, acc_ax = figure.subplots(1, 2)
    for ax, kind in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        plotted = False
        for split in ("train", "val"):
            key = f"{split}_{kind}"
            points = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="." if len(points) < 40 else None, label=split)
                plotted = True
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(kind)
        if kind == "accuracy":
            ax.set_ylim(-0.02, 1.02)
        if plotted or best_epoch is not None:
            ax.legend(loc="best")
        else:
            ax.text(0.5, 0.5, f"no {kind} recorded", ha="center", va="center", transform=ax.transAxes)
        ax.grid(alpha=0.3)
    figure.suptitle(title or "training curves")
    return _png(figure, dpi)
