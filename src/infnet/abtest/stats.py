"""The statistics of an A/B test, with users as the randomisation units.

Every metric is a ratio of per-user sums, R = sum_u x_u / sum_u y_u: CTR is clicks over
impressions, revenue per user is revenue over users (y_u = 1), next-day retention is
returning days over days with a next one. Users are independent, sessions of one user are
not, so the variance is taken over users by the delta method (Deng et al. 2018, "Applying
the Delta Method in Metric Analytics"):

    var(R) = (var(x) - 2 R cov(x, y) + R^2 var(y)) / (n ybar^2)

The absolute lift R_t - R_c is tested with a two-sided z-test; the relative lift
R_t / R_c - 1 has var = var_t / R_c^2 + R_t^2 var_c / R_c^4 (the delta method again).
The guards: a sample-ratio mismatch (chi-square of the arms' user counts against their
bucket shares), the minimum detectable relative effect at alpha 0.05 and power 0.8, and an
A/A false-positive rate by re-randomisation (users split again by seeded hashes).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy import stats

Z95 = float(stats.norm.ppf(0.975))
Z_POWER = float(stats.norm.ppf(0.8))


@dataclass(frozen=True)
class Estimate:
    value: float  # R
    variance: float  # of R, by the delta method
    units: int


def ratio(x: np.ndarray, y: np.ndarray) -> Estimate:
    """sum x / sum y over units (users) and its delta-method variance."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = len(x)
    if n < 2 or y.sum() <= 0:
        return Estimate(float("nan"), float("nan"), n)
    r = x.sum() / y.sum()
    cov = np.cov(x, y, ddof=1)
    var = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (n * y.mean() ** 2)
    return Estimate(float(r), float(max(var, 0.0)), n)


@dataclass(frozen=True)
class Lift:
    control: float
    treatment: float
    absolute: float
    absolute_ci: tuple[float, float]
    relative: float
    relative_ci: tuple[float, float]
    p: float


def lift(treatment: Estimate, control: Estimate) -> Lift:
    """Treatment against control: absolute and relative lift, 95% intervals, two-sided p."""
    d = treatment.value - control.value
    se = float(np.sqrt(treatment.variance + control.variance))
    rel = treatment.value / control.value - 1
    rel_se = float(
        np.sqrt(
            treatment.variance / control.value**2
            + treatment.value**2 * control.variance / control.value**4
        )
    )
    p = float(2 * stats.norm.sf(abs(d) / se)) if se > 0 else float("nan")
    return Lift(
        control=control.value,
        treatment=treatment.value,
        absolute=d,
        absolute_ci=(d - Z95 * se, d + Z95 * se),
        relative=rel,
        relative_ci=(rel - Z95 * rel_se, rel + Z95 * rel_se),
        p=p,
    )


def sample_ratio_mismatch(counts: list[int], shares: list[float]) -> float:
    """The chi-square p-value of the arms' unit counts against their expected shares; a
    small p (the usual alarm is p < 0.001) says the split is broken, not the treatment."""
    total = sum(counts)
    expected = [total * s / sum(shares) for s in shares]
    return float(stats.chisquare(counts, expected).pvalue)


def minimum_detectable_effect(control: Estimate, n_treatment: int) -> float:
    """The relative lift a test of these sizes detects with power 0.8 at alpha 0.05 (two
    sided), from the control's per-unit variance."""
    if not control.value or not np.isfinite(control.variance):
        return float("nan")
    unit_var = control.variance * control.units  # var of one unit's contribution
    se = np.sqrt(unit_var / control.units + unit_var / max(n_treatment, 1))
    return float((Z95 + Z_POWER) * se / abs(control.value))


def split(keys: list[str], salt: str, treatment_share: float = 0.5) -> np.ndarray:
    """bool [n]: the units a hash with `salt` sends to treatment (the server's bucket hash)."""
    cut = int(round(treatment_share * 10_000))
    return np.array([zlib.crc32(f"{salt}:{k}".encode()) % 10_000 < cut for k in keys], bool)


def aa_false_positive_rate(
    keys: list[str], x: np.ndarray, y: np.ndarray, salts: int = 200, alpha: float = 0.05
) -> tuple[float, np.ndarray]:
    """Units that all received the same treatment, split again by `salts` seeded hashes:
    the share of splits whose lift has p < alpha (about alpha when the test is calibrated)
    and the p-values."""
    p = np.empty(salts)
    for s in range(salts):
        t = split(keys, f"aa-{s}")
        p[s] = lift(ratio(x[t], y[t]), ratio(x[~t], y[~t])).p
    return float((p < alpha).mean()), p
