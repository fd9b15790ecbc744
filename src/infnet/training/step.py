"""One optimisation step, the same for offline epochs, the streaming trainer and DDP: the
model may be wrapped (DistributedDataParallel), so everything it contributes to the loss
comes back through its output."""

from __future__ import annotations

import torch
from torch import nn

from infnet.data.batch import Batch
from infnet.training.distributed import Group
from infnet.training.losses import TaskLoss


def train_step(
    model: nn.Module,
    batch: Batch,
    loss_fn: TaskLoss,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    grad_clip: float | None = None,
    group: Group | None = None,
) -> float:
    """forward, task losses (+ the model's auxiliary loss), backward, clip, step; the loss
    (of the global batch under DDP)."""
    model.train()
    output = model(batch)
    loss, _ = loss_fn(output.logits, batch, group)
    if output.auxiliary_loss is not None:
        loss = loss + output.auxiliary_loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    value = loss.detach().reshape(1)
    if group is not None:
        value = _average_outside_ddp(value, loss_fn, group)
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return value.item()


def _average_outside_ddp(value: torch.Tensor, loss_fn: TaskLoss, group: Group) -> torch.Tensor:
    """DDP averaged the model's gradients; the loss's own parameters (learned task weights)
    and the logged loss are averaged here, in one all-reduce."""
    extra = [p for p in loss_fn.parameters() if p.grad is not None]
    packed = group.all_sum(torch.cat([value, *(p.grad.reshape(-1) for p in extra)]))
    packed /= group.world_size
    at = 1
    for p in extra:
        p.grad.copy_(packed[at : at + p.numel()].view_as(p))
        at += p.numel()
    return packed[:1]
