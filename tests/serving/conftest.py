"""Serving fixtures: a small time-aware INFNet v2 trained for one epoch, its export, a loaded feature
store, live servers on free 127.0.0.1 ports, and a Redis server of the tests' own."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from infnet.data.loader import PreparedDataset
from infnet.serving.export import export_run
from infnet.serving.snapshot import snapshot_from_prepared
from infnet.serving.stores import open_store

MODEL = "infnet"
# v2 and time-aware, so every serving test runs the event times -> gaps path offline and online
MODEL_OPTIONS = {"preset": "v2", "embedding_dim": 8, "num_blocks": 1, "time_aware": True}


@pytest.fixture(scope="session")
def served_run(small_prepared: Path, tmp_path_factory) -> Path:
    from infnet.training.config import RunConfig, TrainConfig
    from infnet.training.trainer import Trainer

    run_dir = tmp_path_factory.mktemp("serving") / "run"
    config = RunConfig(
        data=str(small_prepared),
        model=MODEL,
        model_options=MODEL_OPTIONS,
        train=TrainConfig(epochs=1, batch_size=1024, eval_batch_size=8192, device="cpu"),
    )
    Trainer.from_config(config, run_dir, progress=False).fit()
    return run_dir


@pytest.fixture(scope="session")
def model_dir(served_run: Path) -> Path:
    """The run exported through the CLI (ONNX, checked against eager at export)."""
    from typer.testing import CliRunner

    from infnet.cli import app

    out = served_run.parent / "model_a"
    result = CliRunner().invoke(app, ["export", "--run", str(served_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def model_b_dir(served_run: Path) -> Path:
    """A second model version: the same run with perturbed weights, exported without ONNX
    (so it is served eagerly, and scores differ from model A's)."""
    from infnet.models.checkpoint import load_checkpoint, save_checkpoint

    run_b = served_run.parent / "run_b"
    shutil.copytree(served_run, run_b)
    state = load_checkpoint(run_b / "best.pt")
    g = torch.Generator().manual_seed(7)
    weights = {
        k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
        for k, v in state["model"].items()
    }
    save_checkpoint(
        run_b / "best.pt", {"model": weights}, config=state["config"], schema=state["schema"]
    )
    out = served_run.parent / "model_b"
    export_run(run_b, out, onnx=False)
    return out


@pytest.fixture(scope="session")
def test_as_of(small_prepared: Path) -> int:
    """Features are loaded as of the start of the test split, so a user's first test row
    sees in the store exactly the history the offline batch holds."""
    return PreparedDataset(small_prepared).schema.split("test").time_min


@pytest.fixture(scope="session")
def feature_db(small_prepared: Path, test_as_of: int, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("store") / "features.sqlite"
    open_store(path).write(snapshot_from_prepared(small_prepared, as_of=test_as_of))
    return str(path)
