"""Classification metrics against a hand-computed example (and sklearn)."""

from __future__ import annotations

import json

import pytest

from training.ml.metrics import classification_metrics

LABELS = ["ant", "bee", "wasp"]
Y_TRUE = [0, 0, 1, 1, 2, 2, 2]
Y_PRED = [0, 1, 1, 1, 2, 0, 2]


def test_hand_computed_example():
    m = classification_metrics(y_true=Y_TRUE, y_pred=Y_PRED, labels=LABELS)
    # rows = true, columns = predicted
    assert m.confusion == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    assert m.accuracy == pytest.approx(5 / 7)
    assert m.count == 7
    assert m.per_label["ant"] == pytest.approx({"precision": 1 / 2, "recall": 1 / 2, "f1": 1 / 2, "support": 2})
    assert m.per_label["bee"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert m.per_label["wasp"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert m.macro_f1 == pytest.approx((0.5 + 0.8 + 0.8) / 3)


def test_agrees_with_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    m = classification_metrics(y_true=Y_TRUE, y_pred=Y_PRED, labels=LABELS)
    p, r, f, s = sklearn_metrics.precision_recall_fscore_support(Y_TRUE, Y_PRED, labels=[0, 1, 2], zero_division=0)
    for i, label in enumerate(LABELS):
        assert m.per_label[label]["precision"] == pytest.approx(p[i])
        assert m.per_label[label]["recall"] == pytest.approx(r[i])
        assert m.per_label[label]["f1"] == pytest.approx(f[i])
        assert m.per_label[label]["support"] == s[i]
    assert m.confusion == sklearn_metrics.confusion_matrix(Y_TRUE, Y_PRED, labels=[0, 1, 2]).tolist()
    assert m.macro_f1 == pytest.approx(sklearn_metrics.f1_score(Y_TRUE, Y_PRED, average="macro"))


def test_never_predicted_label_gives_zero_not_nan_and_json_is_strict():
    m = classification_metrics(y_true=[0, 1, 2], y_pred=[0, 0, 0], labels=LABELS)
    assert m.per_label["bee"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    text = json.dumps(m.to_dict(), allow_nan=False)
    assert json.loads(text)["labels"] == LABELS
    empty = classification_metrics(y_true=[], y_pred=[], labels=LABELS)
    assert empty.accuracy == 0.0 and empty.count == 0


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        classification_metrics(y_true=[0, 1], y_pred=[0], labels=LABELS)
    with pytest.raises(ValueError):
        classification_metrics(y_true=[0, 3], y_pred=[0, 1], labels=LABELS)
    with pytest.raises(ValueError):
        classification_metrics(y_true=[0], y_pred=[0], labels=["a", "a"])


def test_expected_calibration_error_hand_computed():
    from training.ml.metrics import expected_calibration_error

    probabilities = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]]
    y_true = [0, 1, 1, 1]  # the 0.8-confident answer is wrong
    # 10 bins: one prediction per bin; gaps 0.1, 0.8, 0.3, 0.4.
    assert expected_calibration_error(probabilities=probabilities, y_true=y_true, bins=10) == pytest.approx(0.4)
    # One bin: mean confidence 0.75 equals accuracy 0.75, so calibrated on average.
    assert expected_calibration_error(probabilities=probabilities, y_true=y_true, bins=1) == pytest.approx(0.0)
    confident_and_wrong = expected_calibration_error(probabilities=[[0.99, 0.01]] * 4, y_true=[1, 1, 1, 1])
    assert confident_and_wrong == pytest.approx(0.99)


def test_metrics_carry_ece_only_with_probabilities():
    import numpy as np

    plain = classification_metrics(y_true=Y_TRUE, y_pred=Y_PRED, labels=LABELS)
    assert plain.ece is None and plain.to_dict()["ece"] is None
    probs = np.full((len(Y_PRED), 3), 0.1)
    probs[np.arange(len(Y_PRED)), Y_PRED] = 0.8
    m = classification_metrics(y_true=Y_TRUE, y_pred=Y_PRED, labels=LABELS, probabilities=probs)
    assert m.ece == pytest.approx(abs(0.8 - 5 / 7))
    assert json.loads(json.dumps(m.to_dict(), allow_nan=False))["ece"] == pytest.approx(m.ece)
    with pytest.raises(ValueError):
        classification_metrics(y_true=Y_TRUE, y_pred=Y_PRED, labels=LABELS, probabilities=probs[:3])


def test_every_accuracy_and_recall_carries_its_n_and_a_wilson_interval():
    from training.ml.stats import proportion

    # 10 photos of a (9 right), 2 of b (1 right).
    truth = [0] * 10 + [1] * 2
    pred = [0] * 9 + [1] + [1, 0]
    record = classification_metrics(y_true=truth, y_pred=pred, labels=["a", "b"]).to_dict()
    assert record["count"] == 12 and record["correct"] == 10
    assert record["accuracy_ci95"] == proportion(10, 12).to_dict()["ci95"]
    a, b = record["per_label"]["a"], record["per_label"]["b"]
    assert a["support"] == 10 and a["recall_ci95"] == proportion(9, 10).to_dict()["ci95"]
    # Two photos say little: the interval of recall 0.5 spans most of [0, 1].
    assert b["recall_ci95"][0] < 0.1 and b["recall_ci95"][1] > 0.9
    assert {"precision", "recall", "f1", "support"} <= set(a)  # existing keys kept
