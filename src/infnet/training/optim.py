"""Optimiser and learning-rate schedule of a run: L2 apart for embedding tables and dense
parameters, warmup then constant or cosine."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from infnet.models.base import MultiTaskModel
from infnet.training.config import TrainConfig


def make_optimizer(
    model: MultiTaskModel, config: TrainConfig, extra: Sequence[torch.nn.Parameter] = ()
) -> torch.optim.Optimizer:
    """Adam (or another) over the model's parameters and `extra` ones (the loss's learned
    task weights, never decayed)."""
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
        {"params": list(extra), "weight_decay": 0.0},
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
