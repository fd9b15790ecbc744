"""A rare binary task trained beside a regression task on a 1..1000 scale (the simulator's
watch time in 50 ms units): on the raw scale the regression loss (MSE of order 1e5)
swamps the binary task's; standardised, the binary task keeps its single-task AUC."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from infnet.data.prepare import prepare
from infnet.data.sources.synthetic import build_raw
from infnet.data.spec import TaskSpec
from infnet.training.config import RunConfig, TrainConfig
from infnet.training.trainer import Trainer

ROWS, EPOCHS, MODEL = 100_000, 3, "mmoe"


def _prepare(out: Path, tasks: list[str], standardise: bool) -> Path:
    raw = build_raw(ROWS, 2_000, 1_000, 0, max_len=20, tasks=["is_like"])
    raw.log = raw.log.with_columns((pl.col("play_time_ms") / 50).clip(1, 1000).alias("watch"))
    specs = {
        "is_like": raw.tasks[0],  # about 3% positives
        "watch": TaskSpec("watch", "watch", kind="regression", standardise=standardise),
    }
    raw.tasks = [specs[t] for t in tasks]
    prepare(raw, out, progress=False)
    return out


def _like_auc(data: Path, seed: int = 0) -> float:
    run = RunConfig(
        data=str(data),
        model=MODEL,
        model_options={"embedding_dim": 16},
        train=TrainConfig(epochs=EPOCHS, batch_size=512, seed=seed),
    )
    return Trainer.from_config(run, None, progress=False).fit()["test"]["is_like"]["auc"]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("mixed")
    return {
        "single": _prepare(d / "single", ["is_like"], True),
        "standardised": _prepare(d / "standardised", ["is_like", "watch"], True),
        "raw": _prepare(d / "raw", ["is_like", "watch"], False),
    }


def test_a_standardised_regression_task_does_not_cost_the_binary_task(datasets):
    single = _like_auc(datasets["single"])
    both = _like_auc(datasets["standardised"])
    raw = _like_auc(datasets["raw"])
    assert single > 0.7
    assert both >= single - 0.005, (single, both)
    assert raw < single - 0.1, (single, raw)  # what the raw scale did: the binary task collapses
