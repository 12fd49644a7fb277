"""The statistics A/B tests need, in plain Python: a two-proportion z-test and a chi-square
goodness-of-fit test with its p-value (the regularized upper incomplete gamma function)."""

from __future__ import annotations

import math
from collections.abc import Sequence

_EPS = 1e-15
_MAX_ITERATIONS = 10_000


def normal_two_sided_p(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z."""
    return math.erfc(abs(z) / math.sqrt(2))


def two_proportion_z(
    conversions_a: int, users_a: int, conversions_b: int, users_b: int
) -> tuple[float, float] | None:
    """(z, two-sided p) for H0: both variants convert at the same rate, with the pooled
    standard error. None when a variant has no users or nobody (or everybody) converted."""
    if users_a == 0 or users_b == 0:
        return None
    pooled = (conversions_a + conversions_b) / (users_a + users_b)
    variance = pooled * (1 - pooled) * (1 / users_a + 1 / users_b)
    if variance <= 0:
        return None
    z = (conversions_b / users_b - conversions_a / users_a) / math.sqrt(variance)
    return z, normal_two_sided_p(z)


def _upper_gamma_regularized(a: float, x: float) -> float:
    """Q(a, x) = Γ(a, x) / Γ(a): a series below a + 1, a continued fraction above
    (Numerical Recipes, gammq)."""
    if x <= 0:
        return 1.0
    log_prefix = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:
        term = total = 1 / a
        n = a
        for _ in range(_MAX_ITERATIONS):
            n += 1
            term *= x / n
            total += term
            if abs(term) < abs(total) * _EPS:
                break
        return max(0.0, 1 - total * math.exp(log_prefix))
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, _MAX_ITERATIONS):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < _EPS:
            break
    return min(1.0, math.exp(log_prefix) * h)


def chi2_sf(statistic: float, df: int) -> float:
    """P(X >= statistic) for X chi-square distributed with `df` degrees of freedom."""
    if df < 1:
        raise ValueError("df must be at least 1")
    return _upper_gamma_regularized(df / 2, statistic / 2)


def chi_square_goodness_of_fit(
    observed: Sequence[int], expected_shares: Sequence[float]
) -> tuple[float, float]:
    """(statistic, p) of observed counts against the expected shares (which sum to 1)."""
    if len(observed) != len(expected_shares) or len(observed) < 2:
        raise ValueError("need one expected share per observed count, at least two")
    total = sum(observed)
    if total == 0:
        raise ValueError("no observations")
    statistic = sum(
        (count - total * share) ** 2 / (total * share)
        for count, share in zip(observed, expected_shares, strict=True)
    )
    return statistic, chi2_sf(statistic, len(observed) - 1)
