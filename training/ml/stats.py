"""How sure a figure is: intervals for proportions and paired comparisons of two models.

Every accuracy or recall the platform shows carries its n and a 95% interval (Wilson score
interval, which behaves at 0 and n, unlike the textbook normal one). Two models scored on the
same photos are compared photo by photo: only the photos where exactly one of them is right
carry information (McNemar's exact test), and the difference of accuracies gets Newcombe's
interval for paired proportions (method 10 of Newcombe 1998, built from Wilson intervals).

Standard library only (no Django, torch or scipy: the light modules import this without them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Proportion:
    """``successes`` of ``n`` with a two-sided interval; ``value`` is None when n == 0."""

    successes: int
    n: int
    low: float
    high: float
    confidence: float = CONFIDENCE

    @property
    def value(self) -> float | None:
        return self.successes / self.n if self.n else None

    def to_dict(self) -> dict:
        """JSON shape used in decision records, cards and manifests."""
        return {
            "value": self.value,
            "successes": self.successes,
            "n": self.n,
            "ci95": [round(self.low, 4), round(self.high, 4)],
        }

    def __str__(self) -> str:
        if not self.n:
            return "n/a (n=0)"
        return f"{self.value:.3f} (95% CI {self.low:.3f}-{self.high:.3f}, n={self.n})"


def proportion(successes: int, n: int, *, confidence: float = CONFIDENCE) -> Proportion:
    """Wilson score interval for ``successes`` out of ``n`` (n == 0 gives the vacuous [0, 1])."""
    successes, n = int(successes), int(n)
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return Proportion(0, 0, 0.0, 1.0, confidence)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # Clamp the float rounding at the ends (0 of n and n of n give exactly 0 and 1).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Proportion(successes, n, low, high, confidence)

def upper_bound(successes: int, n: int, *, confidence: float = CONFIDENCE) -> float:
    """One-sided upper confidence bound of a rate (Wilson), e.g. of a disagreement rate."""
    return proportion(successes, n, confidence=2 * confidence - 1).high if n else 1.0


@dataclass(frozen=True)
class PairedComparison:
    """Model A against model B on the same n items (A minus B)."""

    n: int
    a_correct: int
    b_correct: int
    a_only: int  # items A got right and B wrong
    b_only: int  # items B got right and A wrong
    p_value: float  # exact two-sided McNemar test on the discordant items
    difference: float  # accuracy(A) - accuracy(B)
    low: float
    high: float
    confidence: float = CONFIDENCE

    @property
    def discordant(self) -> int:
        return self.a_only + self.b_only

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "a_correct": self.a_correct,
            "b_correct": self.b_correct,
            "a_only": self.a_only,
            "b_only": self.b_only,
            "p_value": round(self.p_value, 6),
            "difference": round(self.difference, 6),
            "ci95": [round(self.low, 4), round(self.high, 4)],
        }

    def __str__(self) -> str:
        return (
            f"{self.difference:+.3f} (95% CI {self.low:+.3f} to {self.high:+.3f}; "
            f"{self.a_only} vs {self.b_only} of {self.n} photos differ, exact p={self.p_value:.3g})"
        )


def paired_compare(
    a_correct: Sequence[bool], b_correct: Sequence[bool], *, confidence: float = CONFIDENCE
) -> PairedComparison:
    """Compare two models item by item: exact McNemar test and Newcombe's paired interval."""
    if len(a_correct) != len(b_correct):
        raise ValueError(f"{len(a_correct)} results for A, {len(b_correct)} for B")
    n = len(a_correct)
    a = [bool(x) for x in a_correct]
    b = [bool(x) for x in b_correct]
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    both = sum(1 for x, y in zip(a, b) if x and y)
    a_hits, b_hits = both + a_only, both + b_only
    discordant = a_only + b_only
    p_value = _mcnemar_exact(a_only, b_only)
    if n == 0:
        return PairedComparison(0, 0, 0, 0, 0, 1.0, 0.0, -1.0, 1.0, confidence)
    low, high = _newcombe_paired(both, a_only, b_only, n - both - discordant, confidence)
    return PairedComparison(
        n, a_hits, b_hits, a_only, b_only, float(p_value), (a_hits - b_hits) / n, low, high,
        confidence,
    )


def _mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar test: a binomial test of b successes in b + c trials at 1/2."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def _newcombe_paired(
    both: int, a_only: int, b_only: int, neither: int, confidence: float
) -> tuple[float, float]:
    """Newcombe (1998) method 10: interval for p_A - p_B from paired counts."""
    n = both + a_only + b_only + neither
    pa, pb = (both + a_only) / n, (both + b_only) / n
    wa = proportion(both + a_only, n, confidence=confidence)
    wb = proportion(both + b_only, n, confidence=confidence)
    # Correlation term (phi), set to 0 when a margin is empty.
    margins = (both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    cross = both * neither - a_only * b_only
    if cross > 0:  # Newcombe's continuity correction of a positive correlation
        cross = max(cross - n / 2, 0)
    phi = cross / math.sqrt(margins) if margins else 0.0
    d = pa - pb
    dl = math.sqrt(
        (pa - wa.low) ** 2 - 2 * phi * (pa - wa.low) * (wb.high - pb) + (wb.high - pb) ** 2
    )
    du = math.sqrt(
        (wa.high - pa) ** 2 - 2 * phi * (wa.high - pa) * (pb - wb.low) + (pb - wb.low) ** 2
    )
    return max(-1.0, d - dl), min(1.0, d + du)

