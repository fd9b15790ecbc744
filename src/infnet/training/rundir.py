"""A run directory, what the trainer writes and `load_run` reads back:

config.json         the resolved RunConfig
log.txt             what the run ignored, parameter count, timings
metrics.jsonl       one line per evaluation
best.pt  last.pt    best checkpoint, and the state to resume from
test_metrics.json   the best checkpoint on the test split
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from infnet.data.loader import PreparedDataset
from infnet.data.schema import Schema
from infnet.models.base import MultiTaskModel
from infnet.models.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from infnet.training.config import RunConfig

CONFIG, LOG, METRICS, BEST, LAST, TEST = (
    "config.json",
    "log.txt",
    "metrics.jsonl",
    "best.pt",
    "last.pt",
    "test_metrics.json",
)


class RunDir:
    """A run directory; with `writer=False` (every DDP rank but 0) it is only read."""

    def __init__(
        self, path: str | Path, config: RunConfig, schema: Schema, *, writer: bool = True
    ) -> None:
        self.path = Path(path)
        self.config = config
        self.schema = schema
        self.writer = writer

    def start(self) -> None:
        if not self.writer:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / CONFIG).write_text(self.config.model_dump_json(indent=2))

    def log(self, message: str) -> None:
        if not self.writer:
            return
        with open(self.path / LOG, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    def append_metrics(self, record: dict[str, Any]) -> None:
        if not self.writer:
            return
        with open(self.path / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")

    def save(self, name: str, state: dict[str, Any]) -> None:
        if not self.writer:
            return
        save_checkpoint(
            self.path / name, state, config=self.config.model_dump(mode="json"), schema=self.schema
        )

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    def load(self, name: str) -> dict[str, Any]:
        return load_checkpoint(self.path / name)

    def write_test(self, result: dict[str, Any]) -> None:
        if not self.writer:
            return
        (self.path / TEST).write_text(json.dumps(result, indent=2))


def load_run(
    run_dir: str | Path, data: PreparedDataset | None = None
) -> tuple[RunConfig, MultiTaskModel, PreparedDataset]:
    """The best model of a finished run, checked against its data. The checkpoint's own
    config builds the model; a config.json that names another model or options is refused."""
    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{run_dir}: not a run directory (no config.json); make one with `infnet train`"
        )
    config = RunConfig.model_validate_json(config_path.read_text())
    data = data or PreparedDataset(config.data)
    model, saved = load_model(run_dir / BEST, data.schema)
    written = config.model_dump(mode="json")
    differ = [
        f"{key}: {saved.get(key)} in checkpoint, {written[key]} in {CONFIG}"
        for key in ("model", "model_options")
        if saved.get(key) != written[key]
    ]
    if differ:  # an edited or mixed-up run directory: the checkpoint is what was trained
        raise CheckpointError(
            f"{run_dir / BEST}: does not match the run's {CONFIG}:\n  " + "\n  ".join(differ)
        )
    return config, model, data
