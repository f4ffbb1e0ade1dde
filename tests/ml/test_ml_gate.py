"""The champion/challenger rule on synthetic answers: refuse only a drop the photos establish."""
import pytest

from training.ml.gate import gate_compare


def _answers(*, both: int, release_only: int, candidate_only: int, neither: int, label: str = "a",
             wrong: str = "b"):
    """Truth and answers for photos of `label` (wrong answers say `wrong`)."""
    truth, candidate, release = [], [], []
    for n, cand_right, rel_right in ((both, 1, 1), (release_only, 0, 1), (candidate_only, 1, 0), (neither, 0, 0)):
        for _ in range(n):
            truth.append(label)
            candidate.append(label if cand_right else wrong)
            release.append(label if rel_right else wrong)
    return truth, candidate, release


def test_twelve_against_three_is_refused_and_names_the_counts():
    truth, candidate, release = _answers(both=40, release_only=12, candidate_only=3, neither=6)
    record = gate_compare(truth=truth, candidate=candidate, release=release, labels=["a", "b"],
                          tolerance_overall=0.01, tolerance_per_label=0.05)
    assert record["overall"]["b_only"] == 12 and record["overall"]["a_only"] == 3
    assert record["overall"]["p_value"] == pytest.approx(0.0352, abs=1e-4)  # exact binomial, 3 of 15
    assert record["failures"][0].startswith(
        "accuracy: the release was right on 12 photos the candidate got wrong, the candidate on 3 (of 61"
    )
    assert "p=0.0352" in record["failures"][0]
    assert any(f.startswith("recall of a:") for f in record["failures"])
    assert record["per_label"]["b"] is None  # no photo of b


def test_a_drop_the_photos_cannot_establish_passes():
    # 4 against 1: release better by 3 photos of 60 (5 points), but p = 0.375.
    truth, candidate, release = _answers(both=50, release_only=4, candidate_only=1, neither=5)
    record = gate_compare(truth=truth, candidate=candidate, release=release, labels=["a"],
                          tolerance_overall=0.01, tolerance_per_label=0.05)
    assert record["failures"] == [] and record["overall"]["p_value"] > 0.05
    assert record["overall"]["ci95"][0] < 0 < record["overall"]["ci95"][1]


def test_an_established_drop_within_the_tolerance_passes():
    # 30 against 10 on 2000 photos: real (p < 0.01) but 1 point, the overall tolerance is 2 points.
    truth, candidate, release = _answers(both=1900, release_only=30, candidate_only=10, neither=60)
    record = gate_compare(truth=truth, candidate=candidate, release=release, labels=["a"],
                          tolerance_overall=0.02, tolerance_per_label=0.02)
    assert record["overall"]["p_value"] < 0.01 and record["failures"] == []


def test_a_better_candidate_is_never_refused():
    truth, candidate, release = _answers(both=10, release_only=0, candidate_only=20, neither=0)
    record = gate_compare(truth=truth, candidate=candidate, release=release, labels=["a"],
                          tolerance_overall=0.0, tolerance_per_label=0.0)
    assert record["overall"]["p_value"] < 0.001 and record["failures"] == []


def test_one_label_worse_is_refused_on_its_own_photos():
    a = _answers(both=20, release_only=0, candidate_only=0, neither=0, label="a")
    b = _answers(both=2, release_only=8, candidate_only=0, neither=0, label="b", wrong="a")
    truth, candidate, release = a[0] + b[0], a[1] + b[1], a[2] + b[2]
    record = gate_compare(truth=truth, candidate=candidate, release=release, labels=["a", "b"],
                          tolerance_overall=0.01, tolerance_per_label=0.05)
    assert [f.split(":")[0] for f in record["failures"]] == ["accuracy", "recall of b"]
    assert record["per_label"]["a"]["a_only"] == record["per_label"]["a"]["b_only"] == 0
