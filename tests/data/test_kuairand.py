"""KuaiRand-Pure on the real files: the subset's split, point-in-time sequences checked
against the raw log, the features, and the `infnet prepare kuairand` command."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import typer
from tests.helpers import kuairand_dir
from typer.testing import CliRunner

from infnet.data import layout
from infnet.data.loader import PreparedDataset
from infnet.data.prepare import PrepareError
from infnet.data.schema import Schema
from infnet.data.sources import kuairand, kuairand_files

BEHAVIOUR_COLUMN = {"click": "is_click", "like": "is_like", "long_view": "long_view"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    data_dir = kuairand_dir()
    out = tmp_path_factory.mktemp("kuairand") / "kr"
    stats = kuairand.prepare_kuairand(data_dir, out, progress=False)
    return data_dir, out, stats


def test_subset_split_rows_and_duplicates(prepared):
    _, out, stats = prepared
    assert stats["rows"] == {"train": 167_281, "valid": 26_683, "test": 28_905}
    assert stats["source"]["duplicates_removed"] == 5_460
    assert stats["users"]["all"] == 25_156 and stats["items"]["all"] == 6_361
    assert stats["unjoined"] == {"users": {"rows": 0, "ids": 0}, "items": {"rows": 0, "ids": 0}}
    assert stats["rows_outside_splits"] == 0
    # label rates of the README, after de-duplication: click ~0.44, like ~0.017, long view ~0.31
    rates = stats["label_rate"]["train"]
    assert (
        0.43 < rates["is_click"] < 0.46
        and 0.015 < rates["is_like"] < 0.02
        and 0.30 < rates["long_view"] < 0.33
    )


def test_features(prepared):
    data_dir, out, _ = prepared
    schema = Schema.load(out / layout.SCHEMA)
    users = pl.read_csv(data_dir / kuairand_files.USER_FILE, n_rows=1).columns
    stat = pl.read_csv(
        data_dir / "video_features_statistic_pure.reconstructed.csv", n_rows=1
    ).columns[1:]
    by_group = {
        g: [f.name for f in schema.fields if f.group == g] for g in ("item", "user", "context")
    }
    assert by_group["user"] == users  # every column of user_features_pure.csv
    assert by_group["item"] == [
        "video_id", "author_id", "tag", "music_type", "video_type", "upload_type", "video_duration",
        *(f"stat_{c}" for c in stat),
    ]  # fmt: skip
    assert by_group["context"] == ["tab", "hour", "weekday"]
    assert schema.field("hour").vocab_size == 2 + 24 and schema.field("weekday").vocab_size == 2 + 7
    assert schema.field("follow_user_num").boundaries and schema.field("stat_show_cnt").boundaries
    assert schema.sequences.behaviours == ["click", "like", "long_view"]
    assert (
        schema.sequences.side_fields == ["video_id", "author_id", "tag"]
        and schema.sequences.max_len == 50
    )
    tags = pl.read_parquet(out / layout.VOCAB_DIR / "tag.parquet")["value"].to_list()
    assert all("," not in t for t in tags)  # the first tag of each list
    # -124 ("missing") is a category of is_live_streamer
    assert (
        "-124"
        in pl.read_parquet(out / layout.VOCAB_DIR / "is_live_streamer.parquet")["value"].to_list()
    )


def test_warm_start_histories(prepared):
    data_dir, out, stats = prepared
    h = pl.read_parquet(data_dir / kuairand_files.HISTORY_FILE)
    for b, col in kuairand_files.WARM_START_LISTS.items():
        n = h[col].list.len().sum()
        assert stats["source"]["warm_start"][b] == n == stats["sequences"][b]["warm_start_events"]
    log_start = pl.read_parquet(out / "train" / "part-*.parquet")[layout.TIME].min()
    ev = pl.read_parquet(out / layout.SEQ_DIR / "click.parquet")
    assert (ev[layout.TIME] < log_start).sum() == stats["source"]["warm_start"]["click"]


def test_point_in_time_on_sampled_rows(prepared):
    """Every sequence position of sampled rows is an earlier event of the same user; the
    pointers match a brute-force recount, and the log events match the raw log."""
    data_dir, out, _ = prepared
    log = pl.read_csv(data_dir / kuairand_files.SUBSET_LOG).unique()
    log_start = log["time_ms"].min()
    rng = np.random.default_rng(0)
    events = {b: pl.read_parquet(out / layout.SEQ_DIR / f"{b}.parquet") for b in BEHAVIOUR_COLUMN}
    for split in layout.SPLITS:
        df = pl.read_parquet(out / split / "part-*.parquet")
        rows = df[np.sort(rng.choice(len(df), 150, replace=False))]
        for b, col in BEHAVIOUR_COLUMN.items():
            ev_user, ev_time = events[b][layout.USER].to_numpy(), events[b][layout.TIME].to_numpy()
            raw = log.filter(pl.col(col) == 1)
            raw_user, raw_time = raw["user_id"].to_numpy(), raw["time_ms"].to_numpy()
            for u, t, s, e in rows.select(
                layout.USER, layout.TIME, layout.seq_start_col(b), layout.seq_end_col(b)
            ).iter_rows():
                assert (ev_user[s:e] == u).all() and (ev_time[s:e] < t).all()
                mine = np.flatnonzero(ev_user == u)
                assert s == (mine[0] if len(mine) else np.searchsorted(ev_user, u))
                assert e - s == (ev_time[mine] < t).sum()
                from_log = (ev_time[s:e] >= log_start).sum()
                assert from_log == ((raw_user == u) & (raw_time < t)).sum()


def test_loader_on_real_data(prepared):
    _, out, _ = prepared
    ds = PreparedDataset(out)
    b = ds.batch_at("test", np.arange(256))
    assert b.categorical.shape == (256, 92) and b.seq_ids.shape == (256, 3, 50, 3)
    assert (b.categorical >= 1).all()  # no PAD among the fields
    assert (b.seq_ids[b.seq_mask] >= 1).all() and (b.seq_ids[~b.seq_mask] == 0).all()
    assert b.label_mask.all()


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(kuairand.command)
    return app


def test_command_on_official_file_names(tmp_path):
    """The complete release's standard logs (their first rows) by glob, 70/15/15 by time."""
    data_dir = kuairand_dir()
    result = CliRunner().invoke(
        _cli(),
        [
            "--data-dir", str(data_dir), "--out", str(tmp_path / "kr"), "--logs", "smoke/log_standard_*.csv",
            "--tasks", "is_click,play_time", "--behaviours", "click", "--max-len", "5",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # rich wraps lines at the runner's width
    assert "rows" in output and "play_time mean" in output
    assert "warm start: off: the logs start before 20220425" in output
    ds = PreparedDataset(tmp_path / "kr")
    assert (
        sum(ds.num_rows(s) for s in layout.SPLITS)
        == 2000 - ds.stats["source"]["duplicates_removed"]
    )
    assert (
        ds.schema.task_names == ["is_click", "play_time"]
        and ds.schema.tasks[1].transform == "log1p"
    )
    assert ds.stats["source"]["logs"] == [
        "log_standard_4_08_to_4_21_pure.first1000.csv",
        "log_standard_4_22_to_5_08_pure.first1000.csv",
    ]


def test_command_errors(tmp_path):
    data_dir = kuairand_dir()
    out = ["--data-dir", str(data_dir), "--out", str(tmp_path / "kr"), "--logs", "smoke/*4_22*.csv"]
    result = CliRunner().invoke(
        _cli(),
        [*out, "--split", "2022-04-22:2022-04-30,2022-05-01:2022-05-04,2023-01-01:2023-01-02"],
    )
    output = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "split 'test'" in output and "date 2022042" in output
    assert not (tmp_path / "kr").exists()
    result = CliRunner().invoke(_cli(), [*out, "--tasks", "is_click,is_happy"])
    assert result.exit_code == 2 and "unknown task or behaviour 'is_happy'" in " ".join(
        result.output.split()
    )
    with pytest.raises(PrepareError, match="--split '2022-04-25': expected three"):
        kuairand.parse_split("2022-04-25")
