"""strategy_choose: the size x similarity table, thresholds, overrides and the decision record."""

from __future__ import annotations

import json

import pytest

from training.ml.strategies import STRATEGIES, StrategyThresholds, strategy_choose


def _similarity(score: float) -> dict:
    # The shape of ImagenetSimilarity.to_dict(); strategy_choose reads score and accuracies.
    return {"score": score, "top_accuracy": 0.9 if score >= 0 else 0.6, "lower_accuracy": 0.7, "label": "?"}


@pytest.mark.parametrize(
    ("per_label", "score", "expected"),
    [
        (30, 0.3, "linear_probe"),
        (30, -0.2, "lower_layer_probe"),
        (250, 0.3, "fine_tune"),
        (250, -0.2, "from_scratch"),
    ],
)
def test_table(per_label, score, expected):
    decision = strategy_choose(label_counts={"ants": per_label, "bees": per_label + 5}, similarity=_similarity(score))
    assert decision.choice == expected == decision.rule_choice
    assert decision.override is None
    assert decision.size == ("large" if per_label >= 200 else "small")
    assert decision.similar is (score >= 0)
    assert decision.reason.startswith("rule:") and expected in decision.reason


def test_smallest_label_decides_size_and_thresholds_are_honoured():
    counts = {"ants": 900, "bees": 199}
    assert strategy_choose(label_counts=counts, similarity=_similarity(0.3)).size == "small"
    assert strategy_choose(label_counts={**counts, "bees": 200}, similarity=_similarity(0.3)).size == "large"
    custom = StrategyThresholds(large_per_label=100, similarity_min_score=0.5)
    decision = strategy_choose(label_counts=counts, similarity=_similarity(0.3), thresholds=custom)
    assert (decision.size, decision.similar, decision.choice) == ("large", False, "from_scratch")
    assert "'bees' has 199 photos >= 100" in decision.reason


def test_override_wins_and_says_so():
    decision = strategy_choose(
        label_counts={"ants": 30, "bees": 30}, similarity=_similarity(0.3), override="fine_tune"
    )
    assert decision.choice == "fine_tune" and decision.rule_choice == "linear_probe"
    assert decision.reason.startswith("override: fine_tune replaces the rule's linear_probe")
    agreeing = strategy_choose(label_counts={"a": 30, "b": 30}, similarity=_similarity(0.3), override="linear_probe")
    assert "agrees with" in agreeing.reason
    unmeasured = strategy_choose(label_counts={"a": 30, "b": 30}, similarity=None, override="from_scratch")
    assert unmeasured.choice == "from_scratch" and unmeasured.similarity is None and unmeasured.rule_choice is None
    assert "similarity not measured" in unmeasured.reason


def test_record_is_json_with_inputs_measurements_and_thresholds():
    record = strategy_choose(label_counts={"ants": 30, "bees": 31}, similarity=_similarity(-0.1)).to_record()
    again = json.loads(json.dumps(record, allow_nan=False))
    assert again["label_counts"] == {"ants": 30, "bees": 31}
    assert again["similarity"]["score"] == -0.1
    assert again["thresholds"] == {"large_per_label": 200, "similarity_min_score": 0.0}
    assert again["choice"] == "lower_layer_probe" and again["size"] == "small" and again["similar"] is False
    from training.ml.strategies import StrategyDecision

    assert StrategyDecision.from_record(again).to_record() == record


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="unknown strategy"):
        strategy_choose(label_counts={"a": 1, "b": 1}, similarity=_similarity(0.1), override="hero")
    with pytest.raises(ValueError, match="similarity is required"):
        strategy_choose(label_counts={"a": 1, "b": 1}, similarity=None)
    with pytest.raises(ValueError, match="two labels"):
        strategy_choose(label_counts={"a": 1}, similarity=_similarity(0.1))
    assert set(STRATEGIES) == {"linear_probe", "lower_layer_probe", "fine_tune", "from_scratch"}
