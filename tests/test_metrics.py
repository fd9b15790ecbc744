"""Metrics against scikit-learn, numpy and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from infnet.data.schema import Task
from infnet.metrics import (
    auc,
    evaluate,
    gauc,
    label_correlation,
    logloss,
    mae,
    midranks,
    r2,
    relative_improvement,
    rmse,
)


def test_midranks_average_ties():
    np.testing.assert_array_equal(midranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])), [4, 1, 4, 2, 4])


def test_auc_hand_example():
    # Positive 0.35 beats one of two negatives, positive 0.8 beats both: 3 of 4 pairs.
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    # A tie between a positive and a negative counts one half.
    assert auc([0, 1], [0.5, 0.5]) == 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_sklearn_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 5000)
    s = rng.integers(0, 12, 5000) + 0.7 * y  # 24 distinct values: ties everywhere
    assert auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    f = rng.random(5000).astype(np.float32)
    assert auc(y, f) == pytest.approx(skm.roc_auc_score(y, f), abs=1e-12)


def test_auc_single_class_is_nan_and_bad_input_raises():
    assert math.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        auc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="scores contains NaN"):
        auc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="differ in length"):
        auc([0, 1, 1], [0.1, 0.2])


# --- gAUC -----------------------------------------------------------------------------------
def test_gauc_hand_example():
    # user A: pos 0.9 vs negs 0.3 (win), 0.9 (tie)           -> AUC 1.5/2 = 0.75,  3 rows
    # user B: pos 0.1, 0.4 vs negs 0.2, 0.4: 0 + 0 + 1 + 1/2  -> AUC 1.5/4 = 0.375, 4 rows
    # user C: two positives only                              -> skipped
    # user D: pos 0.6 vs neg 0.5                              -> AUC 1.0,  2 rows
    # gAUC = (3 * 0.75 + 4 * 0.375 + 2 * 1.0) / (3 + 4 + 2) = 5.75 / 9
    rows = [
        ("B", 0, 0.2),
        ("A", 1, 0.9),
        ("D", 0, 0.5),
        ("C", 1, 0.9),
        ("B", 1, 0.1),
        ("A", 0, 0.3),
        ("B", 1, 0.4),
        ("C", 1, 0.2),
        ("A", 0, 0.9),
        ("D", 1, 0.6),
        ("B", 0, 0.4),
    ]
    users = np.array([r[0] for r in rows])
    y = np.array([r[1] for r in rows])
    s = np.array([r[2] for r in rows])
    assert gauc(y, s, users) == pytest.approx(5.75 / 9, abs=1e-15)
    # Integer user keys give the same.
    ids = np.searchsorted(np.unique(users), users) * 1000 + 7
    assert gauc(y, s, ids) == pytest.approx(5.75 / 9, abs=1e-15)


def _gauc_reference(y, s, g):
    """The FuxiCTR definition, one user at a time."""
    total, weight = 0.0, 0
    for user in np.unique(g):
        rows = g == user
        if 0 < y[rows].sum() < rows.sum():
            total += skm.roc_auc_score(y[rows], s[rows]) * rows.sum()
            weight += rows.sum()
    return total / weight


@pytest.mark.parametrize("seed", [0, 1])
def test_gauc_equals_per_user_loop(seed):
    rng = np.random.default_rng(seed)
    n, users = 20000, 800
    g = rng.integers(0, users, n) * 3 - 500  # negative and sparse keys
    rate = rng.beta(0.5, 2.0, users)[(g + 500) // 3]  # many users with one class only
    y = (rng.random(n) < rate).astype(np.int64)
    s = np.round(rng.random(n) + 0.3 * y, 2)  # ties within and across users
    single_class = sum(
        1 for u in np.unique(g) if y[g == u].min() == y[g == u].max()
    )  # the test exercises the skip
    assert single_class > 50
    assert gauc(y, s, g) == pytest.approx(_gauc_reference(y, s, g), abs=1e-12)


def test_gauc_no_user_with_both_classes_is_nan():
    assert math.isnan(gauc([1, 1, 0], [0.1, 0.2, 0.3], [1, 1, 2]))


# --- LogLoss and regression -----------------------------------------------------------------
def test_logloss_equals_sklearn_and_clips():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 1000)
    p = rng.uniform(0.01, 0.99, 1000)
    assert logloss(y, p) == pytest.approx(skm.log_loss(y, p), rel=1e-12)
    # A confident mistake costs -log(1e-7), not infinity.
    assert logloss([1, 0], [0.0, 1.0]) == pytest.approx(-math.log(1e-7), rel=1e-9)
    with pytest.raises(ValueError, match="probs must lie in"):
        logloss([1, 0], [1.5, 0.2])


def test_regression_metrics_equal_sklearn():
    rng = np.random.default_rng(4)
    y = rng.normal(2, 1, 500)
    p = y + rng.normal(0, 0.5, 500)
    assert mae(y, p) == pytest.approx(skm.mean_absolute_error(y, p), rel=1e-12)
    assert rmse(y, p) == pytest.approx(math.sqrt(skm.mean_squared_error(y, p)), rel=1e-12)
    assert r2(y, p) == pytest.approx(skm.r2_score(y, p), rel=1e-12)
    assert math.isnan(r2([1.0, 1.0], [1.0, 2.0]))


# --- evaluate -------------------------------------------------------------------------------
TASKS = [
    Task(name="click", kind="binary", weight=1.0),
    Task(name="like", kind="binary", weight=2.0),
    Task(name="watch", kind="regression"),
]


def _data(seed=5, n=3000):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 100, n)
    labels = np.stack(
        [rng.integers(0, 2, n), rng.integers(0, 2, n), rng.gamma(2.0, 1.0, n)], axis=1
    ).astype(np.float64)
    outputs = np.stack(
        [
            np.clip(0.3 * labels[:, 0] + 0.7 * rng.random(n), 0, 1),
            np.clip(0.2 * labels[:, 1] + 0.8 * rng.random(n), 0, 1),
            labels[:, 2] + rng.normal(0, 1, n),
        ],
        axis=1,
    )
    mask = rng.random((n, 3)) > np.array([0.0, 0.3, 0.5])  # like and watch partly missing
    return outputs, labels, mask, users


def test_evaluate_matches_metrics_on_present_rows():
    outputs, labels, mask, users = _data()
    res = evaluate(TASKS, outputs, labels, mask, users)
    for j, name in enumerate(["click", "like"]):
        m = mask[:, j]
        assert res[name]["n"] == m.sum()
        assert res[name]["auc"] == auc(labels[m, j], outputs[m, j])
        assert res[name]["gauc"] == gauc(labels[m, j], outputs[m, j], users[m])
        assert res[name]["logloss"] == logloss(labels[m, j], outputs[m, j])
    m = mask[:, 2]
    assert res["watch"] == {
        "mae": mae(labels[m, 2], outputs[m, 2]),
        "rmse": rmse(labels[m, 2], outputs[m, 2]),
        "r2": r2(labels[m, 2], outputs[m, 2]),
        "n": int(m.sum()),
    }
    assert res["mtl_auc"] == pytest.approx((res["click"]["auc"] + 2 * res["like"]["auc"]) / 3)
    assert res["mtl_gauc"] == pytest.approx((res["click"]["gauc"] + 2 * res["like"]["gauc"]) / 3)


def test_evaluate_ignores_masked_rows():
    outputs, labels, mask, users = _data()
    before = evaluate(TASKS, outputs, labels, mask, users)
    assert (~mask).sum() > 1000
    labels2, outputs2 = labels.copy(), outputs.copy()
    labels2[~mask] = np.nan  # a missing label may hold anything
    outputs2[~mask] = np.where(np.arange(3) < 2, 1.0, 1e6)[np.nonzero(~mask)[1]]
    assert evaluate(TASKS, outputs2, labels2, mask, users) == before
    # Masking a row changes the figures (so the test above can fail).
    mask[0] = ~mask[0]
    assert evaluate(TASKS, outputs, labels, mask, users) != before


def test_evaluate_bad_shapes_name_the_array():
    outputs, labels, mask, users = _data(n=50)
    with pytest.raises(ValueError, match="outputs has shape"):
        evaluate(TASKS, outputs[:, :2], labels, mask, users)
    with pytest.raises(ValueError, match="label_mask must be boolean"):
        evaluate(TASKS, outputs, labels, mask.astype(np.int8), users)


# --- correlation and relative improvement ---------------------------------------------------
def test_label_correlation_equals_corrcoef():
    rng = np.random.default_rng(6)
    z = rng.normal(size=(2000, 1))
    values = np.concatenate([z + rng.normal(size=(2000, 3)), (z > 0).astype(float)], axis=1)
    full = np.ones(values.shape, dtype=bool)
    np.testing.assert_allclose(
        label_correlation(values, full), np.corrcoef(values, rowvar=False), atol=1e-12
    )
    mask = rng.random(values.shape) > 0.3
    values[~mask] = np.nan
    got = label_correlation(values, mask)
    for i in range(4):
        for j in range(4):
            both = mask[:, i] & mask[:, j]
            want = np.corrcoef(values[both, i], values[both, j])[0, 1]
            assert got[i, j] == pytest.approx(want, abs=1e-12)


def test_label_correlation_constant_column_is_nan():
    values = np.array([[1.0, 2.0], [1.0, 3.0], [1.0, 5.0]])
    got = label_correlation(values, np.ones_like(values, dtype=bool))
    assert math.isnan(got[0, 1]) and math.isnan(got[0, 0]) and got[1, 1] == pytest.approx(1.0)


def test_relative_improvement():
    assert relative_improvement(0.7575, 0.75) == pytest.approx(0.01)
