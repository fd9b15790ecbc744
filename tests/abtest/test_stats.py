"""The A/B statistics: the delta method against a direct computation, a known injected
lift recovered within its interval, A/A splits that rarely reject, and the guards."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as sps

from infnet.abtest import stats
from infnet.serving.config import ServerConfig


def users(n: int, rng: np.random.Generator, lift: float = 0.0):
    """Per-user impressions and clicks: users differ in activity and in click rate."""
    impressions = rng.poisson(rng.gamma(2.0, 10.0, n)) + 1
    p = np.clip(rng.beta(2, 5, n) * (1 + lift), 0, 1)
    return rng.binomial(impressions, p).astype(float), impressions.astype(float)


def test_ratio_variance_is_the_delta_method():
    rng = np.random.default_rng(0)
    x, y = users(500, rng)
    e = stats.ratio(x, y)
    r = x.sum() / y.sum()
    # the linearised per-unit contributions (x - r y) / ybar, their variance over n
    z = (x - r * y) / y.mean()
    assert e.value == pytest.approx(r)
    assert e.variance == pytest.approx(z.var(ddof=1) / len(x), rel=1e-9)
    per_user = stats.ratio(x, np.ones_like(x))  # y = 1: the variance of a mean
    assert per_user.variance == pytest.approx(x.var(ddof=1) / len(x))


def test_an_injected_lift_is_recovered_within_its_interval():
    rng = np.random.default_rng(1)
    truth = 0.05
    covered, rejected = 0, 0
    for _ in range(200):
        ct, it = users(4000, rng, truth)
        cc, ic = users(4000, rng)
        lift = stats.lift(stats.ratio(ct, it), stats.ratio(cc, ic))
        # the true relative lift of clicks per impression: E[p (1 + l)] / E[p] - 1 = l
        covered += lift.relative_ci[0] <= truth <= lift.relative_ci[1]
        rejected += lift.p < 0.05
    assert 0.90 <= covered / 200 <= 0.99
    assert rejected / 200 > 0.5  # the lift is detected in most tests of this size


def test_aa_splits_rarely_reject():
    rng = np.random.default_rng(2)
    x, y = users(3000, rng)
    keys = [str(u) for u in range(3000)]
    rate, p = stats.aa_false_positive_rate(keys, x, y, salts=200)
    assert 0.01 <= rate <= 0.10
    assert sps.kstest(p, "uniform").pvalue > 0.001  # p-values uniform under the null


def test_sample_ratio_mismatch_and_mde():
    assert stats.sample_ratio_mismatch([5000, 5040], [50, 50]) > 0.5
    assert stats.sample_ratio_mismatch([5300, 4700], [50, 50]) < 1e-6
    assert stats.sample_ratio_mismatch([9000, 1000], [90, 10]) > 0.5
    x = np.random.default_rng(3).normal(10.0, 2.0, 2000)
    control = stats.ratio(x, np.ones_like(x))
    # (z_0.975 + z_0.8) sqrt(2 sigma^2 / n) / mu for equal arms
    want = (1.959964 + 0.841621) * np.sqrt(2 * x.var(ddof=1) / 2000) / x.mean()
    assert stats.minimum_detectable_effect(control, 2000) == pytest.approx(want, rel=1e-4)


def test_bucket_routing_is_stable_across_processes_and_balanced():
    config = ServerConfig(model="m", num_buckets=100)
    buckets = [config.bucket(str(u)) for u in range(20_000)]
    code = ("from infnet.serving.config import ServerConfig; c = ServerConfig(model='m'); "
            "print(','.join(str(c.bucket(str(u))) for u in range(20000)))")  # fmt: skip
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "123"})  # fmt: skip
    assert [int(b) for b in other.stdout.strip().split(",")] == buckets
    counts = np.bincount(buckets, minlength=100)
    assert sps.chisquare(counts).pvalue > 0.001
    treatment = np.mean(np.array(buckets) >= 50)
    assert abs(treatment - 0.5) < 0.02
