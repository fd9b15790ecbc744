"""The multi-task trainer: one loop for every registered model.

The trainer receives its model and its batch source (a `PreparedDataset`, a `PartsDataset`,
or anything with its `schema`, `num_rows` and `batches`); each step is `step.train_step`.
With a `Group` (distributed.py) it is one rank of a DDP job: the model is wrapped, each rank
trains on its part of every global batch, evaluation is sharded, and rank 0 alone writes. Evaluation every
epoch or every k steps; the checkpoint kept and early stopping follow `train.selection`
(selection.py), and every evaluation names the tasks that are below chance or collapsed;
training ends at the epoch, step or time budget; the best checkpoint is restored at the
end and scored on test. What it writes is described in rundir.py.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from infnet.config import validate
from infnet.data.batch import Batch
from infnet.data.loader import PreparedDataset
from infnet.data.parts import PartsDataset
from infnet.data.prefetch import prefetch
from infnet.malloc import keep_freed_memory
from infnet.models import build_model, model_class
from infnet.models.base import MultiTaskModel
from infnet.models.checkpoint import CheckpointError, check_compatible, load_state_strict
from infnet.training.config import RunConfig, resolve_device
from infnet.training.distributed import Group, check_batch
from infnet.training.evaluation import Predictions, evaluate_split, predict, score
from infnet.training.losses import TaskLoss
from infnet.training.optim import make_optimizer, make_schedule
from infnet.training.rundir import BEST, LAST, RunDir
from infnet.training.selection import Selection, task_flags
from infnet.training.step import train_step


class Trainer:
    def __init__(
        self,
        config: RunConfig,
        model: MultiTaskModel,
        data: PreparedDataset,
        run_dir: str | Path | None = None,
        *,
        progress: bool = True,
        group: Group | None = None,
    ) -> None:
        tc = config.train
        check_batch(tc.batch_size, group)
        self.config = config
        self.data = data
        self.schema = data.schema
        self.group = group
        main = group is None or group.is_main
        self.run = (
            RunDir(run_dir, config, self.schema, writer=main) if run_dir is not None else None
        )
        self.progress = progress and main
        self.device = resolve_device(tc.device)
        if group is not None:
            self.device = group.device(self.device)
        self.model = model.to(self.device)
        # what steps train: the model itself, or its DDP wrapper (which averages gradients);
        # evaluation and checkpoints use the model itself
        self.net: torch.nn.Module = self.model
        if group is not None:
            cuda = self.device.type == "cuda"
            self.net = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if cuda else None
            )
        if tc.compile:
            self.net = torch.compile(self.net)
        self.loss = TaskLoss(self.schema, tc).to(self.device)
        self.selection = Selection(self.schema, tc)
        self.optimizer = make_optimizer(self.model, tc, list(self.loss.parameters()))
        self.steps_per_epoch = math.ceil(data.num_rows("train") / tc.batch_size)
        self.total_steps = min(self.steps_per_epoch * tc.epochs, tc.max_steps or math.inf)
        self.scheduler = make_schedule(self.optimizer, tc, self.total_steps)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.elapsed = 0.0  # seconds of training so far, across resumes (time_limit_s)
        self.best: dict[str, Any] | None = None
        self.last_valid: dict[str, Any] | None = None
        self.evaluations: list[dict[str, Any]] = []  # every validation result, for task_flags
        self._best_state: dict[str, torch.Tensor] | None = None
        self.test_predictions: Predictions | None = None  # set by finish()
        self.bad_evals = 0
        # Called after every evaluation with (evaluation index, validation score, higher is
        # better); True stops training there, as a tuner's pruner does with a hopeless trial.
        self.on_evaluate: Callable[[int, float], bool] | None = None
        self.pruned = False

    @classmethod
    def from_config(
        cls,
        config: RunConfig,
        run_dir: str | Path | None = None,
        *,
        data: PreparedDataset | None = None,
        progress: bool = True,
        group: Group | None = None,
    ) -> Trainer:
        """The config's dataset (unless given) and a new model, seeded by train.seed (the
        same on every rank)."""
        data = data or open_dataset(config)
        torch.manual_seed(config.train.seed)
        options = validate(
            model_class(config.model).Config, config.model_options, where="model_options"
        )
        model = build_model(config.model, data.schema, options)
        return cls(config, model, data, run_dir, progress=progress, group=group)

    # --- checkpoints -----------------------------------------------------------------------
    def _save_last(self) -> None:
        assert self.run is not None
        self.run.save(
            LAST,
            {
                "model": self.model.state_dict(),
                "loss": self.loss.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "progress": torch.tensor(
                    [self.epoch, self.step_in_epoch, self.global_step, self.bad_evals]
                ),
                "elapsed": torch.tensor(self.elapsed, dtype=torch.float64),
                "best": json.dumps(self.best),
                "evaluations": json.dumps(self.evaluations),
                "rng": torch.get_rng_state(),
            },
        )

    def resume(self) -> bool:
        """Continue from run_dir/last.pt if it exists; returns whether it did."""
        assert self.run is not None
        if not self.run.has(LAST):
            return False
        path = self.run.path / LAST
        state = self.run.load(LAST)
        check_compatible(path, state["schema"], self.schema)
        missing = [k for k in ("loss", "elapsed", "evaluations") if k not in state]
        if missing:
            raise CheckpointError(
                f"{path}: written by an older infnet (no {missing}); use a new --out"
            )
        if state["config"] != self.config.model_dump(mode="json"):
            raise ValueError(
                f"{path}: the run was started with another config; use a new --out or the same config"
            )
        load_state_strict(path, self.model, state["model"])
        load_state_strict(path, self.loss, state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step_in_epoch, self.global_step, self.bad_evals = (
            int(x) for x in state["progress"]
        )
        self.elapsed = float(state["elapsed"])
        self.best = json.loads(state["best"])
        self.evaluations = json.loads(state["evaluations"])
        self.last_valid = self.evaluations[-1] if self.evaluations else None
        torch.set_rng_state(state["rng"])
        self.run.log(f"resumed at epoch {self.epoch} step {self.global_step}")
        return True

    # --- loop ----------------------------------------------------------------------------
    def _epoch_batches(self) -> Iterator[Batch]:
        tc = self.config.train
        batches = self.data.batches(
            "train",
            tc.batch_size,
            shuffle=True,
            seed=tc.seed * 100_003 + self.epoch,
            shard=self.group.shard if self.group else None,
        )
        return prefetch(islice(batches, self.step_in_epoch, None))

    def _evaluate_and_track(self, train_loss: float) -> bool:
        """Evaluate on valid, record, checkpoint; returns True when training should stop."""
        tc = self.config.train
        valid = evaluate_split(self.model, self.data, "valid", tc.eval_batch_size, self.group)
        score_ = self.selection.score(valid)
        flags = task_flags(self.schema, valid, self.evaluations)
        improved = self.selection.improves(valid, self.best["valid"] if self.best else None)
        if improved:
            self.best = {
                "score": score_,
                "epoch": self.epoch,
                "step": self.global_step,
                "valid": valid,
                "flags": flags,
            }
            self.bad_evals = 0
            if self.run is not None:
                self.run.save(BEST, {"model": self.model.state_dict()})
            else:  # no run directory: keep the best weights in memory for finish()
                self._best_state = {
                    k: v.detach().clone() for k, v in self.model.state_dict().items()
                }
        else:
            self.bad_evals += 1
        self.last_valid = valid
        self.evaluations.append(valid)
        if self.run is not None:
            for flag in flags:
                self.run.log(f"step {self.global_step}: {flag}")
            self.run.append_metrics(
                {
                    "epoch": self.epoch,
                    "step": self.global_step,
                    "train_loss": train_loss,
                    "lr": self.scheduler.get_last_lr()[0],
                    "loss_weights": self.loss.task_scales(),
                    "valid": valid,
                    "score": score_,
                    "best": improved,
                    "flags": flags,
                    "time": time.time(),
                }
            )
            self._save_last()
        if self.on_evaluate is not None and self.on_evaluate(len(self.evaluations) - 1, score_):
            self.pruned = True
        return self.pruned or self.bad_evals >= tc.patience

    def _out_of_budget(self) -> bool:
        tc = self.config.train
        if tc.max_steps is not None and self.global_step >= tc.max_steps:
            return True
        if tc.time_limit_s is None:
            return False
        late = self._clock() >= tc.time_limit_s
        return self.group.any(late) if self.group else late  # every rank stops at one step

    def _clock(self) -> float:
        """Seconds of training so far, the runs before a resume included."""
        return time.time() - self._clock_zero

    def fit(self) -> dict[str, Any]:
        """Train until early stopping or the epoch, step or time budget; restore the best
        weights; return {"best": ..., "test": test metrics, "flags": ...}."""
        self.data.check()  # a damaged split stops the run now, not after hours of training
        keep_freed_memory()  # each step reuses the last one's pages (infnet/malloc.py)
        # Denormals made late epochs 7x slower on CPU (DESIGN.md 4). The flag is the CPU
        # thread's: put back afterwards, since Python's own floats obey it too.
        torch.set_flush_denormal(True)
        try:
            return self._fit()
        finally:
            torch.set_flush_denormal(False)

    def _fit(self) -> dict[str, Any]:
        tc = self.config.train
        if self.run is not None:
            self.run.start()
            self.run.log(
                f"model {self.config.model}: {self.model.num_parameters():,} parameters on {self.device}"
            )
            for note in self.model.ignored_inputs():
                self.run.log(f"model {self.config.model} ignores: {note}")
        if self.global_step == 0:  # a resumed run has its statistics in the checkpoint
            self.model.fit_statistics(
                b.to(self.device) for b in self.data.batches("train", tc.eval_batch_size)
            )
        eval_every = tc.eval_every or self.steps_per_epoch
        started, steps_before = time.time(), self.global_step
        self._clock_zero = started - self.elapsed
        stop = self.global_step > 0 and self._out_of_budget()  # a resumed run that spent it
        with _progress(self.progress) as bar:
            task = bar.add_task(
                "train", total=self.total_steps, completed=self.global_step, status=""
            )
            while self.epoch < tc.epochs and not stop:
                running, count = 0.0, 0
                for batch in self._epoch_batches():
                    running += train_step(
                        self.net,
                        batch.to(self.device),
                        self.loss,
                        self.optimizer,
                        self.scheduler,
                        tc.grad_clip,
                        self.group,
                    )
                    count += 1
                    self.step_in_epoch += 1
                    self.global_step += 1
                    self.elapsed = self._clock()
                    bar.update(
                        task,
                        advance=1,
                        status=f"epoch {self.epoch} loss {running / count:.4f}{self._best_text()}",
                    )
                    if self.step_in_epoch >= self.steps_per_epoch:
                        break  # the epoch's end evaluates below
                    out = self._out_of_budget()
                    if out or self.global_step % eval_every == 0:
                        stop = self._evaluate_and_track(running / count) or out
                        if stop:
                            break
                if not stop:
                    self.epoch, self.step_in_epoch = self.epoch + 1, 0
                    stop = self._evaluate_and_track(running / max(count, 1))
                    stop = stop or self._out_of_budget()
        if self.run is not None:
            budget = " (budget reached)" if self._out_of_budget() else ""
            self.run.log(
                f"trained {self.global_step - steps_before} steps in {time.time() - started:.1f}s"
                f"{budget}; best {self._best_line()}"
            )
        return self.finish()

    def _best_line(self) -> str:
        if self.best is None:
            return "none"
        b = self.best
        return (
            f"valid {self.selection.name} {b['score']:.4f} at epoch {b['epoch']}, step {b['step']}"
        )

    def _best_text(self) -> str:
        if self.best is None or self.last_valid is None:
            return ""
        now = self.selection.score(self.last_valid)
        return f" | valid {self.selection.name} {now:.4f} (best {self.best['score']:.4f})"

    def finish(self) -> dict[str, Any]:
        if self.group is not None:
            self.group.barrier()  # rank 0's best.pt is written before any rank reads it
        if self.run is not None and self.run.has(BEST):
            load_state_strict(self.run.path / BEST, self.model, self.run.load(BEST)["model"])
        elif self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        # kept so callers that also want the raw test predictions (experiments) reuse them
        self.test_predictions = predict(
            self.model, self.data, "test", self.config.train.eval_batch_size, group=self.group
        )
        test = score(self.data, self.test_predictions)
        # the kept checkpoint's flags on valid (its collapse judged against the evaluations
        # before it), and on test the tasks below chance
        flags = list(self.best["flags"]) if self.best else []
        flags += task_flags(self.schema, test, split="test")
        result = {
            "best": self.best,
            "test": test,
            "parameters": self.model.num_parameters(),
            "steps": self.global_step,
            "flags": flags,
            "pruned": self.pruned,
        }
        if self.run is not None:
            for flag in flags:
                self.run.log(f"kept checkpoint: {flag}")
            self.run.write_test(result)
        return result


def open_dataset(config: RunConfig) -> PreparedDataset | PartsDataset:
    """The batch source `train.loader` names over the config's dataset."""
    if config.train.loader == "parts":
        return PartsDataset(config.data, config.train.memory_budget_mb)
    return PreparedDataset(config.data)


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        disable=not enabled,
        transient=False,
    )
