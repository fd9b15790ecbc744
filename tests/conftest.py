"""Session fixtures shared by every test package (helpers.py has the plain functions)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_prepared(tmp_path_factory) -> Path:
    """A small simulated dataset, prepared once per test session."""
    from infnet.data.sources.synthetic import prepare_synthetic

    out = tmp_path_factory.mktemp("sim") / "prepared"
    prepare_synthetic(out, rows=6_000, users=300, items=200, seed=1, max_len=8)
    return out


@pytest.fixture(scope="session")
def flipped_prepared(tmp_path_factory) -> Path:
    """The simulator with one more task, `flipped`: is_click in train, 1 - is_click in valid
    and test, so whatever a model learns of it scores below chance there (a broken task)."""
    import polars as pl

    from infnet.data.prepare import prepare
    from infnet.data.sources.synthetic import build_raw
    from infnet.data.spec import SplitSpec, TaskSpec

    raw = build_raw(6_000, 300, 200, 1, max_len=8, tasks=["is_click", "long_view"])
    t = raw.log["time_ms"]
    cut, cut2, end = int(t.quantile(0.7)), int(t.quantile(0.85)), int(t.max()) + 1
    raw.log = raw.log.with_columns(
        pl.when(pl.col("time_ms") < cut)
        .then(pl.col("is_click"))
        .otherwise(1 - pl.col("is_click"))
        .alias("flipped")
    )
    raw.tasks = [*raw.tasks, TaskSpec("flipped", "flipped")]
    raw.split = SplitSpec(
        bounds={"train": (int(t.min()), cut), "valid": (cut, cut2), "test": (cut2, end)}
    )
    out = tmp_path_factory.mktemp("flipped") / "prepared"
    prepare(raw, out, progress=False)
    return out
