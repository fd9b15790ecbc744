"""Selection: which checkpoint is kept under each mode; task_flags: below chance, collapse."""

from __future__ import annotations

import pytest
from tests.helpers import make_schema

from infnet.training.config import TrainConfig
from infnet.training.selection import Selection, monitored, task_flags

SCHEMA = make_schema()  # click, like (binary), watch (regression)


def _valid(click: float, like: float, r2: float) -> dict:
    return {
        "click": {"auc": click, "gauc": click, "logloss": 0.5, "n": 10},
        "like": {"auc": like, "gauc": like, "logloss": 0.5, "n": 10},
        "watch": {"mae": 1.0, "rmse": 1.0, "r2": r2, "n": 10},
        "mtl_auc": (click + like) / 2,
        "mtl_gauc": (click + like) / 2,
    }


def test_monitor_reads_top_level_and_task_metrics_and_suggests_a_close_one():
    v = _valid(0.7, 0.6, 0.2)
    assert monitored(v, "mtl_auc") == pytest.approx(0.65)
    assert monitored(v, "like.auc") == 0.6
    assert monitored(v, "watch.r2") == 0.2
    with pytest.raises(ValueError, match="did you mean 'like.auc'"):
        monitored(v, "lke.auc")


def test_a_loss_or_an_error_is_best_lowest():
    low, high = _valid(0.7, 0.6, 0.2), _valid(0.7, 0.6, 0.2)
    low["click"]["logloss"], high["click"]["logloss"] = 0.40, 0.45
    assert Selection(SCHEMA, TrainConfig(monitor="click.logloss")).improves(low, high)
    assert not Selection(SCHEMA, TrainConfig(monitor="click.logloss")).improves(high, low)
    low["watch"]["rmse"], high["watch"]["rmse"] = 1.0, 2.0
    assert Selection(SCHEMA, TrainConfig(monitor="watch.rmse")).improves(low, high)


def test_the_mean_hides_a_broken_task_and_all_tasks_does_not():
    kept, new = _valid(0.70, 0.65, 0.30), _valid(0.95, 0.45, 0.30)  # like breaks, the mean rises
    assert Selection(SCHEMA, TrainConfig()).improves(new, kept)
    assert Selection(SCHEMA, TrainConfig(selection="weighted")).improves(new, kept)
    assert not Selection(SCHEMA, TrainConfig(selection="all_tasks")).improves(new, kept)
    better = _valid(0.71, 0.65, 0.31)
    assert Selection(SCHEMA, TrainConfig(selection="all_tasks")).improves(better, kept)


def test_weighted_selection_mixes_auc_and_r2_with_the_given_weights():
    s = Selection(
        SCHEMA,
        TrainConfig(selection="weighted", selection_weights={"click": 0, "like": 1, "watch": 3}),
    )
    assert s.score(_valid(0.9, 0.6, 0.2)) == pytest.approx((0.6 + 3 * 0.2) / 4)
    with pytest.raises(ValueError, match="unknown tasks"):
        Selection(SCHEMA, TrainConfig(selection_weights={"clik": 1.0}))


def test_a_task_without_a_score_neither_counts_nor_blocks():
    s = Selection(SCHEMA, TrainConfig(selection="weighted"))
    assert s.score(_valid(0.8, float("nan"), 0.2)) == pytest.approx(0.5)
    assert Selection(SCHEMA, TrainConfig(selection="all_tasks")).improves(
        _valid(0.8, float("nan"), 0.3), _valid(0.7, 0.6, 0.2)
    )


def test_mtl_monitor_without_a_binary_task_is_refused():
    regression_only = make_schema(tasks=(("watch", "regression"),))
    with pytest.raises(ValueError, match="selection=weighted"):
        Selection(regression_only, TrainConfig())
    assert (
        Selection(regression_only, TrainConfig(selection="weighted")).score(
            {"watch": {"mae": 1, "rmse": 1, "r2": 0.25, "n": 3}}
        )
        == 0.25
    )


def test_flags_name_a_task_below_chance_and_a_collapse():
    assert task_flags(SCHEMA, _valid(0.7, 0.6, 0.1)) == []
    below = task_flags(SCHEMA, _valid(0.7, 0.41, -0.2))
    assert below == [
        "like: valid AUC 0.4100 is below chance",
        "watch: valid R2 -0.2000 is below 0 (worse than a constant)",
    ]
    history = [_valid(0.72, 0.70, 0.3), _valid(0.74, 0.62, 0.3)]
    collapsed = task_flags(SCHEMA, _valid(0.75, 0.60, 0.29), history, split="test")
    assert collapsed == ["like: test AUC collapsed to 0.6000 from 0.7000"]
    nan = _valid(0.7, float("nan"), 0.1)  # no positives in the split: nothing to judge
    assert task_flags(SCHEMA, nan) == []
