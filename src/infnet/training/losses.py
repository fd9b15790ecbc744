"""The multi-task loss: sum_i lambda_i * L_i, each L_i averaged over the rows whose label is
present (BCE on logits for binary tasks, MSE or Huber for regression); a missing label is
masked, never read as 0."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from infnet.data.batch import Batch
from infnet.data.schema import Schema
from infnet.training.config import TrainConfig


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
