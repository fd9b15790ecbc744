"""The multi-task trainer: one loop for every registered model.

Loss = sum_i lambda_i * L_i over tasks, each L_i averaged over the rows whose label is
present (BCE on logits for binary tasks, MSE or Huber for regression), plus a model's
auxiliary loss if it sets one. Evaluation every epoch or every k steps; early stopping on
validation MTL-AUC; the best checkpoint is restored at the end and scored on test.

A run directory holds:
    config.json         the resolved RunConfig
    log.txt             what the run ignored, parameter count, timings
    metrics.jsonl       one line per evaluation
    best.pt  last.pt    best checkpoint, and the state to resume from
    test_metrics.json   the best checkpoint on the test split
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field

from infnet import metrics
from infnet.config import Strict, validate
from infnet.data.batch import Batch
from infnet.data.loader import PreparedDataset
from infnet.data.schema import Schema
from infnet.models import build_model, model_class
from infnet.models.base import MultiTaskModel
from infnet.training.checkpoint import (
    check_compatible,
    load_checkpoint,
    load_state_strict,
    save_checkpoint,
)


class TrainConfig(Strict):
    seed: int = 0
    epochs: int = 20
    batch_size: int = 4096  # the paper's batch size
    eval_batch_size: int = 16384
    optimizer: Literal["adam", "adagrad", "adamw"] = "adam"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)  # dense parameters
    embedding_l2: float = Field(default=0.0, ge=0)  # embedding tables
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = Field(default=0, ge=0)
    grad_clip: float | None = Field(default=None, gt=0)
    eval_every: int = Field(default=0, ge=0)  # steps between evaluations; 0 = once per epoch
    patience: int = Field(default=5, ge=1)  # evaluations without improvement (the paper: 5)
    monitor: str = "mtl_auc"  # a key of the validation metrics, higher is better
    losses: dict[str, Literal["bce", "mse", "huber"]] = Field(default_factory=dict)  # task -> loss
    task_weights: dict[str, float] = Field(
        default_factory=dict
    )  # task -> lambda (schema's otherwise)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class RunConfig(Strict):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    data: str
    model: str = "infnet"
    model_options: dict[str, Any] = Field(default_factory=dict)
    train: TrainConfig = Field(default_factory=TrainConfig)


@dataclass
class Predictions:
    outputs: np.ndarray  # [N, T]: probabilities for binary tasks, values for regression
    labels: np.ndarray  # [N, T]
    label_mask: np.ndarray  # [N, T]
    users: np.ndarray  # [N]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    return torch.device(name)


class TaskLoss:
    """sum_i lambda_i * mean over present labels of L_i."""

    def __init__(self, schema: Schema, config: TrainConfig) -> None:
        unknown = sorted((set(config.losses) | set(config.task_weights)) - set(schema.task_names))
        if unknown:
            raise ValueError(
                f"train.losses / train.task_weights name unknown tasks {unknown}; tasks: {schema.task_names}"
            )
        self.kinds = [
            config.losses.get(t.name, "bce" if t.kind == "binary" else "mse") for t in schema.tasks
        ]
        for t, kind in zip(schema.tasks, self.kinds, strict=True):
            if (t.kind == "binary") != (kind == "bce"):
                raise ValueError(f"train.losses.{t.name}: {kind} does not fit a {t.kind} task")
        self.weights = [config.task_weights.get(t.name, t.weight) for t in schema.tasks]

    def __call__(self, outputs: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, list[float]]:
        total = outputs.new_zeros(())
        per_task = []
        for i, (kind, weight) in enumerate(zip(self.kinds, self.weights, strict=True)):
            present = batch.label_mask[:, i]
            if not present.any():
                per_task.append(float("nan"))
                continue
            y_hat, y = outputs[present, i], batch.labels[present, i]
            if kind == "bce":
                loss = F.binary_cross_entropy_with_logits(y_hat, y)
            elif kind == "mse":
                loss = F.mse_loss(y_hat, y)
            else:
                loss = F.huber_loss(y_hat, y)
            total = total + weight * loss
            per_task.append(loss.item())
        return total, per_task


def make_optimizer(model: MultiTaskModel, config: TrainConfig) -> torch.optim.Optimizer:
    embedding = [
        p
        for m in model.modules()
        if isinstance(m, torch.nn.Embedding)
        for p in m.parameters(recurse=False)
    ]
    embedding_ids = {id(p) for p in embedding}
    dense = [p for p in model.parameters() if id(p) not in embedding_ids]
    groups = [
        {"params": dense, "weight_decay": config.weight_decay},
        {"params": embedding, "weight_decay": config.embedding_l2},
    ]
    cls = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad, "adamw": torch.optim.AdamW}[
        config.optimizer
    ]
    return cls([g for g in groups if g["params"]], lr=config.lr)


def make_schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "constant":
            return 1.0
        progress = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def predict(
    model: MultiTaskModel, data: PreparedDataset, split: str, batch_size: int = 16384
) -> Predictions:
    model.eval()
    device = next(model.parameters()).device
    binary = torch.tensor([t.kind == "binary" for t in data.schema.tasks], device=device)
    outs, labels, masks, users = [], [], [], []
    for batch in data.batches(split, batch_size):
        out = model(batch.to(device))
        outs.append(torch.where(binary, torch.sigmoid(out), out).cpu().numpy())
        labels.append(batch.labels.numpy())
        masks.append(batch.label_mask.numpy())
        users.append(batch.user.numpy())
    return Predictions(
        np.concatenate(outs), np.concatenate(labels), np.concatenate(masks), np.concatenate(users)
    )


def evaluate_split(
    model: MultiTaskModel, data: PreparedDataset, split: str, batch_size: int = 16384
) -> dict[str, Any]:
    p = predict(model, data, split, batch_size)
    return metrics.evaluate(data.schema.tasks, p.outputs, p.labels, p.label_mask, p.users)


class Trainer:
    def __init__(
        self,
        config: RunConfig,
        run_dir: str | Path | None = None,
        *,
        data: PreparedDataset | None = None,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.data = data or PreparedDataset(config.data)
        self.schema = self.data.schema
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress = progress
        self.device = resolve_device(config.train.device)
        torch.set_flush_denormal(True)  # denormals made late epochs 7x slower on CPU (DESIGN.md 4)
        torch.manual_seed(config.train.seed)
        options = validate(
            model_class(config.model).Config, config.model_options, where="model_options"
        )
        self.model = build_model(config.model, self.schema, options).to(self.device)
        self.loss = TaskLoss(self.schema, config.train)
        self.optimizer = make_optimizer(self.model, config.train)
        steps_per_epoch = math.ceil(self.data.num_rows("train") / config.train.batch_size)
        self.steps_per_epoch = steps_per_epoch
        self.scheduler = make_schedule(
            self.optimizer, config.train, steps_per_epoch * config.train.epochs
        )
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best: dict[str, Any] | None = None
        self.last_valid: dict[str, Any] | None = None
        self._best_state: dict[str, torch.Tensor] | None = None
        self.test_predictions: Predictions | None = None  # set by finish()
        self.bad_evals = 0

    # --- run directory -------------------------------------------------------------------
    def _log(self, message: str) -> None:
        if self.run_dir is not None:
            with open(self.run_dir / "log.txt", "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    def _checkpoint_state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict()}

    def _save(self, name: str, state: dict[str, Any]) -> None:
        assert self.run_dir is not None
        save_checkpoint(
            self.run_dir / name,
            state,
            config=self.config.model_dump(mode="json"),
            schema=self.schema,
        )

    def _save_last(self) -> None:
        self._save(
            "last.pt",
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "progress": torch.tensor(
                    [self.epoch, self.step_in_epoch, self.global_step, self.bad_evals]
                ),
                "best": json.dumps(self.best),
                "rng": torch.get_rng_state(),
            },
        )

    def resume(self) -> bool:
        """Continue from run_dir/last.pt if it exists; returns whether it did."""
        assert self.run_dir is not None
        path = self.run_dir / "last.pt"
        if not path.exists():
            return False
        state = load_checkpoint(path)
        check_compatible(path, state["schema"], self.schema)
        if state["config"] != self.config.model_dump(mode="json"):
            raise ValueError(
                f"{path}: the run was started with another config; use a new --out or the same config"
            )
        load_state_strict(path, self.model, state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step_in_epoch, self.global_step, self.bad_evals = (
            int(x) for x in state["progress"]
        )
        self.best = json.loads(state["best"])
        self.last_valid = self.best["valid"] if self.best else None
        torch.set_rng_state(state["rng"])
        self._log(f"resumed at epoch {self.epoch} step {self.global_step}")
        return True

    # --- loop ----------------------------------------------------------------------------
    def _epoch_batches(self) -> Iterator[Batch]:
        tc = self.config.train
        batches = self.data.batches(
            "train", tc.batch_size, shuffle=True, seed=tc.seed * 100_003 + self.epoch
        )
        return islice(batches, self.step_in_epoch, None)

    def _train_step(self, batch: Batch) -> float:
        self.model.train()
        batch = batch.to(self.device)
        self.model.auxiliary_loss = None
        outputs = self.model(batch)
        loss, _ = self.loss(outputs, batch)
        if self.model.auxiliary_loss is not None:
            loss = loss + self.model.auxiliary_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.train.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return loss.item()

    def _evaluate_and_track(self, train_loss: float) -> bool:
        """Evaluate on valid, record, checkpoint; returns True when training should stop."""
        tc = self.config.train
        valid = evaluate_split(self.model, self.data, "valid", tc.eval_batch_size)
        if tc.monitor not in valid:
            raise ValueError(
                f"train.monitor={tc.monitor!r} is not a validation metric; have {sorted(valid)}"
            )
        score = valid[tc.monitor]
        improved = self.best is None or (not math.isnan(score) and score > self.best["score"])
        if improved:
            self.best = {
                "score": score,
                "epoch": self.epoch,
                "step": self.global_step,
                "valid": valid,
            }
            self.bad_evals = 0
            if self.run_dir is not None:
                self._save("best.pt", self._checkpoint_state())
            else:  # no run directory: keep the best weights in memory for finish()
                self._best_state = {
                    k: v.detach().clone() for k, v in self.model.state_dict().items()
                }
        else:
            self.bad_evals += 1
        self.last_valid = valid
        record = {
            "epoch": self.epoch,
            "step": self.global_step,
            "train_loss": train_loss,
            "lr": self.scheduler.get_last_lr()[0],
            "valid": valid,
            "best": improved,
            "time": time.time(),
        }
        if self.run_dir is not None:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            self._save_last()
        return self.bad_evals >= tc.patience

    def fit(self) -> dict[str, Any]:
        """Train until early stopping or the epoch budget; restore the best weights; return
        {"best": ..., "test": test metrics}."""
        tc = self.config.train
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(self.config.model_dump_json(indent=2))
            self._log(
                f"model {self.config.model}: {self.model.num_parameters():,} parameters on {self.device}"
            )
            for note in self.model.ignored_inputs():
                self._log(f"model {self.config.model} ignores: {note}")
        eval_every = tc.eval_every or self.steps_per_epoch
        stop = False
        started = time.time()
        with _progress(self.progress) as bar:
            task = bar.add_task(
                "train",
                total=tc.epochs * self.steps_per_epoch,
                completed=self.global_step,
                status="",
            )
            while self.epoch < tc.epochs and not stop:
                running, count = 0.0, 0
                for batch in self._epoch_batches():
                    running += self._train_step(batch)
                    count += 1
                    self.step_in_epoch += 1
                    self.global_step += 1
                    bar.update(
                        task,
                        advance=1,
                        status=f"epoch {self.epoch} loss {running / count:.4f}{self._best_text()}",
                    )
                    if (
                        self.global_step % eval_every == 0
                        and self.step_in_epoch < self.steps_per_epoch
                    ):
                        stop = self._evaluate_and_track(running / max(count, 1))
                        if stop:
                            break
                if not stop:
                    self.epoch, self.step_in_epoch = self.epoch + 1, 0
                    stop = self._evaluate_and_track(running / max(count, 1))
        self._log(
            f"trained {self.global_step} steps in {time.time() - started:.1f}s; best {self.best}"
        )
        return self.finish()

    def _best_text(self) -> str:
        if self.best is None or self.last_valid is None:
            return ""
        return f" | valid {self.config.train.monitor} {self.last_valid[self.config.train.monitor]:.4f} (best {self.best['score']:.4f})"

    def finish(self) -> dict[str, Any]:
        if self.run_dir is not None and (self.run_dir / "best.pt").exists():
            state = load_checkpoint(self.run_dir / "best.pt")
            load_state_strict(self.run_dir / "best.pt", self.model, state["model"])
        elif self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        # kept so callers that also want the raw test predictions (experiments) reuse them
        self.test_predictions = predict(
            self.model, self.data, "test", self.config.train.eval_batch_size
        )
        p = self.test_predictions
        test = metrics.evaluate(self.schema.tasks, p.outputs, p.labels, p.label_mask, p.users)
        result = {"best": self.best, "test": test, "parameters": self.model.num_parameters()}
        if self.run_dir is not None:
            (self.run_dir / "test_metrics.json").write_text(json.dumps(result, indent=2))
        return result


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


def load_run(
    run_dir: str | Path, data: PreparedDataset | None = None
) -> tuple[RunConfig, MultiTaskModel, PreparedDataset]:
    """The best model of a finished run, checked against its data."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{run_dir}: not a run directory (no config.json); make one with `infnet train`"
        )
    config = RunConfig.model_validate_json(config_path.read_text())
    data = data or PreparedDataset(config.data)
    path = run_dir / "best.pt"
    state = load_checkpoint(path)
    check_compatible(path, state["schema"], data.schema)
    options = validate(
        model_class(config.model).Config, config.model_options, where="model_options"
    )
    model = build_model(config.model, data.schema, options)
    load_state_strict(path, model, state["model"])
    model.eval()
    return config, model, data
