"""Significance of a claim "model A is better than model B" (DESIGN.md section 6).

- Over seeds: the paired t-test on per-seed figures (same seeds, same data).
- On one test set: DeLong's test for two correlated AUCs (DeLong, DeLong and
  Clarke-Pearson 1988), computed with the O(n log n) midrank algorithm of Sun and Xu
  (2014, IEEE Signal Processing Letters 21(11)). With m positives X and n negatives Y,
  psi(x, y) = 1 if x > y, 1/2 if x = y, 0 otherwise, and the placement values
      V10(X_i) = 1/n sum_j psi(X_i, Y_j),   V01(Y_j) = 1/m sum_i psi(X_i, Y_j),
  the AUC of classifier r is the mean of its V10 (= mean of its V01) and
      S = S10 / m + S01 / n,
  where S10, S01 are the sample covariance matrices (over classifiers) of V10 and V01.
  Sun and Xu obtain every placement value from three midrank vectors: among positives
  (T_x), among negatives (T_y) and among all scores (T_z):
      V10(X_i) = (T_z(X_i) - T_x(X_i)) / n,   V01(Y_j) = 1 - (T_z(Y_j) - T_y(Y_j)) / m.
  z = (AUC_a - AUC_b) / sqrt(S_aa + S_bb - 2 S_ab), two-sided p from the standard normal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from infnet.metrics import midranks


def _finite_1d(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) over seeds; std is NaN for one value."""
    v = _finite_1d(values, "values")
    if len(v) == 0:
        raise ValueError("mean_std of no values")
    std = float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
    return float(np.mean(v)), std


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sided paired t-test of a against b (per-seed figures in the same seed order).

    Returns (t, p); t > 0 means a is larger on average. Degenerate cases, defined here
    rather than left to warnings:
    - fewer than 2 pairs: (NaN, NaN), there is no variance to test against;
    - all differences equal (zero variance): (0, 1) if they are all zero, otherwise
      (+-inf, 0), the limit of the statistic.
    """
    x, y = _finite_1d(a, "a"), _finite_1d(b, "b")
    if len(x) != len(y):
        raise ValueError(f"paired t-test needs equal lengths, got a: {len(x)}, b: {len(y)}")
    if len(x) < 2:
        return float("nan"), float("nan")
    d = x - y
    if np.all(d == d[0]):
        if d[0] == 0:
            return 0.0, 1.0
        return float(np.copysign(np.inf, d[0])), 0.0
    res = stats.ttest_rel(x, y)
    return float(res.statistic), float(res.pvalue)


def delong_covariance(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """AUCs [k] and their DeLong covariance matrix [k, k] for scores [k, N] of k classifiers."""
    y = np.asarray(labels)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if y.ndim != 1 or s.ndim != 2 or s.shape[1] != len(y):
        raise ValueError(f"labels must be [N] and scores [k, N], got {y.shape} and {s.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    pos = y.astype(bool)
    m, n = int(pos.sum()), int((~pos).sum())
    if m < 2 or n < 2:
        raise ValueError(
            f"DeLong's test needs at least 2 positives and 2 negatives, got {m} and {n}"
        )
    x_scores, y_scores = s[:, pos], s[:, ~pos]  # [k, m], [k, n]
    tx = np.stack([midranks(r) for r in x_scores])
    ty = np.stack([midranks(r) for r in y_scores])
    tz = np.stack([midranks(r) for r in np.concatenate([x_scores, y_scores], axis=1)])
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v10 = (tz[:, :m] - tx) / n  # [k, m]
    v01 = 1.0 - (tz[:, m:] - ty) / m  # [k, n]
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return aucs, s10 / m + s01 / n


def delong(labels: Any, scores_a: Any, scores_b: Any) -> dict[str, float]:
    """DeLong's two-sided test of AUC(a) = AUC(b) on the same rows.

    Returns {"auc_a", "auc_b", "z", "p"}; z > 0 means a has the larger AUC. When the
    difference has zero variance (e.g. identical scores) z = 0, p = 1 if the AUCs are
    equal, else z = +-inf, p = 0.
    """
    a = np.asarray(scores_a)
    b = np.asarray(scores_b)
    if a.shape != b.shape:
        raise ValueError(f"scores_a {a.shape} and scores_b {b.shape} differ in shape")
    aucs, cov = delong_covariance(labels, np.stack([a, b]))
    diff = aucs[0] - aucs[1]
    var = cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1]
    if var <= 1e-15 * max(cov[0, 0], cov[1, 1], 1e-300):
        z = 0.0 if diff == 0 else float(np.copysign(np.inf, diff))
    else:
        z = float(diff / np.sqrt(var))
    p = float(2.0 * stats.norm.sf(abs(z)))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "z": z, "p": p}
