"""Intervals and paired comparisons behind every figure the platform shows."""

import pytest

from training.ml.stats import paired_compare, proportion, upper_bound


def test_wilson_interval_matches_the_textbook_values():
    # Wilson 95% for 8 of 10 is 0.490-0.943 (Newcombe 1998, table I style check).
    p = proportion(8, 10)
    assert p.value == 0.8
    assert p.low == pytest.approx(0.4902, abs=1e-3)
    assert p.high == pytest.approx(0.9433, abs=1e-3)
    assert p.to_dict() == {"value": 0.8, "successes": 8, "n": 10, "ci95": [0.4902, 0.9433]}
    assert "n=10" in str(p)


def test_a_perfect_score_on_few_photos_is_not_certain():
    p = proportion(25, 25)
    assert p.high == 1.0
    assert p.low < 0.87  # 25 of 25 cannot establish 99%
    assert proportion(0, 0).to_dict()["value"] is None


def test_more_photos_narrow_the_interval():
    assert proportion(90, 100).high - proportion(90, 100).low < (
        proportion(9, 10).high - proportion(9, 10).low
    )


def test_bad_counts_are_refused():
    with pytest.raises(ValueError):
        proportion(11, 10)


def test_upper_bound_of_a_rate_is_one_sided():
    # 0 disagreements in 61 photos still allows about 4.3% at one-sided 95%.
    assert upper_bound(0, 61) == pytest.approx(0.0425, abs=2e-3)
    assert upper_bound(3, 61) > 3 / 61
    assert upper_bound(0, 0) == 1.0


def test_paired_comparison_counts_only_the_photos_where_the_models_differ():
    a = [True] * 90 + [True] * 10 + [False] * 0
    b = [True] * 90 + [False] * 10
    c = paired_compare(a, b)
    assert (c.a_only, c.b_only, c.n) == (10, 0, 100)
    assert c.difference == pytest.approx(0.10)
    assert c.p_value == pytest.approx(2 * 0.5**10)  # exact McNemar
    assert c.low > 0 and c.low < c.difference < c.high


def test_paired_comparison_of_identical_models_is_a_tie():
    a = [True, False, True, True]
    c = paired_compare(a, a)
    assert c.p_value == 1.0 and c.difference == 0.0
    assert c.low <= 0 <= c.high


def test_paired_comparison_needs_the_same_photos():
    with pytest.raises(ValueError):
        paired_compare([True], [True, False])
