"""The simulator: determinism, label rates, calibrated oracle, history dependence, prepare."""

from __future__ import annotations

import datetime
import json

import numpy as np
import polars as pl
import pytest
import typer
from scipy.special import logit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import OneHotEncoder
from typer.testing import CliRunner

from infnet.data import layout
from infnet.data.loader import PreparedDataset
from infnet.data.schema import Schema
from infnet.data.sources import simulator as sim
from infnet.data.sources import synthetic as syn

ROWS, USERS, ITEMS = 20_000, 500, 1_000
BINARY = {
    "click": ("is_click", "p_click"),
    "like": ("is_like", "p_like"),
    "long_view": ("long_view", "p_long_view"),
}


@pytest.fixture(scope="module")
def raw():
    return syn.build_raw(ROWS, USERS, ITEMS, seed=7)


@pytest.fixture(scope="module")
def log(raw) -> pl.DataFrame:
    """The log joined with the latent item / user attributes the checks need."""
    world = sim.World.draw(
        USERS, ITEMS, np.random.default_rng(np.random.SeedSequence(7).spawn(3)[0])
    )
    v, u = raw.log["video_id"].to_numpy(), raw.log["user_id"].to_numpy()
    return raw.log.with_columns(
        author=world.item_author[v],
        tag=world.item_tag[v],
        video_type=world.item_type[v],
        duration=np.digitize(world.item_duration_s[v], [10, 20, 40, 80]),
        group=world.user_group[u],
        activity=world.user_activity[u],
    )


def test_same_seed_same_data_and_other_seed_differs(raw):
    again = syn.build_raw(ROWS, USERS, ITEMS, seed=7)
    assert (
        again.log.equals(raw.log)
        and again.users.equals(raw.users)
        and again.items.equals(raw.items)
    )
    other = syn.build_raw(ROWS, USERS, ITEMS, seed=8)
    assert not other.log["is_click"].equals(raw.log["is_click"])


def test_shape_rows_and_time_order(raw):
    log = raw.log
    assert len(log) == ROWS
    assert log["time_ms"].is_sorted()
    # one impression per user per round: a user's times are strictly increasing
    per_user = log.group_by("user_id").agg((pl.col("time_ms").diff() > 0).all().alias("increasing"))
    assert per_user["increasing"].all()
    assert set(log.columns) >= {
        "user_id",
        "video_id",
        "time_ms",
        "tab",
        "hour",
        "weekday",
        "play_time_ms",
    }
    beijing = pl.from_epoch(log["time_ms"] + 8 * 3_600_000, time_unit="ms")  # as KuaiRand
    assert (log["hour"] == beijing.dt.hour()).all() and (
        log["weekday"] == beijing.dt.weekday()
    ).all()
    assert beijing.min().date() == datetime.date(2022, 4, 25)
    assert raw.items["video_id"].to_list() == list(range(ITEMS))
    assert raw.users["user_id"].to_list() == list(range(USERS))


def test_label_rates_like_kuairand(raw):
    rate = {t: raw.log[c].mean() for t, (c, _) in BINARY.items()}
    assert 0.33 < rate["click"] < 0.47
    assert 0.015 < rate["like"] < 0.06
    assert 0.22 < rate["long_view"] < 0.38


def test_labels_are_bernoulli_draws_of_the_recorded_probabilities(raw):
    for task, (label, prob) in BINARY.items():
        y, p = raw.log[label].to_numpy(), raw.log[prob].to_numpy().astype(np.float64)
        assert 0.74 < roc_auc_score(y, p) < 0.95, task
        edges = np.quantile(p, np.linspace(0, 1, 11))
        bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, 9)
        for b in range(10):
            m = bins == b
            se = np.sqrt(p[m].mean() * (1 - p[m].mean()) / m.sum())
            assert abs(y[m].mean() - p[m].mean()) < 4 * se + 1e-3, (task, b)


def test_play_time_expectation_matches_draws(raw):
    y = np.log1p(raw.log["play_time_ms"].to_numpy())
    e = raw.log["e_play_time"].to_numpy()
    assert abs(y.mean() - e.mean()) < 4 * sim.SIGMA_WATCH / np.sqrt(len(y))
    resid = y - e
    assert abs(resid.std() - sim.SIGMA_WATCH) < 0.02
    assert np.corrcoef(resid, e)[0, 1] ** 2 < 1e-3


def test_a_model_without_history_stays_below_the_oracle(log):
    """Logistic regression on every id and static feature, and on the crosses the latent
    model uses (user x tag, hour x type, group x author, activity x duration), but without
    the behaviour history: the oracle, which reads the history, ranks clearly better."""
    log = log.with_columns(
        user_tag=pl.col("user_id") * 1000 + pl.col("tag"),
        hour_type=pl.col("hour") * 10 + pl.col("video_type"),
        group_author=pl.col("group") * 10_000 + pl.col("author"),
        activity_duration=pl.col("activity") * 10 + pl.col("duration"),
    )
    cols = [
        "user_id",
        "video_id",
        "author",
        "tag",
        "tab",
        "hour",
        "user_tag",
        "hour_type",
        "group_author",
        "activity_duration",
    ]
    train, test = log[: int(0.7 * ROWS)], log[int(0.7 * ROWS) :]
    enc = OneHotEncoder(handle_unknown="ignore").fit(train[cols].to_numpy())
    x_train, x_test = enc.transform(train[cols].to_numpy()), enc.transform(test[cols].to_numpy())
    for task, (label, prob) in BINARY.items():
        lr = LogisticRegression(C=0.3, max_iter=500).fit(x_train, train[label].to_numpy())
        auc_lr = roc_auc_score(test[label], lr.predict_proba(x_test)[:, 1])
        auc_oracle = roc_auc_score(test[label], test[prob])
        assert auc_lr < auc_oracle - 0.03, (task, auc_lr, auc_oracle)


def _one_user_world():
    world = sim.World.draw(1, 50, np.random.default_rng(0))
    history = sim.History.start(world, np.random.default_rng(1))
    return world, history


def _logits(world, history, item, hour=12, tab=1):
    p = sim.truth(
        world, history, np.array([0]), np.array([item]), np.array([hour]), np.array([tab])
    )
    return {k: float(logit(v[0])) if k != "watch_mu" else float(v[0]) for k, v in p.items()}


def test_click_and_like_histories_move_only_their_tasks():
    world, history = _one_user_world()
    item = 0
    tag, author = world.item_tag[item], world.item_author[item]
    before = _logits(world, history, item)
    other = next(i for i in range(50) if world.item_tag[i] != tag)
    for _ in range(3):  # three clicks on the candidate's tag after 30 on another tag
        history.record(
            world,
            np.array([0]),
            np.array([item]),
            np.array([True]),
            np.array([False]),
            np.array([False]),
        )
    after_click = _logits(world, history, item)
    assert after_click["click"] - before["click"] == pytest.approx(0.5 * (1 + 0.8 + 0.8**2))
    assert after_click["like"] == pytest.approx(before["like"])
    for _ in range(2):  # two likes of the candidate's author
        history.record(
            world,
            np.array([0]),
            np.array([item]),
            np.array([False]),
            np.array([True]),
            np.array([False]),
        )
    after_like = _logits(world, history, item)
    gamma = world.gamma[world.user_group[0]]
    assert after_like["like"] - after_click["like"] == pytest.approx(gamma * (1 + 0.9))
    assert after_like["click"] == pytest.approx(after_click["click"])
    # a different author of the like history leaves the candidate's like untouched
    same_author = world.item_author == author
    assert _logits(world, history, int(np.flatnonzero(~same_author)[0]))["like"] == pytest.approx(
        _logits(
            world,
            sim.History.start(world, np.random.default_rng(1)),
            int(np.flatnonzero(~same_author)[0]),
        )["like"]
    )
    history.n_long_view[0] = 9
    after_view = _logits(world, history, item)
    assert after_view["long_view"] - after_like["long_view"] == pytest.approx(0.3 * np.log(10))
    assert after_view["click"] == pytest.approx(after_like["click"])
    # the hour changes click (hour x video_type) and nothing else
    night = _logits(world, history, other, hour=2)
    noon = _logits(world, history, other, hour=14)
    h, k = world.H, world.item_type[other]
    assert noon["click"] - night["click"] == pytest.approx(h[2, k] - h[0, k])
    assert noon["like"] == pytest.approx(night["like"]) and noon["long_view"] == pytest.approx(
        night["long_view"]
    )


def test_click_history_is_the_recency_weighted_last_20_clicks():
    world, history = _one_user_world()
    rng = np.random.default_rng(3)
    items = rng.integers(0, 50, 27)
    for i in items:
        history.record(
            world,
            np.array([0]),
            np.array([i]),
            np.array([True]),
            np.array([False]),
            np.array([False]),
        )
    tags = world.item_tag[items][::-1][: sim.K_CLICK]  # most recent first
    for target in range(len(world.tag_emb)):
        expected = sum(sim.LAMBDA_CLICK**j for j, t in enumerate(tags) if t == target)
        got = sim._recency(
            history.click_tags[:1], history.n_click[:1], np.array([target]), sim.LAMBDA_CLICK
        )
        assert got[0] == pytest.approx(expected)


def test_workdir_parts_equal_the_in_memory_log(tmp_path, raw):
    parted = syn.build_raw(ROWS, USERS, ITEMS, seed=7, workdir=tmp_path, chunk_rows=6_000)
    assert len(list(tmp_path.glob("part-*.parquet"))) >= 3
    assert isinstance(parted.log, pl.LazyFrame)
    assert parted.log.collect().equals(raw.log)
    with pytest.raises(FileExistsError, match="part files"):
        syn.build_raw(100, 10, 10, seed=0, workdir=tmp_path)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="rows must be at least 1"):
        syn.build_raw(0, 10, 10, seed=0)
    with pytest.raises(ValueError, match=r"unknown tasks \['clicks'\]"):
        syn.build_raw(10, 10, 10, seed=0, tasks=["clicks"])


def test_prepare_end_to_end(tmp_path):
    out = tmp_path / "syn"
    stats = syn.prepare_synthetic(
        out, rows=ROWS, users=USERS, items=ITEMS, seed=7, tasks=syn.TASKS, progress=False
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"]  # the work directory is gone
    schema = Schema.load(out / layout.SCHEMA)
    assert schema.sequences.behaviours == ["click", "like", "long_view"]
    assert schema.sequences.side_fields == ["video_id", "author_id", "tag"]
    assert schema.task_names == ["is_click", "is_like", "long_view", "play_time"]
    assert [s.rows for s in schema.splits] == [14_000, 3_000, 3_000]
    assert schema.field("video_duration").boundaries
    written = json.loads((out / layout.STATS).read_text())
    assert written["oracle_auc"] == stats["oracle_auc"]
    for split in layout.SPLITS:
        assert set(stats["oracle_auc"][split]) == {"is_click", "is_like", "long_view"}
        assert all(0.7 < a < 0.95 for a in stats["oracle_auc"][split].values())
    batch = next(PreparedDataset(out).batches("test", 256))
    assert batch.seq_ids.shape == (256, 3, 50, 3)
    assert batch.seq_mask[:, 0].any(dim=1).float().mean() > 0.9  # late rows have click histories
    test = pl.read_parquet(out / "test")
    assert test[layout.oracle_col("play_time")].mean() == pytest.approx(
        test[layout.label_col("play_time")].mean(), abs=0.05
    )


def test_command_prints_the_summary(tmp_path):
    app = typer.Typer()
    app.command()(syn.command)
    app.command("unused")(lambda: None)  # two commands, so the name is part of the call
    runner = CliRunner()
    args = [
        "command",
        "--rows",
        "5000",
        "--users",
        "200",
        "--items",
        "100",
        "--out",
        str(tmp_path / "a"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "is_click oracle AUC" in result.output and "3,500" in result.output  # 70% of 5000
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "exists and is not empty" in " ".join(again.output.split())
