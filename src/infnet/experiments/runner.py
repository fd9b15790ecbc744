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
import multiprocessing
import shutil
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from infnet.data.loader import PreparedDataset, RowLimit
from infnet.training.config import RunConfig, TrainConfig
from infnet.training.distributed import Group
from infnet.training.evaluation import Predictions
from infnet.training.trainer import Trainer

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
    # after every validation (index, score): True stops the run there (a tuner's pruner);
    # it must pickle to reach a worker process, and is not part of the run's identity
    on_evaluate: Callable[[int, float], bool] | None = field(default=None, compare=False)


def resolve(spec: RunSpec, data: PreparedDataset) -> RunConfig:
    """The full RunConfig of a spec: model options and train config with their defaults
    filled in, so equal configs written differently share one cache entry."""
    from infnet.config import validate
    from infnet.models import model_class

    options = validate(
        model_class(spec.model).Config, spec.options, where=f"{spec.label}: model_options"
    )
    train = validate(TrainConfig, {**spec.train, "seed": spec.seed}, where=f"{spec.label}: train")
    return RunConfig(
        data=str(data.path.resolve()),
        model=spec.model,
        model_options=options.model_dump(mode="json"),
        train=train,
    )


def run_key(config: RunConfig, fingerprint: str) -> str:
    payload = {"fingerprint": fingerprint, **config.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


class Runner:
    """Executes RunSpecs into `cache_dir`, with a progress bar: one after another, or in
    `workers` processes of `threads` torch threads each. Small recommendation models use
    CPU cores better as independent single-threaded runs than as one multi-threaded run.
    With `procs` > 1 each run trains in that many DDP processes (training/distributed.py);
    its result equals the single-process one to float tolerance, so it shares the cache."""

    def __init__(
        self,
        data: PreparedDataset,
        cache_dir: str | Path,
        *,
        progress: bool = True,
        console: Console | None = None,
        workers: int = 1,
        threads: int | None = None,
        procs: int = 1,
    ) -> None:
        if workers < 1 or procs < 1:
            raise ValueError(f"Runner: workers and procs must be >= 1, got {workers}, {procs}")
        self.data = data
        self.cache_dir = Path(cache_dir)
        self.fingerprint = data.fingerprint()
        self.progress = progress
        self.console = console or Console(stderr=True)
        self.workers = workers
        self.threads = threads
        self.procs = procs  # processes of each run (DDP over gloo or NCCL)
        self.trained = 0  # runs trained (not found in the cache) by this runner
        self._pool: ProcessPoolExecutor | None = None

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
        # Identical specs (e.g. the full model in compare and in ablation) train once.
        dirs: dict[int, Path | None] = {}
        first: dict[Path, int] = {}
        duplicate: dict[int, int] = {}
        for i, spec in enumerate(specs):
            try:
                dirs[i] = self.run_dir(spec)
            except Exception:  # a bad option: run() records it
                dirs[i] = None
            if dirs[i] is not None and dirs[i] in first:
                duplicate[i] = first[dirs[i]]
            elif dirs[i] is not None:
                first[dirs[i]] = i
        todo = [i for i in range(len(specs)) if i not in duplicate]
        with bar:
            task = bar.add_task(title, total=len(specs), counts="", eta="", now="")

            def show(running: list[int]) -> None:
                done = len(records)
                left = len(todo) - done - len(running)
                failed = sum(r["status"] == "failed" for r in records.values())
                mean = float(np.mean(durations)) if durations else None
                eta = (
                    f"ETA {(left + len(running)) * mean / self.workers:,.0f}s"
                    if mean is not None
                    else "ETA ?"
                )
                now = ", ".join(
                    f"{specs[i].model} {specs[i].label} seed {specs[i].seed}" for i in running
                )
                bar.update(
                    task,
                    completed=done,
                    counts=f"done {done} | running {len(running)} | left {left} | failed {failed}",
                    eta=eta,
                    now=now,
                )

            def finish(i: int, record: dict[str, Any], seconds: float) -> None:
                if record["status"] == "trained":
                    durations.append(seconds)
                records[i] = record
                if self.progress and not self.console.is_terminal:  # a log file: one line a run
                    spec = specs[i]
                    self.console.print(
                        f"{title}: {len(records)}/{len(todo)} {spec.model} {spec.label!r} "
                        f"seed {spec.seed}: {record['status']} in {seconds:.0f}s"
                        + (f" ({record.get('error')})" if record["status"] == "failed" else "")
                    )

            if self.workers == 1:
                if self.threads is not None:  # the runs train here, with a worker's threads
                    torch.set_num_threads(self.threads)
                for i in todo:
                    show([i])
                    started = time.time()
                    finish(i, self.run(specs[i]), time.time() - started)
            else:
                cached = [i for i in todo if dirs[i] is not None and (dirs[i] / RESULT).is_file()]
                for i in cached:
                    finish(i, self.run(specs[i]), 0.0)
                self._run_parallel(specs, [i for i in todo if i not in cached], show, finish)
            show([])
            failed = sum(r["status"] == "failed" for r in records.values())
            bar.update(
                task,
                completed=len(specs),
                counts=f"done {len(specs)} | failed {failed}",
                eta="",
                now="",
            )
        for i, j in duplicate.items():
            records[i] = {
                **records[j],
                "label": specs[i].label,
                "options": specs[i].options,
                "status": "cached" if ok(records[j]) else records[j]["status"],
            }
        return [records[i] for i in range(len(specs))]

    def _run_parallel(
        self,
        specs: list[RunSpec],
        todo: list[int],
        show: Callable[[list[int]], None],
        finish: Callable[[int, dict[str, Any], float], None],
    ) -> None:
        """Trains `todo` (uncached runs) in the worker processes, `workers` at a time."""
        pending: dict[Future, tuple[int, float]] = {}
        queue = list(todo)
        pool = self._executor()
        while queue or pending:
            while queue and len(pending) < self.workers:
                i = queue.pop(0)
                pending[pool.submit(_worker_run, self._worker_args(), specs[i])] = (i, time.time())
            show([i for i, _ in pending.values()])
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                i, started = pending.pop(future)
                try:
                    record = future.result()
                except Exception as err:  # the worker process itself died
                    record = {
                        "label": specs[i].label,
                        "model": specs[i].model,
                        "options": specs[i].options,
                        "seed": specs[i].seed,
                        "status": "failed",
                        "error": f"worker: {type(err).__name__}: {err}",
                        "run_dir": None,
                    }
                    self._shutdown()
                    pool = self._executor()
                self.trained += record["status"] == "trained"
                finish(i, record, time.time() - started)

    def _worker_args(self) -> tuple[str, dict[str, int] | None, str, int, int]:
        limits = self.data.limits if isinstance(self.data, RowLimit) else None
        return str(self.data.path), limits, str(self.cache_dir), self.threads or 1, self.procs

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn")
            )
        return self._pool

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        """Stop the worker processes (a runner with workers > 1 keeps them between suites)."""
        self._shutdown()

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
            result = self._train(config, run_dir, spec.on_evaluate)
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
            "flags": result["flags"],
            "pruned": result.get("pruned", False),
            "parameters": result["parameters"],
            "seconds": time.time() - started,
            "predictions": str(run_dir / PREDICTIONS),
        }
        done.write_text(json.dumps(record, indent=2, allow_nan=True))
        return {**record, "status": "trained"}

    def _train(
        self,
        config: RunConfig,
        run_dir: Path,
        on_evaluate: Callable[[int, float], bool] | None = None,
    ) -> dict[str, Any]:
        if self.procs == 1:
            return train_run(config, run_dir, self.data, on_evaluate=on_evaluate)
        if on_evaluate is not None:
            raise ValueError("a run that reports its evaluations (tuning) trains in one process")
        from infnet.training.distributed import spawn
        from infnet.training.rundir import TEST

        limits = self.data.limits if isinstance(self.data, RowLimit) else None
        threads = self.threads or 1
        spawn(_rank_run, self.procs, str(self.data.path), limits, config, str(run_dir), threads)
        return json.loads((run_dir / TEST).read_text())


def train_run(
    config: RunConfig,
    run_dir: Path,
    data: PreparedDataset,
    group: Group | None = None,
    on_evaluate: Callable[[int, float], bool] | None = None,
) -> dict[str, Any]:
    """Train (resuming an interrupted run) and save the test predictions; the result.
    Under DDP every rank calls it and rank 0 writes."""
    main = group is None or group.is_main
    trainer = Trainer.from_config(config, run_dir, data=data, progress=False, group=group)
    if (run_dir / "last.pt").is_file():
        try:
            trainer.resume()
        except Exception:  # a checkpoint cut short by the interruption: start over
            if group is not None:
                group.barrier()  # every rank has tried before rank 0 removes it
            if main:
                shutil.rmtree(run_dir)
            if group is not None:
                group.barrier()
            trainer = Trainer.from_config(config, run_dir, data=data, progress=False, group=group)
    trainer.on_evaluate = on_evaluate
    result = trainer.fit()
    p = trainer.test_predictions
    if main:
        np.savez_compressed(
            run_dir / PREDICTIONS,
            outputs=p.outputs,
            labels=p.labels,
            label_mask=p.label_mask,
            users=p.users,
        )
    return result


def _rank_run(
    path: str, limits: dict[str, int] | None, config: RunConfig, run_dir: str, threads: int
) -> None:
    """One rank of a run in `procs` processes (Runner with procs > 1)."""
    from infnet.training.config import resolve_device
    from infnet.training.distributed import from_environment, shut_down

    torch.set_num_threads(threads)
    data = RowLimit(path, limits) if limits is not None else PreparedDataset(path)
    group = from_environment(resolve_device(config.train.device))
    try:
        train_run(config, Path(run_dir), data, group)
    finally:
        shut_down()


def _worker_run(
    args: tuple[str, dict[str, int] | None, str, int, int], spec: RunSpec
) -> dict[str, Any]:
    """One run in a worker process (Runner with workers > 1)."""
    path, limits, cache_dir, threads, procs = args
    torch.set_num_threads(threads)
    data = RowLimit(path, limits) if limits is not None else PreparedDataset(path)
    return Runner(data, cache_dir, progress=False, threads=threads, procs=procs).run(spec)


def load_predictions(record: dict[str, Any]) -> Predictions:
    """The test predictions a successful run saved."""
    path = Path(record["predictions"])
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: test predictions of run {record['label']} are missing; delete its run directory to rerun it"
        )
    with np.load(path) as z:
        return Predictions(z["outputs"], z["labels"], z["label_mask"], z["users"])


def ok(record: dict[str, Any]) -> bool:
    return record["status"] in ("trained", "cached")
