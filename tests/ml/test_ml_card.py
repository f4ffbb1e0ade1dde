"""The publishing policy on measured rows (no torch): what is offered, recommended, published."""

from __future__ import annotations

from training.ml.card import FAILED, OFFERED, REJECTED, card_build, card_offered


def _row(variant, fmt, *, size, accuracy=0.90, agreement=1.0, latency=1.0, **extra):
    return {"variant": variant, "format": fmt, "precision": "int8" if "int8" in variant else "fp32",
            "size": size, "accuracy": accuracy, "top1_agreement": agreement, "latency_ms": latency, **extra}


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
