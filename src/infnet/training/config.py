"""The run configuration: what `infnet train` resolves and a run directory records."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import ConfigDict, Field

from infnet.config import Strict


class TrainConfig(Strict):
    seed: int = 0
    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=4096, ge=1)  # the paper's batch size
    eval_batch_size: int = Field(default=16384, ge=1)
    optimizer: Literal["adam", "adagrad", "adamw"] = "adam"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)  # dense parameters
    embedding_l2: float = Field(default=0.0, ge=0)  # embedding tables
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = Field(default=0, ge=0)
    grad_clip: float | None = Field(default=None, gt=0)
    eval_every: int = Field(default=0, ge=0)  # steps between evaluations; 0 = once per epoch
    patience: int = Field(default=5, ge=1)  # evaluations without improvement (the paper: 5)
    # Which checkpoint is kept (training/selection.py): "monitor" the best `monitor` (a
    # validation metric: mtl_auc, mtl_gauc, or task.metric such as is_click.auc,
    # play_time.r2 or is_click.logloss; a loss or an error is best lowest); "weighted" the best weighted mean of the task scores
    # (AUC of a binary task, R2 of a regression task) with `selection_weights` (the task
    # weights otherwise); "all_tasks" a checkpoint replaces the kept one only when no task
    # score is lower and the weighted mean is higher.
    selection: Literal["monitor", "weighted", "all_tasks"] = "monitor"
    monitor: str = "mtl_auc"
    selection_weights: dict[str, float] = Field(default_factory=dict)
    losses: dict[str, Literal["bce", "mse", "huber"]] = Field(default_factory=dict)  # task -> loss
    task_weights: dict[str, float] = Field(
        default_factory=dict
    )  # task -> lambda (schema's otherwise)
    task_weighting: Literal["fixed", "uncertainty", "normalised"] = "fixed"  # training/losses.py
    # Budgets: stop (evaluate, keep the best checkpoint, score test) after this many
    # optimiser steps or seconds of training, whichever comes first; None: the epochs only.
    max_steps: int | None = Field(default=None, ge=1)
    time_limit_s: float | None = Field(default=None, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # The batch source: "memory" holds every split in memory (data/loader.py, the fast
    # default); "parts" streams each split from its Parquet row groups in
    # `memory_budget_mb` (data/parts.py), for data that does not fit.
    loader: Literal["memory", "parts"] = "memory"
    memory_budget_mb: float = Field(default=1024, gt=0)
    # torch.compile the train steps' model (Inductor); evaluation, checkpoints and export
    # use the model itself. It fuses the elementwise work between INFNet's skinny matrix
    # products (+14% train samples/s on one CPU thread, benchmarks/train_speed.py
    # --compile) after up to two minutes of compiling, so it pays on long runs only.
    compile: bool = False


class RunConfig(Strict):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    data: str
    model: str = "infnet"
    model_options: dict[str, Any] = Field(default_factory=dict)
    train: TrainConfig = Field(default_factory=TrainConfig)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    return torch.device(name)
