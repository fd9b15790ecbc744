"""No command deletes its own inputs, and a killed writer's temporaries are cleaned up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.data.fixtures import SHOP_YAML, write_shop
from typer.testing import CliRunner

from infnet.cli import app
from infnet.fsutil import atomic_directory, refuse_overlap, remove_orphans


def _files(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()}


def test_refuse_overlap_names_the_input():
    here = Path(__file__).parent
    with pytest.raises(ValueError, match="--out .* is the input"):
        refuse_overlap(here, [here])
    with pytest.raises(ValueError, match="contains the input"):
        refuse_overlap(here.parent, [Path(__file__)])
    with pytest.raises(ValueError, match="lies inside the input"):
        refuse_overlap(here / "runs", [here])
    refuse_overlap(here.parent / "elsewhere", [Path(__file__)])  # apart: fine


def test_train_into_its_own_dataset_is_refused_and_deletes_nothing(small_prepared):
    before = _files(small_prepared)
    for out in (small_prepared, small_prepared / "train"):
        args = ["train", "--data", str(small_prepared), "--out", str(out), "--overwrite"]
        result = CliRunner().invoke(app, [*args, "--no-progress", "--set", "epochs=1"])
        # infnet.cli.main prints a ValueError as one line, no traceback
        assert isinstance(result.exception, ValueError), result.output
        assert "choose an output apart from the inputs" in str(result.exception)
    assert _files(small_prepared) == before


def test_prepare_table_into_the_folder_of_its_inputs_is_refused(tmp_path):
    write_shop(tmp_path)
    (tmp_path / "shop.yaml").write_text(SHOP_YAML)
    before = _files(tmp_path)
    args = ["prepare", "table", "--config", str(tmp_path / "shop.yaml"), "--out", str(tmp_path)]
    result = CliRunner().invoke(app, [*args, "--overwrite", "--no-progress"])
    assert isinstance(result.exception, ValueError), result.output
    assert "contains the input" in str(result.exception)
    assert _files(tmp_path) == before


def test_a_killed_writers_temporaries_are_removed_by_the_next_one(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)  # a process that has exited
    out = tmp_path / "prepared"
    orphan = tmp_path / f".prepared.{pid}-abc123.tmp"
    (orphan / "train").mkdir(parents=True)
    live = tmp_path / f".prepared.{os.getppid()}-def456.tmp"  # a writer still running
    live.mkdir()
    with atomic_directory(out) as tmp:
        (tmp / "x").write_text("1")
    assert not orphan.exists() and live.exists() and (out / "x").read_text() == "1"
    assert remove_orphans(out) == []
