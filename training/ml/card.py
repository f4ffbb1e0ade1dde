"""The model card and the publishing policy: which measured files apps are offered.

No torch here (the web process renders cards). A card is JSON:

    {"schema": 1, "labels": [...], "holdout_count": n,
     "float": {"accuracy", "accuracy_ci95", "log_loss", "latency_ms", "size", "threads"},   # torch, eager, batch 1
     "policy": {"max_accuracy_loss", "min_agreement", "max_disagreement", "max_log_loss_increase", "rule"},
     "variants": [row, ...],            # every file that was attempted, offered or not
     "recommended": {"onnx": "int8", "pte": "int8"},   # per format: variant name
     "published": bool, "seconds": {...}, "config": {...}}

A row: variant, format, precision, status ("offered", "rejected", "failed", "skipped"),
recommended, reason, file, size, sha256, accuracy, accuracy_loss, top1_agreement,
max_prob_diff, mean_prob_diff, latency_ms, load_ms, peak_memory_mb, threads, size_ratio
(against the fp32 file of the same format), latency_ratio (against the float model run eagerly
by torch), preprocessing (the file's input spec) and details (how it was made); measured rows
also carry accuracy_n (the holdout photos the accuracy rests on), log_loss and
log_loss_increase (holdout, against the float model's), and ``fidelity``: agreement with the
float model on the holdout AND on augmented views of every approved photo (photos the model
did not fit as it saw them), see ``fidelity_summary``.
by torch), preprocessing (the file's input spec) and details (how it was made). LiteRT rows add
tensors (the file's input/output name, shape, dtype, int8 scale and zero point, for the manifest).
Core ML rows (format "mlpackage") cannot be executed on Linux: executed False, estimated True,
note "structure verified, not executed on this host", weight_bits and structure (what
``skip_model_load`` showed); accuracy and top1_agreement are those of the torch model with the same
fp16 or palettized weights, latency is None; unless the project's policy offers unexecuted files,
``parity_failures`` carries that reason and the row is rejected.
"""

from __future__ import annotations

from collections.abc import Sequence

from training.ml.stats import upper_bound

CARD_SCHEMA = 1
OFFERED, REJECTED, FAILED, SKIPPED = "offered", "rejected", "failed", "skipped"
POLICY_RULE = (
    "A file is offered when its runtime loads it from the stored bytes, its holdout accuracy is at most "
    "max_accuracy_loss below the float model's, its top-1 answers agree with the float model's on at least "
    "min_agreement of the holdout (fp32 files: the strict parity tolerance instead), and its outputs are "
    "probabilities. A file that is not the float model itself (every variant but fp32) must also show, on the "
    "holdout and on augmented views of every approved photo, that it disagrees with the float model's top-1 "
    "answer on at most max_disagreement of photos (the upper 95% bound of its disagreement rate, so a few "
    "photos cannot establish it), and its holdout log-loss may exceed the float model's by at most "
    "max_log_loss_increase. "
    "Per format the smallest offered file is recommended (ties: the faster). Nothing offered: "
    "nothing published. The float model ships with every version: without an offered fp32 file (the ONNX one "
    "when ONNX is built, which the next night's gate compares against) nothing is published either."
)


def policy_apply(
    rows: Sequence[dict],
    *,
    float_accuracy: float,
    max_accuracy_loss: float,
    min_agreement: float,
    max_disagreement: float | None = None,
    max_log_loss_increase: float = 0.05,
) -> list[dict]:
    """Mark each measured row offered or rejected (with the reason) and the recommended one per format.

    Rows that already carry status "failed" or "skipped" (not built, not loadable) stay as they
    are. A row's ``parity_failures`` (strict checks of fp32/fp16 files) reject it as well.
    Every variant but fp32 (the float model's own weights in another runtime, held to the strict
    parity check instead) needs ``fidelity`` establishing an upper 95% bound of its disagreement
    rate within ``max_disagreement`` (default: ``max_accuracy_loss``: a file that disagrees with
    the float model on fewer photos cannot lose more accuracy than that) and a holdout log-loss
    at most ``max_log_loss_increase`` above the float model's. Generic over formats and variants.
    """
    limit = max_accuracy_loss if max_disagreement is None else max_disagreement
    out = []
    for row in rows:
        row = {**row, "recommended": False}
        if row.get("status") in (FAILED, SKIPPED):
            out.append(row)
            continue
        reasons = list(row.get("parity_failures") or [])
        accuracy, agreement = row.get("accuracy"), row.get("top1_agreement")
        if accuracy is None or agreement is None:
            reasons.append("not measured")
        else:
            loss = float_accuracy - accuracy
            row["accuracy_loss"] = round(loss, 6)
            # A hair of float noise must not turn exactly 1 point into "more than 1 point".
            if loss > max_accuracy_loss + 1e-9:
                reasons.append(f"accuracy {accuracy:.4f} is {loss * 100:.2f} points below the float model's "
                               f"{float_accuracy:.4f} (allowed {max_accuracy_loss * 100:.2f})")
            if agreement < min_agreement:
                reasons.append(f"top-1 agreement with the float model {agreement:.4f} < {min_agreement}")
            if row.get("variant") != "fp32":
                reasons += _fidelity_failures(row, limit=limit, max_log_loss_increase=max_log_loss_increase)
        row["status"] = REJECTED if reasons else OFFERED
        row["reason"] = "; ".join(reasons) if reasons else "within the policy"
        out.append(row)
    for fmt in {row["format"] for row in out}:
        offered = [r for r in out if r["format"] == fmt and r["status"] == OFFERED]
        if offered:
            best = min(offered, key=lambda r: (r["size"], r.get("latency_ms") or 0.0))
            best["recommended"] = True
    return out


def fidelity_summary(*, holdout_n: int, holdout_disagree: int, views_n: int, views_disagree: int, **extra) -> dict:
    """The card's ``fidelity`` record: disagreements with the float model, where, and the upper 95% bound.

    ``extra`` carries the probability comparisons (mean/max absolute difference, mean KL).
    """
    n, k = holdout_n + views_n, holdout_disagree + views_disagree
    return {
        "n": n, "disagreements": k, "upper95": round(upper_bound(k, n), 6),
        "holdout": {"n": holdout_n, "disagreements": holdout_disagree},
        "views": {"n": views_n, "disagreements": views_disagree},
        **extra,
    }


def photos_needed(disagreements: int, limit: float, *, start: int = 1, most: int = 10**7) -> int | None:
    """Fewest photos with this many disagreements whose upper 95% bound is within ``limit`` (None: never)."""
    if limit <= 0 or upper_bound(disagreements, most) > limit:
        return None
    low, high = max(start, disagreements, 1), most
    while low < high:  # the bound falls as n grows with the disagreements fixed
        mid = (low + high) // 2
        if upper_bound(disagreements, mid) <= limit:
            high = mid
        else:
            low = mid + 1
    return low


def _fidelity_failures(row: dict, *, limit: float, max_log_loss_increase: float) -> list[str]:
    name = f"{row.get('variant')} {row.get('format')}"
    fidelity = row.get("fidelity")
    if not fidelity or not fidelity.get("n"):
        return [f"{name}: agreement with the float model not measured beyond the holdout"]
    reasons = []
    n, k, bound = fidelity["n"], fidelity["disagreements"], fidelity["upper95"]
    if bound > limit + 1e-12:
        need = photos_needed(k, limit, start=n)
        enough = f"need >= {need}" if need is not None else "no number of photos can"
        if k == 0 or (need is not None and k / n < limit):
            reasons.append(f"{name}: {k} of {n} photos disagree with the float model, but {n} photos cannot "
                           f"show < {limit:.1%} (upper 95% bound {bound:.1%}): {enough}")
        else:
            reasons.append(f"{name}: {k} of {n} photos disagree with the float model "
                           f"(upper 95% bound {bound:.1%} > {limit:.1%})")
    increase = row.get("log_loss_increase")
    if increase is None:
        reasons.append(f"{name}: holdout log-loss not measured")
    elif increase > max_log_loss_increase + 1e-12:
        reasons.append(f"{name}: holdout log-loss {row.get('log_loss', 0):.4f} is {increase:.4f} above the "
                       f"float model's (allowed {max_log_loss_increase})")
    return reasons


def card_build(
    *,
    labels: Sequence[str],
    holdout_count: int,
    float_model: dict,
    rows: Sequence[dict],
    max_accuracy_loss: float,
    min_agreement: float,
    max_disagreement: float | None = None,
    max_log_loss_increase: float = 0.05,
    seconds: dict | None = None,
    config: dict | None = None,
) -> dict:
    """Apply the policy to measured rows and assemble the JSON card."""
    decided = policy_apply(
        rows, float_accuracy=float_model["accuracy"], max_accuracy_loss=max_accuracy_loss,
        min_agreement=min_agreement, max_disagreement=max_disagreement, max_log_loss_increase=max_log_loss_increase,
    )
    return {
        "schema": CARD_SCHEMA,
        "labels": list(labels),
        "holdout_count": holdout_count,
        "float": dict(float_model),
        "policy": {
            "max_accuracy_loss": max_accuracy_loss, "min_agreement": min_agreement,
            "max_disagreement": max_accuracy_loss if max_disagreement is None else max_disagreement,
            "max_log_loss_increase": max_log_loss_increase, "rule": POLICY_RULE,
        },
        "variants": decided,
        "recommended": {r["format"]: r["variant"] for r in decided if r["recommended"]},
        "published": _float_offered(decided),
        "seconds": dict(seconds or {}),
        "config": dict(config or {}),
    }


def _float_offered(rows: Sequence[dict]) -> bool:
    """The version needs its float model: the fp32 ONNX file if one was built, else any fp32 file."""
    fp32 = [r for r in rows if r["variant"] == "fp32"]
    onnx = [r for r in fp32 if r["format"] == "onnx"]
    return any(r["status"] == OFFERED for r in (onnx or fp32))


def card_withheld(card: dict) -> list[dict]:
    """Files measured but not offered, with the reason (what the manifest tells apps)."""
    return [
        {"format": r["format"], "variant": r["variant"], "reason": r.get("reason", "")}
        for r in card.get("variants", []) if r.get("status") == REJECTED
    ]


def card_offered(card: dict) -> list[dict]:
    """The rows apps may be offered, recommended first within each format."""
    rows = [r for r in card.get("variants", []) if r.get("status") == OFFERED]
    return sorted(rows, key=lambda r: (r["format"], not r.get("recommended"), r["size"]))
