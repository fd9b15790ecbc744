"""The multi-task loss: each L_i averaged over the rows whose label is present (BCE on logits
for binary tasks, MSE or Huber on the standardised target z = (y - mean) / std for
regression); a missing label is masked, never read as 0. The tasks are combined by
`train.task_weighting`:

    fixed        L = sum_i lambda_i L_i
    uncertainty  L = sum_i lambda_i (c_i exp(-s_i) L_i + s_i / 2),  s_i = log sigma_i^2 learned,
                 c_i = 1 for binary and 1/2 for regression tasks (Kendall et al., 2018)
    normalised   L = sum_i lambda_i L_i / m_i,  m_i a running mean of L_i (no gradient), so
                 every task weighs lambda_i whatever the scale of its loss
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from infnet.data.batch import Batch
from infnet.data.schema import Schema
from infnet.training.config import TrainConfig
from infnet.training.distributed import Group

NORMALISER_MOMENTUM = 0.99  # m_i <- 0.99 m_i + 0.01 L_i: a memory of about 100 steps


class TaskLoss(nn.Module):
    def __init__(self, schema: Schema, config: TrainConfig) -> None:
        super().__init__()
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
        self.weighting = config.task_weighting
        self.names = schema.task_names
        T = schema.num_tasks
        self.register_buffer("mean", torch.tensor([t.mean for t in schema.tasks]))
        self.register_buffer("std", torch.tensor([t.std for t in schema.tasks]))
        if self.weighting == "uncertainty":
            self.log_var = nn.Parameter(torch.zeros(T))  # s_i; sigma_i = 1 at the start
            self.register_buffer(
                "coefficient",
                torch.tensor([1.0 if t.kind == "binary" else 0.5 for t in schema.tasks]),
            )
        if self.weighting == "normalised":
            self.register_buffer("running", torch.full((T,), float("nan")))  # m_i, NaN: unseen

    def _sums(self, outputs: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Each task's loss summed over the rows holding its label [T], and their count [T]."""
        z = (batch.labels - self.mean) / self.std  # binary tasks: mean 0, std 1
        per_row = []
        for i, kind in enumerate(self.kinds):
            if kind == "bce":
                per_row.append(
                    F.binary_cross_entropy_with_logits(outputs[:, i], z[:, i], reduction="none")
                )
            elif kind == "mse":
                per_row.append(F.mse_loss(outputs[:, i], z[:, i], reduction="none"))
            else:
                per_row.append(F.huber_loss(outputs[:, i], z[:, i], reduction="none"))
        present = batch.label_mask
        sums = torch.where(present, torch.stack(per_row, 1), 0.0).sum(0)  # [T]
        return sums, present.sum(0).to(sums.dtype)

    def forward(
        self, outputs: torch.Tensor, batch: Batch, group: Group | None = None
    ) -> tuple[torch.Tensor, list[float]]:
        """The combined loss and each task's L_i (NaN where the batch has none of its labels).

        With a `group` (DDP), the batch is this rank's part of a global batch: L_i is the
        global batch's (its summed losses over its count of labels, one all-reduce), and the
        returned loss is this rank's share, whose average over the ranks, the gradient
        DistributedDataParallel computes, is the global loss."""
        sums, counts = self._sums(outputs, batch)
        world, total_sums, total_counts = 1, sums.detach(), counts
        if group is not None:
            world = group.world_size
            total_sums, total_counts = group.all_sum(torch.cat([sums.detach(), counts])).chunk(2)
        total = outputs.new_zeros(())
        per_task = []
        for i in range(len(self.kinds)):
            if total_counts[i] == 0:
                per_task.append(float("nan"))
                continue
            value = total_sums[i] / total_counts[i]  # L_i of the (global) batch
            per_task.append(value.item())
            loss = sums[i] * (world / total_counts[i])
            if self.weighting == "uncertainty":
                s = self.log_var[i]
                loss = self.coefficient[i] * torch.exp(-s) * loss + 0.5 * s
            elif self.weighting == "normalised":
                loss = loss / self._running(i, value)
            total = total + self.weights[i] * loss
        return total, per_task

    def _running(self, i: int, value: torch.Tensor) -> torch.Tensor:
        m = self.running[i]
        if self.training:
            m = (
                value
                if torch.isnan(m)
                else NORMALISER_MOMENTUM * m + (1 - NORMALISER_MOMENTUM) * value
            )
            self.running[i] = m
        return (value if torch.isnan(m) else m).clamp_min(1e-8)

    def task_scales(self) -> dict[str, float]:
        """What each task's L_i is multiplied by now (lambda_i included): the weights a log shows."""
        w = torch.tensor(self.weights, device=self.mean.device)
        if self.weighting == "uncertainty":
            w = w * self.coefficient * torch.exp(-self.log_var.detach())
        elif self.weighting == "normalised":
            w = w / torch.nan_to_num(self.running, nan=1.0).clamp_min(1e-8)
        return {name: float(v) for name, v in zip(self.names, w, strict=True)}
