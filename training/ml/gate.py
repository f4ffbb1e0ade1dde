"""Champion/challenger rule: the candidate against the release, photo by photo on one holdout.

Subtracting two accuracies measured on 25 photos says little: one photo is 4 points. Both
models answered the same photos, so only the photos where exactly one of them is right carry
information. The rule (one, stated in every gate record):

    refuse when the candidate is worse than the release beyond the noise, that is when
    (1) the release is right on more of the photos where the two disagree, and
    (2) the exact McNemar test on those photos rejects "equally good" at 5% (two-sided), and
    (3) the observed drop is larger than the tolerance,
    overall (accuracy, tolerance PLATFORM_GATE_TOLERANCE_OVERALL) or for any label on that
    label's photos (recall, PLATFORM_GATE_TOLERANCE_PER_LABEL).

(3) keeps a real but negligible drop on a large holdout from blocking a release; (2) keeps a
drop the photos cannot establish from blocking one. Plain Python, no Django, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from training.ml.stats import PairedComparison, paired_compare

GATE_ALPHA = 0.05
GATE_RULE = (
    "Paired on the same holdout photos (candidate minus release). Refused when, overall or for any label "
    "(on that label's photos), the release is right on more of the photos where the two disagree, the exact "
    f"McNemar test on those photos gives p < {GATE_ALPHA:g}, and the drop is larger than the tolerance. "
    "A drop the photos cannot establish does not refuse."
)


def gate_compare(
    *,
    truth: Sequence[str],
    candidate: Sequence[str],
    release: Sequence[str],
    labels: Sequence[str],
    tolerance_overall: float,
    tolerance_per_label: float,
    alpha: float = GATE_ALPHA,
) -> dict:
    """Compare two models' answers (label names) on the same photos; return the record and failures.

    ``{"rule", "alpha", "overall": PairedComparison dict, "per_label": {label: dict or None},
    "failures": [sentence, ...]}``; a label without photos gets None.
    """
    if not len(truth) == len(candidate) == len(release):
        raise ValueError(f"{len(truth)} truths, {len(candidate)} candidate and {len(release)} release answers")
    failures: list[str] = []
    overall = paired_compare(
        [c == t for c, t in zip(candidate, truth)], [r == t for r, t in zip(release, truth)]
    )
    if _worse(overall, tolerance=tolerance_overall, alpha=alpha):
        failures.append(f"accuracy: {_counts(overall)}")
    per_label: dict[str, dict | None] = {}
    for label in labels:
        rows = [i for i, t in enumerate(truth) if t == label]
        if not rows:
            per_label[label] = None
            continue
        compared = paired_compare([candidate[i] == label for i in rows], [release[i] == label for i in rows])
        per_label[label] = compared.to_dict()
        if _worse(compared, tolerance=tolerance_per_label, alpha=alpha):
            failures.append(f"recall of {label}: {_counts(compared)}")
    return {
        "rule": GATE_RULE,
        "alpha": alpha,
        "overall": overall.to_dict(),
        "per_label": per_label,
        "failures": failures,
    }


def _worse(compared: PairedComparison, *, tolerance: float, alpha: float) -> bool:
    # A hair of float noise must not turn exactly the tolerance into "more than the tolerance".
    return (
        compared.b_only > compared.a_only
        and compared.p_value < alpha
        and compared.difference < -tolerance - 1e-9
    )


def _counts(compared: PairedComparison) -> str:
    """The sentence a refusal shows: who was right where the two disagree, and how sure that is."""
    return (
        f"the release was right on {compared.b_only} photos the candidate got wrong, the candidate on "
        f"{compared.a_only} (of {compared.n}; {compared.difference:+.3f}, 95% CI {compared.low:+.3f} to "
        f"{compared.high:+.3f}; exact p={compared.p_value:.3g})"
    )
