"""User errors end in one line, `infnet: error: ...`, exit status 2, and no traceback."""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path

import pytest

from infnet.cli import main
from infnet.serving.ranking import Ranker
from infnet.serving.snapshot import snapshot_from_prepared
from infnet.serving.stores import SQLiteStore, StoreUnavailable

TABLE = """name: t
inputs: {log: {path: log.csv}}
user_key: u
item_key: i
time: {column: t}
columns: {i: {type: categorical}}
tasks: {c: {kind: binary, column: c}}
"""


def run(monkeypatch, capsys, *args: str) -> str:
    monkeypatch.setattr(sys, "argv", ["infnet", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("infnet: error: "), err
    return lines[0]


def table(tmp_path: Path, log: str, yaml: str = TABLE) -> str:
    (tmp_path / "log.csv").write_text(log)
    (tmp_path / "t.yaml").write_text(yaml)
    return str(tmp_path / "t.yaml")


def test_batch_size_zero(monkeypatch, capsys, small_prepared, tmp_path):
    line = run(monkeypatch, capsys, "train", "--data", str(small_prepared), "--out",
               str(tmp_path / "r"), "--set", "batch_size=0", "--no-progress")  # fmt: skip
    assert "train.batch_size" in line


@pytest.mark.parametrize(
    ("log", "want"), [("", "log.csv: the file is empty"), ("u,i,t,c\n", "hold no rows")]
)
def test_an_empty_or_header_only_file(monkeypatch, capsys, tmp_path, log, want):
    config = table(tmp_path, log)
    line = run(
        monkeypatch, capsys, "prepare", "table", "--config", config, "--out", str(tmp_path / "o")
    )
    assert want in line


def test_a_deeply_nested_condition(monkeypatch, capsys, tmp_path):
    deep = "not " * 5000 + "c"
    yaml = TABLE + f'sequences: {{side_fields: [i], behaviours: {{b: {{condition: "{deep}"}}}}}}\n'
    config = table(tmp_path, "u,i,t,c\n1,2,3,1\n", yaml)
    line = run(
        monkeypatch, capsys, "prepare", "table", "--config", config, "--out", str(tmp_path / "o")
    )
    assert "nested too deeply" in line and len(line) < 400


def test_a_broken_schema_names_its_file(monkeypatch, capsys, small_prepared, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_prepared, data)
    (data / "schema.json").write_text("{")
    line = run(monkeypatch, capsys, "train", "--data", str(data), "--out", str(tmp_path / "r"))
    assert f"{data / 'schema.json'}: not a readable schema file" in line


def test_a_locked_store_refuses_the_load_and_keeps_its_features(small_prepared, tmp_path):
    path = tmp_path / "f.sqlite"
    snapshot = snapshot_from_prepared(small_prepared)
    SQLiteStore(path).write(snapshot)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    with pytest.raises(StoreUnavailable, match="the load was not written"):
        SQLiteStore(path, timeout_s=0.1).write(snapshot)
    holder.execute("ROLLBACK")
    holder.close()
    assert SQLiteStore(path).meta().version == snapshot.meta.version


@pytest.mark.parametrize("formula", ["is_click / (is_click - is_click)", "10 ** (1000 * is_click)"])
def test_a_formula_without_finite_scores_is_refused_at_startup(formula):
    with pytest.raises(ValueError, match="non-finite scores"):
        Ranker(["is_click", "long_view"], formula)
    Ranker(["is_click", "long_view"], "is_click + 0.5 * long_view")  # an ordinary one loads


def test_a_misspelt_monitor_stops_before_training(monkeypatch, capsys, small_prepared, tmp_path):
    line = run(monkeypatch, capsys, "train", "--data", str(small_prepared), "--out",
               str(tmp_path / "r"), "--set", "monitor=is_clik.auc", "--no-progress")  # fmt: skip
    assert (
        "train.monitor='is_clik.auc' is not a validation metric; did you mean 'is_click.auc'?"
        in line
    )
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


def test_list_options_shows_every_set_key_with_its_default():
    from typer.testing import CliRunner

    from infnet.cli import app
    from infnet.models import model_class
    from infnet.training.config import TrainConfig

    result = CliRunner().invoke(
        app, ["train", "--list-options", "--model", "din"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    rows = {
        cells[0]: cells[1]
        for line in result.output.splitlines()
        if line.startswith("│")
        and len(cells := [c.strip() for c in line.strip("│").split("│")]) == 3
    }
    keys = set(TrainConfig.model_fields) | set(model_class("din").Config.model_fields)
    assert keys <= set(rows)
    assert rows["epochs"] == "20" and rows["batch_size"] == "4096" and rows["optimizer"] == '"adam"'


def test_models_shows_whole_descriptions():
    from typer.testing import CliRunner

    from infnet.cli import app

    result = CliRunner().invoke(app, ["models"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "│ hstu" in x)
    assert "adapted to pointwise multi-task ranking" in line  # the description's last line
