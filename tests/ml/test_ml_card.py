"""The publishing policy on measured rows (no torch): what is offered, recommended, published."""

from __future__ import annotations

from training.ml.card import (
    FAILED,
    OFFERED,
    REJECTED,
    card_build,
    card_offered,
    card_withheld,
    fidelity_summary,
    photos_needed,
)
from training.ml.stats import upper_bound

#: Enough photos that agree with the float model to establish < 1% disagreement (268 needed).
ENOUGH = fidelity_summary(holdout_n=100, holdout_disagree=0, views_n=400, views_disagree=0)


def _row(variant, fmt, *, size, accuracy=0.90, agreement=1.0, latency=1.0, fidelity=ENOUGH, **extra):
    return {"variant": variant, "format": fmt, "precision": "int8" if "int8" in variant else "fp32",
            "size": size, "accuracy": accuracy, "top1_agreement": agreement, "latency_ms": latency,
            "fidelity": fidelity, "log_loss": 0.3, "log_loss_increase": 0.0, **extra}


def _card(rows, *, float_accuracy=0.90, loss=0.01, agreement=0.95):
    return card_build(labels=("ant", "bee"), holdout_count=100, float_model={"accuracy": float_accuracy},
                      rows=rows, max_accuracy_loss=loss, min_agreement=agreement)


def test_variants_within_the_loss_are_offered_and_the_smallest_per_format_is_recommended():
    card = _card([
        _row("fp32", "onnx", size=900), _row("int8", "onnx", size=250, accuracy=0.89),
        _row("fp32", "pte", size=880), _row("pruned-int8", "pte", size=150, accuracy=0.895, agreement=0.97),
        _row("int8", "pte", size=240),
    ])
    status = {(r["variant"], r["format"]): (r["status"], r["recommended"]) for r in card["variants"]}
    assert status[("int8", "onnx")] == (OFFERED, True)
    assert status[("fp32", "onnx")] == (OFFERED, False)
    assert status[("pruned-int8", "pte")] == (OFFERED, True)
    assert card["recommended"] == {"onnx": "int8", "pte": "pruned-int8"}
    assert card["published"] is True
    assert [r["variant"] for r in card_offered(card) if r["format"] == "pte"] == ["pruned-int8", "int8", "fp32"]


def test_a_variant_beyond_the_loss_or_disagreeing_is_recorded_with_the_reason_and_never_offered():
    card = _card([
        _row("fp32", "onnx", size=900),
        _row("int8", "onnx", size=250, accuracy=0.88),           # 2 points below
        _row("pruned", "onnx", size=500, agreement=0.90),        # same accuracy, other answers
        _row("distilled", "onnx", size=300, status=FAILED, reason="RuntimeError: boom"),
    ])
    rows = {r["variant"]: r for r in card["variants"]}
    assert rows["int8"]["status"] == REJECTED and "2.00 points below" in rows["int8"]["reason"]
    assert rows["pruned"]["status"] == REJECTED and "agreement" in rows["pruned"]["reason"]
    assert rows["distilled"]["status"] == FAILED and rows["distilled"]["reason"] == "RuntimeError: boom"
    assert card["recommended"] == {"onnx": "fp32"} and card["published"] is True


def test_exactly_the_allowed_loss_is_still_offered_and_a_wider_policy_offers_more():
    rows = [_row("fp32", "onnx", size=900), _row("int8", "onnx", size=250, accuracy=0.88)]
    assert {r["variant"]: r["status"] for r in _card(rows, loss=0.02)["variants"]}["int8"] == OFFERED
    assert {r["variant"]: r["status"] for r in _card(rows, loss=0.0199)["variants"]}["int8"] == REJECTED


def test_without_a_passing_float_onnx_file_nothing_is_published_even_if_a_variant_passes():
    broken_float = _row("fp32", "onnx", size=900, parity_failures=["max_abs_diff 0.3 > 1e-4"])
    card = _card([broken_float, _row("int8", "onnx", size=250), _row("fp32", "pte", size=880)])
    assert card["published"] is False
    # The rows still say what passed: an admin sees that only the float ONNX export is broken.
    assert [r["status"] for r in card["variants"]] == [REJECTED, OFFERED, OFFERED]


def test_nothing_within_the_loss_publishes_nothing():
    card = _card([_row("fp32", "pte", size=880, accuracy=0.5, agreement=0.5)])
    assert card["published"] is False and card["recommended"] == {}


def test_a_compressed_file_the_photos_cannot_vouch_for_is_withheld_and_fp32_stays_recommended():
    # The case: int8 agreed on all 61 holdout photos, but 61 photos cannot show < 1%.
    few = fidelity_summary(holdout_n=61, holdout_disagree=0, views_n=0, views_disagree=0)
    card = _card([_row("fp32", "pte", size=880, fidelity=None), _row("int8", "pte", size=240, fidelity=few)])
    rows = {r["variant"]: r for r in card["variants"]}
    assert rows["int8"]["status"] == REJECTED
    assert "int8 pte: 0 of 61 photos disagree with the float model, but 61 photos cannot show < 1.0%" in rows["int8"]["reason"]
    assert "need >= 268" in rows["int8"]["reason"] and upper_bound(0, 268) <= 0.01 < upper_bound(0, 267)
    # The float model's own file needs no such bound (strict parity covers it): it is recommended.
    assert rows["fp32"]["status"] == OFFERED and card["recommended"] == {"pte": "fp32"}
    assert card_withheld(card) == [{"format": "pte", "variant": "int8", "reason": rows["int8"]["reason"]}]
    # With the views of every approved photo the same file is offered.
    card = _card([_row("fp32", "pte", size=880), _row("int8", "pte", size=240, fidelity=ENOUGH)])
    assert card["recommended"] == {"pte": "int8"}


def test_disagreement_beyond_the_bound_and_a_worse_log_loss_are_refused_with_counts():
    # 3 of 61 unseen photos flipped (the medical scans): beyond the bound, whatever the holdout said.
    flipped = fidelity_summary(holdout_n=25, holdout_disagree=0, views_n=500, views_disagree=9)
    card = _card([
        _row("fp32", "onnx", size=900),
        _row("int8", "onnx", size=250, fidelity=flipped),
        _row("fp16", "onnx", size=450, log_loss=0.5, log_loss_increase=0.2),
        _row("pruned", "onnx", size=400, fidelity={}),
    ])
    rows = {r["variant"]: r for r in card["variants"]}
    assert "9 of 525 photos disagree with the float model (upper 95% bound 2.9% > 1.0%)" in rows["int8"]["reason"]
    assert "log-loss 0.5000 is 0.2000 above the float model's (allowed 0.05)" in rows["fp16"]["reason"]
    assert "not measured beyond the holdout" in rows["pruned"]["reason"]
    assert card["recommended"] == {"onnx": "fp32"} and card["policy"]["max_disagreement"] == 0.01


def test_photos_needed_grows_with_the_disagreements_and_is_none_when_impossible():
    assert photos_needed(0, 0.01) == 268 and photos_needed(1, 0.01) > 268
    assert photos_needed(5, 0.0) is None
