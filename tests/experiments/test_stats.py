"""Significance tests: DeLong against the 1988 definition, the paired t-test against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from infnet.experiments.stats import delong, delong_covariance, mean_std, paired_ttest


def _delong_reference(y, scores):
    """DeLong et al. 1988 directly: placement values from all m * n pairs, O(m n)."""
    y = np.asarray(y).astype(bool)
    aucs, v10s, v01s = [], [], []
    for s in scores:
        x, z = s[y][:, None], s[~y][None, :]  # positives [m, 1], negatives [1, n]
        psi = (x > z) + 0.5 * (x == z)  # [m, n]
        aucs.append(psi.mean())
        v10s.append(psi.mean(axis=1))  # V10(X_i): mean over negatives
        v01s.append(psi.mean(axis=0))  # V01(Y_j): mean over positives
    m, n = y.sum(), (~y).sum()
    k = len(scores)
    s10 = np.array(
        [
            [np.sum((v10s[r] - aucs[r]) * (v10s[q] - aucs[q])) / (m - 1) for q in range(k)]
            for r in range(k)
        ]
    )
    s01 = np.array(
        [
            [np.sum((v01s[r] - aucs[r]) * (v01s[q] - aucs[q])) / (n - 1) for q in range(k)]
            for r in range(k)
        ]
    )
    return np.array(aucs), s10 / m + s01 / n


@pytest.mark.parametrize("seed", [0, 1])
def test_delong_covariance_equals_reference(seed):
    rng = np.random.default_rng(seed)
    n = 1500
    y = rng.integers(0, 2, n)
    scores = np.stack(
        [
            np.round(y + rng.normal(0, 1.5, n), 1),  # heavy ties
            np.round(0.5 * y + rng.normal(0, 1.0, n), 2),
            rng.integers(0, 5, n).astype(float),  # unrelated, five values
        ]
    )
    aucs, cov = delong_covariance(y, scores)
    ref_aucs, ref_cov = _delong_reference(y, scores)
    np.testing.assert_allclose(aucs, ref_aucs, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, rtol=1e-9, atol=1e-15)
    assert cov[0, 1] != 0  # the covariance term is exercised

    res = delong(y, scores[0], scores[1])
    z = (ref_aucs[0] - ref_aucs[1]) / math.sqrt(ref_cov[0, 0] + ref_cov[1, 1] - 2 * ref_cov[0, 1])
    assert res["z"] == pytest.approx(z, rel=1e-9)
    assert res["p"] == pytest.approx(2 * sps.norm.sf(abs(z)), rel=1e-9)
    swapped = delong(y, scores[1], scores[0])
    assert swapped["z"] == pytest.approx(-res["z"]) and swapped["p"] == pytest.approx(res["p"])


def test_delong_known_cases():
    rng = np.random.default_rng(2)
    n = 4000
    y = rng.integers(0, 2, n)
    good = y + rng.normal(0, 0.7, n)
    res = delong(y, good, good.copy())
    assert res["z"] == 0.0 and res["p"] == 1.0 and res["auc_a"] == res["auc_b"]
    weak = y + rng.normal(0, 3.0, n)
    res = delong(y, good, weak)
    assert res["auc_a"] > res["auc_b"] + 0.1
    assert res["z"] > 5 and res["p"] < 1e-6


def test_delong_bad_input():
    with pytest.raises(ValueError, match="at least 2 positives and 2 negatives"):
        delong([0, 0, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    with pytest.raises(ValueError, match="differ in shape"):
        delong([0, 1], [0.1, 0.2], [0.1])


def test_paired_ttest_hand_example():
    a = [0.80, 0.82, 0.81]
    b = [0.78, 0.80, 0.80]
    # d = (0.02, 0.02, 0.01): mean 1/60, sd sqrt(1/30000), t = (1/60) / (sd / sqrt 3) = 5,
    # df = 2: two-sided p = 1 - t / sqrt(t^2 + 2) = 1 - 5 / sqrt(27).
    t, p = paired_ttest(a, b)
    assert t == pytest.approx(5.0, rel=1e-9)
    assert p == pytest.approx(1 - 5 / math.sqrt(27), rel=1e-9)
    ref = sps.ttest_rel(a, b)
    assert (t, p) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-12)
    t2, p2 = paired_ttest(b, a)
    assert t2 == pytest.approx(-t) and p2 == pytest.approx(p)


def test_paired_ttest_degenerate_cases():
    assert all(math.isnan(v) for v in paired_ttest([0.8], [0.7]))
    assert paired_ttest([0.8, 0.9], [0.8, 0.9]) == (0.0, 1.0)
    assert paired_ttest([1.0, 2.0], [0.5, 1.5]) == (math.inf, 0.0)
    assert paired_ttest([0.5, 1.5], [1.0, 2.0]) == (-math.inf, 0.0)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_ttest([0.8, 0.9], [0.7])


def test_mean_std():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    mean, std = mean_std([0.5])
    assert mean == 0.5 and math.isnan(std)
    with pytest.raises(ValueError, match="no values"):
        mean_std([])
