"""PNG pictures of a training run for the admin: confusion matrix, training curves, model card.

Drawn from the run's stored metrics and history, so any finished run can be shown later.
The ML core's renderer (``training.ml.plots``, matplotlib Agg) draws them; a plain Pillow
drawing stands in when matplotlib is not installed.
"""
from __future__ import annotations

import io
from collections.abc import Sequence


def confusion_png(*, confusion: Sequence[Sequence[int]], labels: Sequence[str], title: str | None = None) -> bytes:
    """The confusion matrix (rows = true label, columns = predicted) as PNG bytes."""
    try:
        from training.ml.plots import confusion_matrix_png

        return confusion_matrix_png(confusion=confusion, labels=list(labels), title=title)
    except ImportError:  # no matplotlib (or an older checkout without plots)
        return _confusion_pillow(confusion=confusion, labels=labels)


def curve_png(*, history: Sequence[dict], best_epoch: int | None = None, title: str | None = None) -> bytes:
    """Loss and accuracy per epoch as PNG bytes."""
    try:
        from training.ml.plots import training_curves_png

        return training_curves_png(history=list(history), best_epoch=best_epoch, title=title)
    except ImportError:
        return _curve_pillow(history=history)


def candidate_score(row: dict) -> tuple[float | None, list | None, int | None, str | None]:
    """(accuracy, 95% interval, n, skipped reason) of one decision-record candidate.

    The selection records ``cv_accuracy`` as ``proportion().to_dict()`` ({value, n, ci95}) and
    the reason a candidate did not run as ``skipped``.
    """
    score = row.get("cv_accuracy") or {}
    return score.get("value"), score.get("ci95"), score.get("n"), row.get("skipped")


def candidates_png(*, candidates: Sequence[dict], chosen: str | None = None, title: str | None = None) -> bytes:
    """Cross-validated accuracy of each candidate strategy with its 95% interval, as PNG bytes.

    ``candidates`` are the decision record's entries (``training.ml.selection``); skipped ones
    are listed with their reason instead of a point.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 0.6 * len(candidates) + 1.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    names = []
    for y, row in enumerate(candidates):
        name = str(row.get("strategy", "?"))
        names.append(f"{name} (shipped)" if name == chosen else name)
        value, ci95, _n, skipped = candidate_score(row)
        if value is None:
            axes.text(0.01, y, f"skipped: {skipped or 'not run'}", va="center", fontsize=9)
            continue
        colour = "tab:green" if name == chosen else "tab:blue"
        if ci95:
            axes.errorbar([value], [y], xerr=[[value - ci95[0]], [ci95[1] - value]], fmt="o", color=colour, capsize=4)
        else:
            axes.plot([value], [y], "o", color=colour)
        axes.annotate(f"{value:.3f}", (value, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=9)
    axes.set_yticks(range(len(candidates)), names)
    axes.set_ylim(-0.7, len(candidates) - 0.3)
    axes.invert_yaxis()
    axes.set_xlim(0, 1.02)
    axes.set_xlabel("cross-validated accuracy on the training photos (95% interval)")
    axes.grid(axis="x", alpha=0.3)
    axes.set_title(title or "candidates")
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=100)
    return out.getvalue()


# format -> (colour, marker) of its points in the model card chart
_CARD_STYLE = {"onnx": ("tab:blue", "o"), "pte": ("tab:orange", "s"), "tflite": ("tab:green", "^"),
               "mlpackage": ("tab:purple", "D")}  # Core ML: estimated accuracy, no latency


def card_chart_png(card: dict, *, title: str | None = None, dpi: int = 100) -> bytes:
    """The model card as two panels: size (MB) and latency (ms) against holdout accuracy.

    One marker per measured file, coloured and shaped by format; offered files filled,
    rejected ones hollow; recommended ones annotated; a dashed line at the lowest accuracy
    the policy accepts (float accuracy minus the allowed loss).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in card.get("variants") or [] if r.get("accuracy") is not None]
    float_accuracy = (card.get("float") or {}).get("accuracy")
    allowed = (card.get("policy") or {}).get("max_accuracy_loss")
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, 2)
    for axes, key, xlabel in (
        (panels[0], "size", "file size (MB)"),
        (panels[1], "latency_ms", "latency per photo (ms)"),
    ):
        for fmt, (colour, marker) in _CARD_STYLE.items():
            for offered in (True, False):
                points = [
                    r for r in rows
                    if r.get("format") == fmt and (r.get("status") == "offered") == offered and r.get(key) is not None
                ]
                if not points:
                    continue
                xs = [_card_x(r, key) for r in points]
                axes.scatter(
                    xs, [r["accuracy"] for r in points], s=55, marker=marker, linewidths=1.5,
                    facecolors=colour if offered else "none", edgecolors=colour,
                    label=f"{fmt} {'offered' if offered else 'rejected'}",
                )
                for r, x in zip(points, xs):
                    text = r.get("variant", "") + (" \u2605" if r.get("recommended") else "")
                    axes.annotate(
                        text, (x, r["accuracy"]), textcoords="offset points", xytext=(5, 4), fontsize=8,
                        fontweight="bold" if r.get("recommended") else "normal",
                    )
        if float_accuracy is not None and allowed is not None:
            axes.axhline(float_accuracy - allowed, color="grey", linestyle="--", linewidth=1,
                         label=f"lowest accepted ({(float_accuracy - allowed):.3f})")
        axes.set_xlabel(xlabel)
        axes.set_ylabel("holdout accuracy")
        axes.grid(True, alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=8, loc="lower right")
    threads = (card.get("float") or {}).get("threads")
    figure.suptitle(title or f"Model card: size and latency vs accuracy{f' ({threads} thread(s))' if threads else ''}")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def _card_x(row: dict, key: str) -> float:
    return row[key] / 1e6 if key == "size" else float(row[key])


def _confusion_pillow(*, confusion: Sequence[Sequence[int]], labels: Sequence[str]) -> bytes:
    from PIL import Image, ImageDraw

    cell, margin = 48, 110
    n = max(len(labels), 1)
    image = Image.new("RGB", (margin + n * cell + 10, margin + n * cell + 10), "white")
    draw = ImageDraw.Draw(image)
    peak = max((max(row) for row in confusion if row), default=0) or 1
    for i, row in enumerate(confusion):
        for j, value in enumerate(row):
            shade = int(255 - 200 * value / peak)
            x, y = margin + j * cell, margin + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(shade, shade, 255), outline="grey")
            draw.text((x + cell // 3, y + cell // 3), str(value), fill="black" if shade > 128 else "white")
    for k, label in enumerate(labels):
        draw.text((4, margin + k * cell + cell // 3), str(label)[:16], fill="black")  # rows: true
        draw.text((margin + k * cell + 2, margin - 16 - 12 * (k % 2)), str(label)[:8], fill="black")  # predicted
    draw.text((4, 4), "rows: true label, columns: predicted", fill="black")
    return _pillow_png(image)


def _curve_pillow(*, history: Sequence[dict]) -> bytes:
    from PIL import Image, ImageDraw

    width, height, pad = 600, 300, 30
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([pad, pad, width - pad, height - pad], outline="grey")
    series = {key: [h.get(key) for h in history] for key in ("train_loss", "val_loss")}
    values = [v for points in series.values() for v in points if v is not None]
    top = max(values, default=1.0) or 1.0
    steps = max(len(history) - 1, 1)
    for (key, points), colour in zip(series.items(), ("blue", "orange")):
        xy = [
            (pad + (width - 2 * pad) * i / steps, height - pad - (height - 2 * pad) * v / top)
            for i, v in enumerate(points)
            if v is not None
        ]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        draw.text((pad + (0 if key == "train_loss" else 120), 8), key.replace("_", " ") + " (per epoch)", fill=colour)
    return _pillow_png(image)


def _pillow_png(image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
