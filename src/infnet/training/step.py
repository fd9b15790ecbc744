"""One optimisation step, the same for offline epochs, the streaming trainer and DDP: the
model may be wrapped (DistributedDataParallel), so everything it contributes to the loss
comes back through its output."""

from __future__ import annotations

import torch
from torch import nn

from infnet.data.batch import Batch
from infnet.training.losses import TaskLoss


def train_step(
    model: nn.Module,
    batch: Batch,
    loss_fn: TaskLoss,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    grad_clip: float | None = None,
) -> float:
    """forward, task losses (+ the model's auxiliary loss), backward, clip, step; the loss."""
    model.train()
    output = model(batch)
    loss, _ = loss_fn(output.logits, batch)
    if output.auxiliary_loss is not None:
        loss = loss + output.auxiliary_loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.item()
