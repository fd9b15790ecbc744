"""The declarative YAML source: a dataset built from scratch, every bad-input message, the
condition parser, time conversion, the split modes, and training on the result."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from typer.testing import CliRunner

from infnet.config import ConfigError
from infnet.data import layout
from infnet.data.schema import OOV, Schema
from infnet.data.sources.condition import parse_condition
from infnet.data.sources.table import build_raw, prepare_table
from infnet.data.sources.table_config import TableConfig, load_config, read_inputs
from infnet.data.sources.table_values import time_ms

from .fixtures import SHOP_YAML, write_shop


def split_frame(out: Path, split: str) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(p) for p in sorted((out / split).glob("part-*.parquet"))])


def check_histories(out: Path, behaviour: str, expected_count) -> int:
    """Every row's history holds only its user's events strictly before its time, and as
    many as `expected_count(user, time)` says; returns the number of rows checked."""
    events = pl.read_parquet(out / layout.SEQ_DIR / f"{behaviour}.parquet")
    ev_user, ev_time = events[layout.USER].to_numpy(), events[layout.TIME].to_numpy()
    checked = 0
    for split in layout.SPLITS:
        f = split_frame(out, split)
        for u, t, a, b in zip(
            f[layout.USER],
            f[layout.TIME],
            f[layout.seq_start_col(behaviour)],
            f[layout.seq_end_col(behaviour)],
            strict=True,
        ):
            assert (ev_user[a:b] == u).all() and (ev_time[a:b] < t).all()
            assert b - a == expected_count(u, t), (u, t)
            checked += 1
    return checked


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    d = tmp_path_factory.mktemp("shop")
    frame = write_shop(d)
    (d / "shop.yaml").write_text(SHOP_YAML)
    out = d / "prepared"
    from infnet.cli import app

    args = [
        "prepare",
        "table",
        "--config",
        str(d / "shop.yaml"),
        "--out",
        str(out),
        "--no-progress",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    ms = frame["ts"].str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="ms").dt.epoch("ms")
    return d, out, frame.with_columns(ms.alias("ms"))


def test_yaml_dataset_from_scratch(shop):
    d, out, frame = shop
    schema = Schema.load(out / layout.SCHEMA)
    stats = json.loads((out / layout.STATS).read_text())
    valid_ms, test_ms = 1711065600000, 1711411200000  # 2024-03-22, 2024-03-26 UTC
    parts = {
        "train": frame.filter(pl.col("ms") < valid_ms),
        "valid": frame.filter((pl.col("ms") >= valid_ms) & (pl.col("ms") < test_ms)),
        "test": frame.filter(pl.col("ms") >= test_ms),
    }
    assert stats["rows"] == {s: len(p) for s, p in parts.items()}
    assert all(n > 0 for n in stats["rows"].values())
    train = parts["train"]
    vocab = {f.name: f.vocab_size for f in schema.fields}
    assert vocab["sku"] == train["sku"].n_unique() + 2
    assert vocab["page"] == 3 + 2
    assert vocab["segment"] == 4 + 2  # from the users table, through the `user` key
    assert (
        vocab["brand"]
        == train.select((pl.col("sku").str.slice(3).cast(int) % 6).n_unique()).item() + 2
    )
    # items hold the tags [x], [x, y] or [x, y, z]: the first two values are the slots of
    # one pooled bag, one vocabulary over both slots (x on every train row, y on 2/3)
    tag_vocab = pl.read_parquet(out / layout.VOCAB_DIR / "tag_1.parquet")
    assert tag_vocab.equals(pl.read_parquet(out / layout.VOCAB_DIR / "tag_2.parquet"))
    sku = train["sku"].str.slice(3).cast(int)
    assert tag_vocab.rows() == [("x", 2, len(train)), ("y", 3, int((sku % 3 > 0).sum()))]
    assert vocab["tag_1"] == vocab["tag_2"] == 4
    assert [f.bag for f in schema.fields if f.name.startswith("tag")] == ["tag", "tag"]
    assert schema.token_names.count("tag") == 1 and schema.num_categorical_tokens == 8
    tags = split_frame(out, "train").select("tag_1", "tag_2")
    assert set(tags.rows()) == {(2, 0), (2, 3)}  # [x] has a PAD second slot
    assert [f.name for f in schema.fields] == [
        "sku",
        "brand",
        "tag_1",
        "tag_2",
        "price",
        "uid",
        "segment",
        "page",
        "dwell",
    ]
    assert {f.name: f.group for f in schema.fields}["segment"] == "user"
    assert {f.name: f.group for f in schema.fields}["page"] == "context"
    assert [(t.name, t.kind, t.weight, t.transform) for t in schema.tasks] == [
        ("click", "binary", 1.0, "none"),
        ("buy", "binary", 2.0, "none"),
        ("spend", "regression", 1.0, "log1p"),
    ]
    assert stats["label_rate"]["train"]["click"] == pytest.approx(train["clicked"].mean(), rel=1e-6)
    assert stats["label_rate"]["test"]["buy"] == pytest.approx(
        parts["test"]["bought"].mean(), rel=1e-6
    )
    spend = np.log1p(train["amount"].cast(float).to_numpy()).mean()
    assert stats["label_mean"]["train"]["spend"] == pytest.approx(spend, rel=1e-5)
    # The "n/a" dwell value is counted and mapped to OOV.
    assert stats["source"]["unparseable"] == {"dwell": 1}
    row7 = split_frame(out, "train").filter(pl.col(layout.TIME) == frame["ms"][7])
    assert (row7["dwell"] == 1).any()
    assert schema.sequences.side_fields == ["sku", "brand"] and schema.sequences.max_len == 10

    bought = frame.filter((pl.col("bought") == 1) & (pl.col("amount").cast(float) > 0))
    times = {u: g["ms"].to_numpy() for (u,), g in bought.group_by("uid")}
    n = check_histories(out, "bought", lambda u, t: int((times.get(u, np.empty(0)) < t).sum()))
    assert n == len(frame)

    # The pre-built column: each row's own block, its last 5 ids, encoded like the candidate.
    clicks = frame.filter(pl.col("clicked") == 1)
    clicked = {u: g["ms"].to_numpy() for (u,), g in clicks.group_by("uid")}

    def last5(u: int, t: int) -> int:
        return min(5, int((clicked.get(u, np.empty(0)) < t).sum()))

    assert check_histories(out, "recent", last5) == len(frame)
    events = pl.read_parquet(out / layout.SEQ_DIR / "recent.parquet")
    vocab_sku = pl.read_parquet(out / layout.VOCAB_DIR / "sku.parquet")
    code = dict(vocab_sku.select("value", "index").rows())
    recent = {(u, t): h or "" for u, t, h in frame.select("uid", "ms", "recent").rows()}
    test = split_frame(out, "test")
    cols = [layout.USER, layout.TIME, layout.seq_start_col("recent"), layout.seq_end_col("recent")]
    for u, t, a, b in test.select(cols).rows():
        ids = [i for i in recent[u, t].split("|") if i][-5:]
        assert events["sku"][a:b].to_list() == [code.get(i, OOV) for i in ids]
    assert (events["sku"] == OOV).any()  # skus first seen after train
    assert stats["sequences"]["recent"]["truncated_rows"] > 0
    assert 0 < stats["sequences"]["recent"]["empty"]["train"] < 1


def test_drop_policy_split_column_and_row_order(tmp_path):
    write_shop(tmp_path)
    cfg = yaml.safe_load(SHOP_YAML)
    cfg["on_unparseable"] = "drop"
    cfg["split"] = {
        "column": "page",
        "values": {"train": "home", "valid": "search", "test": "cart"},
    }
    cfg["time"] = {"row_order": True}
    raw = build_raw(
        TableConfig.model_validate(cfg), read_inputs(TableConfig.model_validate(cfg), tmp_path)
    )
    assert raw.stats["rows_dropped_unparseable"] == 1 and len(raw.log) == 499
    assert raw.log[raw.time_column].to_list() == [
        i for i in range(500) if i != 7
    ]  # the file's row numbers
    stats = prepare_table_from(cfg, tmp_path)
    pages = pl.read_csv(tmp_path / "log_part1.csv")["page"].to_list()
    del pages[7]
    assert stats["rows"] == {
        s: pages.count(v) for s, v in (("train", "home"), ("valid", "search"), ("test", "cart"))
    }


def prepare_table_from(cfg: dict, d: Path, name: str = "c.yaml") -> dict:
    (d / name).write_text(yaml.safe_dump(cfg))
    return prepare_table(d / name, d / "out", overwrite=True, progress=False)


def test_ratios_split_cuts_time_ordered_rows(tmp_path):
    frame = write_shop(tmp_path)
    cfg = yaml.safe_load(SHOP_YAML)
    cfg["split"] = {"ratios": [0.6, 0.2, 0.2]}
    stats = prepare_table_from(cfg, tmp_path)
    ts = np.sort(frame["ts"].to_numpy())  # "YYYY-mm-dd HH:MM:SS" sorts as time
    cut = ts[int(500 * 0.6)], ts[int(500 * 0.8)]
    assert stats["rows"] == {
        "train": int((ts < cut[0]).sum()),
        "valid": int(((ts >= cut[0]) & (ts < cut[1])).sum()),
        "test": int((ts >= cut[1]).sum()),
    }


@pytest.mark.parametrize(
    ("values", "unit", "expected"),
    [
        (["978300760", "978300761"], "auto", [978300760000, 978300761000]),
        ([978300760123, 978300761000], "auto", [978300760123, 978300761000]),
        (["5", "6"], "ms", [5, 6]),
        (["2001-01-01 00:00:01", "2001-01-01 00:00:02"], "auto", [978307201000, 978307202000]),
        (
            ["2001-01-01T00:00:01+01:00", "2001-01-01T00:00:02+01:00"],
            "datetime",
            [978303601000, 978303602000],
        ),
    ],
)
def test_time_conversion(values, unit, expected):
    from infnet.data.sources.table_config import Time

    got = time_ms(pl.DataFrame({"t": values}), Time(column="t", unit=unit))
    assert got.dtype == pl.Int64 and got.to_list() == expected


def test_conditions():
    df = pl.DataFrame(
        {
            "rating": ["1", "4", "5", None],
            "click": [1, 0, 1, 1],
            "w": [3.0, 20, 30, 12],
            "s": ["a", "b", "c", "a"],
        }
    )

    def rows(text: str) -> list[bool]:
        return (
            df.select(parse_condition(text, "k", df.columns, numeric={"rating"}))
            .to_series()
            .to_list()
        )

    assert rows("rating >= 4") == [False, True, True, False]  # a missing value is no event
    assert rows("click == 1 and w > 10") == [False, False, True, True]
    assert rows("not click == 1 or s == 'b'") == [False, True, False, False]
    assert rows("s in ['a', 'c'] and 1 < w <= 20") == [True, False, False, True]
    assert rows("s not in ('a',) and w != -1") == [False, True, True, False]
    for text, reason in [
        ("rating >=", "does not parse"),
        ("__import__('os').system('x')", "is not allowed"),
        ("rating + 1 > 2", "not a column or a constant"),
        ("w > 1 if click else 0", "is not allowed"),
    ]:
        with pytest.raises(ConfigError, match=rf"^seq.liked.condition: condition .* {reason}"):
            parse_condition(text, "seq.liked.condition", df.columns)
    with pytest.raises(ConfigError, match=r"names column\(s\) \['x'\]"):
        parse_condition("x > 1", "k", df.columns)


def _bad(tmp_path: Path, edit) -> str:
    """The one error message of preparing the shop YAML after `edit(config)`."""
    write_shop(tmp_path)
    cfg = yaml.safe_load(SHOP_YAML)
    edit(cfg)
    with pytest.raises((ConfigError, FileNotFoundError)) as err:
        prepare_table_from(cfg, tmp_path)
    return str(err.value)


def _set(path: str, value):
    def edit(cfg: dict) -> None:
        node = cfg
        *head, last = path.split(".")
        for p in head:
            node = node[p]
        node[last] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("tasks.click.treshold", 1), r"unknown key 'tasks\.click\.binary\.treshold'"),
        (
            _set("inputs.log.seperator", ","),
            r"unknown key 'inputs\.log\.seperator'; did you mean 'separator'",
        ),
        (_set("colums", {}), r"unknown key 'colums'; did you mean 'columns'"),
        (
            _set("columns.page.type", "category"),
            r"columns\.page: Input tag 'category' .* does not match",
        ),
        (
            _set("tasks.click.kind", "ranking"),
            r"tasks\.click: Input tag 'ranking' .* does not match",
        ),
        (_set("columns.page.column", "pagee"), r"columns\.page: column 'pagee' not found"),
        (_set("tasks.buy.column", "purchase"), r"tasks\.buy\.column: column 'purchase' not found"),
        (
            _set("sequences.behaviours.clicked.condition", "clicked = 1"),
            r"sequences\.behaviours\.clicked\.condition: condition 'clicked = 1' does not parse",
        ),
        (
            _set("sequences.behaviours.clicked.condition", "clickd == 1"),
            r"sequences\.behaviours\.clicked\.condition: .* names column\(s\) \['clickd'\]",
        ),
        (
            _set("time.column", "page"),
            r"time\.column: column 'page' holds 'home', neither a number nor a datetime",
        ),
        (
            _set("time", {"column": "ts", "unit": "s"}),
            r"time\.column: column 'ts' holds '2024-03-01 .*', not a number of s",
        ),
        (
            _set("split", {"valid_start": "2024-03-10", "test_start": "2024-03-10"}),
            r"split: Value error, test_start must be after valid_start",
        ),
        (
            _set("split", {"valid_start": "2024-04-10", "test_start": "2024-04-20"}),
            r"split 'valid' .* is empty",
        ),
        (
            _set("sequences.side_fields", ["sku", "page"]),
            r"sequences\.side_fields: 'page' is not an item column",
        ),
        (
            _set("inputs.log.path", "nothing-*.csv"),
            r"inputs\.log: no file matches .*nothing-\*\.csv",
        ),
        (
            _set("tasks.click.column", "page"),
            r"tasks\.click\.column: column 'page' holds no numbers \(e\.g\. '(home|search|cart)'\)",
        ),
    ],
)
def test_bad_input_names_the_key(tmp_path, edit, message):
    text = _bad(tmp_path, edit)
    assert len(text.splitlines()) == 1, text
    assert re.search(message, text), text


def test_bad_binary_column_names_the_task(tmp_path):
    text = _bad(tmp_path, _set("tasks.click.column", "dwell"))
    assert "task 'click'" in text and "must be 0/1" in text and "threshold" in text


def test_shipped_yamls_and_readme_example_validate():
    root = Path(__file__).resolve().parents[2]
    for path in sorted((root / "configs" / "datasets").glob("*.yaml")):
        assert load_config(path).tasks, path
    readme = (root / "README.md").read_text()
    example = re.search(
        r"```yaml\n(.*?)```", readme[readme.index("## Your own data") :], re.S
    ).group(1)
    assert list(TableConfig.model_validate(yaml.safe_load(example)).tasks) == [
        "click",
        "big",
        "spend",
    ]


def test_infnet_train_on_yaml_prepared_dataset(shop, tmp_path):
    from infnet.cli import app

    _, out, _ = shop
    args = [
        "train",
        "--data",
        str(out),
        "--model",
        "infnet",
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    for item in (
        "epochs=1",
        "batch_size=128",
        "eval_batch_size=512",
        "device=cpu",
        "embedding_dim=8",
        "num_blocks=1",
    ):
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    test = json.loads((tmp_path / "run" / "test_metrics.json").read_text())["test"]
    rows = json.loads((out / layout.STATS).read_text())["rows"]["test"]
    for task in ("click", "buy"):
        assert test[task]["n"] == rows and 0.0 <= test[task]["auc"] <= 1.0
    assert test["spend"]["n"] == rows and np.isfinite(test["spend"]["rmse"])


PREBUILT_YAML = """
name: prebuilt
inputs: {log: {path: log.csv}, items: {path: items.csv}}
user_key: uid
item_key: item
time: {column: ts, unit: s}
columns:
  item: {type: categorical}
  author: {type: categorical}
  uid: {type: categorical}
sequences:
  side_fields: [item, author]
  max_len: 4
  behaviours:
    clicked: {condition: "click == 1"}
    recent: {column: hist, max_len: 3}
tasks: {click: {kind: binary, column: click}}
split: {ratios: [0.6, 0.2, 0.2]}
"""
# uid, item, ts, click, hist (most recent last): "" and a missing cell are empty histories,
# spaces and empty entries are skipped, "x7" is not an id (ids are integers), 14 is never a
# candidate in train (item OOV, its author known), 99 is not in the items table.
PREBUILT_LOG = """uid,item,ts,click,hist
1,10,1,1,""
1,11,2,0,10
2,12,3,1,
2,10,4,1,12 | 14
1,12,5,1,10|11||x7
3,11,6,0,99|10
1,10,7,1,10|11|12|10|11
2,11,8,1,12|14|10
3,12,9,0,11
1,11,10,1,12|10|11|10
"""
# train rows 0-5: items 10, 11, 12 twice each -> 2, 3, 4; authors a1 (items 10, 11) 4 rows,
# a2 (item 12) 2 rows -> 2, 3; OOV = 1
PREBUILT_BLOCKS = [
    [],
    [(2, 2)],
    [],
    [(4, 3), (1, 3)],
    [(2, 2), (3, 2), (1, 1)],
    [(1, 1), (2, 2)],
    [(4, 3), (2, 2), (3, 2)],
    [(4, 3), (1, 3), (2, 2)],
    [(3, 2)],
    [(2, 2), (3, 2), (2, 2)],
]


def write_prebuilt(d: Path) -> dict:
    (d / "log.csv").write_text(PREBUILT_LOG)
    (d / "items.csv").write_text("item,author\n10,a1\n11,a1\n12,a2\n14,a2\n")
    return yaml.safe_load(PREBUILT_YAML)


def test_prebuilt_history_column(tmp_path):
    from infnet.data.loader import PreparedDataset

    stats = prepare_table_from(write_prebuilt(tmp_path), tmp_path)
    out = tmp_path / "out"
    assert Schema.load(out / layout.SCHEMA).sequences.prebuilt == ["recent"]
    assert stats["source"]["unparseable"] == {"hist": 1}
    assert stats["sequences"]["recent"]["truncated_rows"] == 2
    assert stats["sequences"]["recent"]["events"] == sum(map(len, PREBUILT_BLOCKS))
    events = pl.read_parquet(out / layout.SEQ_DIR / "recent.parquet")
    side = list(zip(events["item"], events["author"], strict=True))
    rows = pl.concat([split_frame(out, s) for s in layout.SPLITS]).sort(layout.TIME)
    start, end = rows[layout.seq_start_col("recent")], rows[layout.seq_end_col("recent")]
    assert [side[a:b] for a, b in zip(start, end, strict=True)] == PREBUILT_BLOCKS
    # each block is its row's user's, stamped just before the row: sorted by (user, time)
    for u, t, a, b in zip(rows[layout.USER], rows[layout.TIME], start, end, strict=True):
        assert (events[layout.USER][a:b] == u).all() and (events[layout.TIME][a:b] == t - 1).all()
    assert events.sort([layout.USER, layout.TIME], maintain_order=True).equals(events)
    # the in-log behaviour of the same YAML is unchanged: user 1's clicks before row 4
    assert split_frame(out, "train")[layout.seq_end_col("clicked")].to_list()[4] > 0
    # the loader serves the blocks left-padded, most recent last (row 4: 10, 11, x7)
    batch = PreparedDataset(out).batch_at("train", [4, 0])
    recent = batch.seq_ids[:, 1]  # [B, n=4, K]
    assert recent[0].tolist() == [[0, 0], [2, 2], [3, 2], [1, 1]]
    assert batch.seq_mask[:, 1].tolist() == [[False, True, True, True], [False] * 4]
    assert recent[1].eq(0).all()


def test_prebuilt_list_column_newest_first_and_drop(tmp_path):
    cfg = write_prebuilt(tmp_path)
    log = pl.read_csv(tmp_path / "log.csv", schema_overrides={"hist": pl.String})
    ids = (
        log["hist"].str.split("|").list.eval(pl.element().str.strip_chars().cast(int, strict=False))
    )
    log.with_columns(ids.list.reverse().list.drop_nulls()).write_parquet(tmp_path / "log.parquet")
    cfg["inputs"]["log"] = {"path": "log.parquet"}
    cfg["sequences"]["behaviours"]["recent"]["most_recent"] = "first"
    stats = prepare_table_from(cfg, tmp_path)
    assert stats["source"]["unparseable"] == {}
    events = pl.read_parquet(tmp_path / "out" / layout.SEQ_DIR / "recent.parquet")
    train = split_frame(tmp_path / "out", "train")
    a, b = train[layout.seq_start_col("recent")][4], train[layout.seq_end_col("recent")][4]
    assert events["item"][a:b].to_list() == [2, 3]  # [11, 10] newest first; no x7 in ints
    # on_unparseable: drop drops the row holding "x7"
    cfg = write_prebuilt(tmp_path)
    cfg["sequences"]["behaviours"]["recent"]["on_unparseable"] = "drop"
    raw = build_raw(
        TableConfig.model_validate(cfg), read_inputs(TableConfig.model_validate(cfg), tmp_path)
    )
    assert len(raw.log) == 9 and raw.stats["rows_dropped_unparseable"] == 1


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            _set("sequences.behaviours.recent.condition", "click == 1"),
            r"sequences\.behaviours\.recent: Value error, give either `condition`",
        ),
        (
            _set("sequences.behaviours.clicked.max_len", 3),
            r"sequences\.behaviours\.clicked: .*\['max_len'\] apply to a pre-built `column` only",
        ),
        (
            _set("sequences.behaviours.recent.column", "hits"),
            r"sequences\.behaviours\.recent\.column: column 'hits' not found",
        ),
        (
            _set("sequences.behaviours.recent.column", "author"),
            r"sequences\.behaviours\.recent\.column: column 'author' must be a log column",
        ),
        (
            lambda cfg: (
                _set("columns.seen", {"type": "categorical", "column": "click", "group": "item"})(
                    cfg
                ),
                _set("sequences.side_fields", ["item", "seen"])(cfg),
            ),
            r"side field 'seen' is read from log column 'click'; behaviour 'recent' .* can only",
        ),
    ],
)
def test_prebuilt_bad_input_names_the_key(tmp_path, edit, message):
    cfg = write_prebuilt(tmp_path)
    edit(cfg)
    with pytest.raises(ConfigError) as err:
        prepare_table_from(cfg, tmp_path)
    assert re.search(message, str(err.value)), str(err.value)


def _shop_with(tmp_path, column: str, row: int, value: str) -> Path:
    write_shop(tmp_path)
    (tmp_path / "shop.yaml").write_text(SHOP_YAML)
    path = tmp_path / "log_part1.csv"
    lines = path.read_text().split("\n")
    header = lines[0].split(",")
    cells = lines[row].split(",")
    cells[header.index(column)] = value
    lines[row] = ",".join(cells)
    path.write_text("\n".join(lines))
    return tmp_path / "shop.yaml"


def test_an_infinite_regression_label_is_refused_at_prepare(tmp_path):
    config = _shop_with(tmp_path, "amount", 3, "inf")
    with pytest.raises(ConfigError, match=r"task 'spend': 1 labels are infinite"):
        prepare_table(config, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_text_in_a_condition_column_is_one_message(tmp_path):
    config = _shop_with(tmp_path, "bought", 5, "yes")
    with pytest.raises(
        ConfigError, match=r"behaviours.bought.condition: .*holds text such as 'yes'"
    ):
        prepare_table(config, tmp_path / "out", progress=False)


def test_a_truncated_last_line_is_refused_naming_the_file(tmp_path):
    write_shop(tmp_path)
    (tmp_path / "shop.yaml").write_text(SHOP_YAML)
    path = tmp_path / "log_part1.csv"
    text = path.read_text().rstrip("\n")
    path.write_text(text[: text.rfind(",")])  # the copy stopped mid-line
    with pytest.raises(ValueError, match=r"log_part1.csv: line \d+, the last, holds .* truncated"):
        prepare_table(tmp_path / "shop.yaml", tmp_path / "out", progress=False)


def test_columns_with_colons_in_backticks_and_numbers_in_a_float_column():
    df = pl.DataFrame({"rating:float": [1.0, 4.0, 5.0, 3.5], "watch time": [1, 2, 3, 4]})

    def rows(text: str) -> list[bool]:
        return df.select(parse_condition(text, "k", df.columns)).to_series().to_list()

    assert rows("`rating:float` >= 4") == [False, True, True, False]
    assert rows("`rating:float` in [4, 5]") == [False, True, True, False]  # 4 is 4.0
    assert rows("`rating:float` not in [1] and `watch time` > 1") == [False, True, True, True]
    with pytest.raises(ConfigError, match=r"goes in backticks: `rating:float` >= 4"):
        parse_condition("rating:float >= 4", "k", df.columns)
    with pytest.raises(ConfigError, match="a backtick is not closed"):
        parse_condition("`rating:float >= 4", "k", df.columns)
    with pytest.raises(ConfigError, match=r"names column\(s\) \['rating'\]"):
        parse_condition("`rating` >= 4", "k", df.columns)


def test_a_misspelt_key_inside_a_column_spec_says_did_you_mean(tmp_path):
    text = _bad(tmp_path, _set("columns.brand", {"type": "categorical", "min_cout": 2}))
    assert "unknown key 'columns.brand.categorical.min_cout'; did you mean 'min_count'?" in text
    text = _bad(
        tmp_path,
        _set("tasks.spend", {"kind": "regression", "column": "amount", "transfrom": "log1p"}),
    )
    assert "did you mean 'transform'?" in text


def test_messages_name_the_yaml_columns_never_the_internal_ones(tmp_path):
    text = _bad(tmp_path, _set("tasks.click.column", "dwell"))  # 0..99, not 0/1
    assert "'dwell' (tasks.click.column) must be 0/1" in text
    assert "__" not in text
    text = _bad(tmp_path, _set("sequences.behaviours.clicked.condition", "page == 3"))
    assert "column 'page' holds text such as" in text and "quote the value" in text
    assert "__" not in text


def test_a_bag_is_a_side_field_with_all_its_values_pooled(tmp_path):
    from infnet.data.loader import PreparedDataset
    from infnet.models.embedding import FeatureEmbedding

    write_shop(tmp_path)
    cfg = yaml.safe_load(SHOP_YAML)
    cfg["sequences"]["side_fields"] = ["sku", "tag"]
    prepare_table_from(cfg, tmp_path)
    data = PreparedDataset(tmp_path / "out")
    schema = data.schema
    assert schema.sequences.side_fields == ["sku", "tag_1", "tag_2"]
    assert schema.side_tokens == [[0], [1, 2]] and schema.num_side_tokens == 2
    batch = next(data.batches("train", 500))
    two = (batch.seq_ids[..., 2] > 0) & batch.seq_mask  # positions with a second tag
    assert two.any()
    torch.manual_seed(0)
    embedding = FeatureEmbedding(schema, 4, std=0.01)
    e = embedding.sequence(batch)
    assert e.shape[-2] == 2  # [B, F, n, K_tok = 2, d]
    swapped = batch.seq_ids.clone()
    swapped[..., [1, 2]] = swapped[..., [2, 1]]
    torch.testing.assert_close(embedding.sequence(replace(batch, seq_ids=swapped)), e)
    other = batch.seq_ids.clone()
    other[..., 2] = torch.where(two, 1, other[..., 2])  # the second tag becomes OOV
    changed = embedding.sequence(replace(batch, seq_ids=other))
    assert not torch.allclose(changed[two][:, 1], e[two][:, 1])  # the second value counts
    torch.testing.assert_close(changed[two][:, 0], e[two][:, 0])  # the sku token is untouched
    # every model reads it
    from infnet.models import build_model

    for name in ("din", "infnet", "hstu", "mmoe"):
        y = build_model(name, schema, {"embedding_dim": 4}).eval()(batch).logits
        assert y.shape == (len(batch), 3) and torch.isfinite(y).all(), name
