"""Run many training runs once: cached by a hash of their config, resumable, failure-tolerant.

A run is identified by the hash of (data path, data fingerprint, model, resolved model
options, resolved train config including the seed). Its directory `CACHE/<model>-<hash>/`
holds what the trainer writes (config.json, metrics.jsonl, checkpoints, test_metrics.json)
plus
    test_predictions.npz   outputs, labels, label_mask, users of the best model on test
    result.json            the record below, written last: its presence means "done"
An interrupted run (no result.json, a last.pt) is resumed from its last checkpoint; a
failed run is recorded with its error and retried on the next call.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from infnet.data.loader import PreparedDataset
from infnet.training import trainer as training

RESULT = "result.json"
PREDICTIONS = "test_predictions.npz"


@dataclass(frozen=True)
class RunSpec:
    """One training run of a suite. `label` names it in tables (e.g. "-task tokens")."""

    label: str
    model: str
    options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields (seed excluded)
    seed: int = 0


class RowLimit(PreparedDataset):
    """A prepared dataset whose splits are cut to their last `rows[split]` rows (the most
    recent: splits are in time order). `--quick` runs on such a slice so that a suite of
    many runs takes minutes."""

    def __init__(self, path: str | Path, rows: dict[str, int]) -> None:
        super().__init__(path)
        unknown = set(rows) - {"train", "valid", "test"}
        if unknown:
            raise ValueError(
                f"RowLimit: unknown splits {sorted(unknown)}; splits: train, valid, test"
            )
        self.limits = rows

    def num_rows(self, split: str) -> int:
        return min(super().num_rows(split), self.limits.get(split, 1 << 62))

    def rows(self, split: str) -> np.ndarray:
        """The most recent `num_rows(split)` rows (splits are stored in time order)."""
        total = super().num_rows(split)
        return np.arange(total - self.num_rows(split), total)


def data_fingerprint(data: PreparedDataset) -> str:
    """Hash of the prepared directory's schema.json and stats.json (content, not mtime),
    and of the row limits of a RowLimit."""
    h = hashlib.sha256()
    for name in ("schema.json", "stats.json"):
        path = data.path / name
        h.update(path.read_bytes() if path.is_file() else b"")
    if isinstance(data, RowLimit):
        h.update(json.dumps(data.limits, sort_keys=True).encode())
    return h.hexdigest()[:16]


def resolve(spec: RunSpec, data: PreparedDataset) -> training.RunConfig:
    """The full RunConfig of a spec: model options and train config with their defaults
    filled in, so equal configs written differently share one cache entry."""
    from infnet.config import validate
    from infnet.models.base import model_class

    options = validate(
        model_class(spec.model).Config, spec.options, where=f"{spec.label}: model_options"
    )
    train = validate(
        training.TrainConfig, {**spec.train, "seed": spec.seed}, where=f"{spec.label}: train"
    )
    return training.RunConfig(
        data=str(data.path.resolve()),
        model=spec.model,
        model_options=options.model_dump(mode="json"),
        train=train,
    )


def run_key(config: training.RunConfig, fingerprint: str) -> str:
    payload = {"fingerprint": fingerprint, **config.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


class Runner:
    """Executes RunSpecs one after another into `cache_dir`, with a progress bar."""

    def __init__(
        self,
        data: PreparedDataset,
        cache_dir: str | Path,
        *,
        progress: bool = True,
        console: Console | None = None,
    ) -> None:
        self.data = data
        self.cache_dir = Path(cache_dir)
        self.fingerprint = data_fingerprint(data)
        self.progress = progress
        self.console = console or Console(stderr=True)
        self.trained = 0  # runs trained (not found in the cache) by this runner

    def run_dir(self, spec: RunSpec) -> Path:
        return (
            self.cache_dir / f"{spec.model}-{run_key(resolve(spec, self.data), self.fingerprint)}"
        )

    def run_all(self, specs: list[RunSpec], title: str = "runs") -> list[dict[str, Any]]:
        """Records (see `_record`) in the order of `specs`; identical specs run once."""
        records: dict[int, dict[str, Any]] = {}
        durations: list[float] = []
        bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"),
            TextColumn("{task.fields[now]}"),
            console=self.console,
            disable=not self.progress,
        )
        failed = 0
        with bar:
            task = bar.add_task(title, total=len(specs), counts="", eta="", now="")
            for i, spec in enumerate(specs):
                left = len(specs) - i - 1
                mean = float(np.mean(durations)) if durations else None
                eta = f"ETA {(left + 1) * mean:,.0f}s" if mean is not None else "ETA ?"
                bar.update(
                    task,
                    counts=f"done {i} | running 1 | left {left} | failed {failed}",
                    eta=eta,
                    now=f"{spec.model} {spec.label} seed {spec.seed}",
                )
                started = time.time()
                record = self.run(spec)
                if record["status"] == "trained":
                    durations.append(time.time() - started)
                failed += record["status"] == "failed"
                records[i] = record
                bar.update(task, advance=1)
            bar.update(task, counts=f"done {len(specs)} | failed {failed}", eta="", now="")
        return [records[i] for i in range(len(specs))]

    def run(self, spec: RunSpec) -> dict[str, Any]:
        """Train (or load from the cache) one run; never raises for a failing run."""
        base = {
            "label": spec.label,
            "model": spec.model,
            "options": spec.options,
            "seed": spec.seed,
        }
        try:
            config = resolve(spec, self.data)
            run_dir = self.cache_dir / f"{spec.model}-{run_key(config, self.fingerprint)}"
        except Exception as err:  # a bad option: recorded, the suite goes on
            return {
                **base,
                "status": "failed",
                "error": f"{type(err).__name__}: {err}",
                "run_dir": None,
            }
        done = run_dir / RESULT
        if done.is_file():
            return {**json.loads(done.read_text()), **base, "status": "cached"}
        started = time.time()
        try:
            result = self._train(config, run_dir)
        except Exception as err:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "error.txt").write_text(traceback.format_exc())
            return {
                **base,
                "status": "failed",
                "error": f"{type(err).__name__}: {err}",
                "run_dir": str(run_dir),
            }
        self.trained += 1
        record = {
            **base,
            "config": config.model_dump(mode="json"),
            "run_dir": str(run_dir),
            "test": result["test"],
            "best": result["best"],
            "parameters": result["parameters"],
            "seconds": time.time() - started,
            "predictions": str(run_dir / PREDICTIONS),
        }
        done.write_text(json.dumps(record, indent=2, allow_nan=True))
        return {**record, "status": "trained"}

    def _train(self, config: training.RunConfig, run_dir: Path) -> dict[str, Any]:
        trainer = training.Trainer(config, run_dir, data=self.data, progress=False)
        if (run_dir / "last.pt").is_file():
            try:
                trainer.resume()
            except Exception:  # a checkpoint cut short by the interruption: start over
                shutil.rmtree(run_dir)
                trainer = training.Trainer(config, run_dir, data=self.data, progress=False)
        result = trainer.fit()
        p = trainer.test_predictions
        np.savez_compressed(
            run_dir / PREDICTIONS,
            outputs=p.outputs,
            labels=p.labels,
            label_mask=p.label_mask,
            users=p.users,
        )
        return result


def load_predictions(record: dict[str, Any]) -> training.Predictions:
    """The test predictions a successful run saved."""
    path = Path(record["predictions"])
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: test predictions of run {record['label']} are missing; delete its run directory to rerun it"
        )
    with np.load(path) as z:
        return training.Predictions(z["outputs"], z["labels"], z["label_mask"], z["users"])


def ok(record: dict[str, Any]) -> bool:
    return record["status"] in ("trained", "cached")
