"""Scoring a split: predictions (task activations applied) and their metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from infnet import metrics
from infnet.data.loader import PreparedDataset
from infnet.data.prefetch import prefetch
from infnet.models.base import MultiTaskModel, TaskActivation
from infnet.training.distributed import Group


@dataclass
class Predictions:
    outputs: np.ndarray  # [N, T]: probabilities for binary tasks, values for regression
    labels: np.ndarray  # [N, T]
    label_mask: np.ndarray  # [N, T]
    users: np.ndarray  # [N]


@torch.no_grad()
def predict(
    model: MultiTaskModel,
    data: PreparedDataset,
    split: str,
    batch_size: int = 16384,
    rows: np.ndarray | None = None,
    group: Group | None = None,
) -> Predictions:
    """The split's predictions, or those of its `rows` (indices into the split) in order.

    With a `group` (DDP), rank r predicts batches r, r + W, ... of the single-process
    batching and the pieces are gathered: the same batches, so the same predictions."""
    model.eval()
    device = next(model.parameters()).device
    activate = TaskActivation(data.schema).to(device)
    if group is None and rows is None:
        batches = data.batches(split, batch_size)
    else:
        n = data.num_rows(split) if rows is None else len(rows)
        starts = range(0, n, batch_size)
        if group is not None:
            starts = starts[group.rank :: group.world_size]
        batches = (
            data.batch_range(split, lo, min(lo + batch_size, n))
            if rows is None
            else data.batch_at(split, rows[lo : lo + batch_size])
            for lo in starts
        )
    pieces = [
        (
            activate(model(batch.to(device)).logits).cpu().numpy(),
            batch.labels.numpy(),
            batch.label_mask.numpy(),
            batch.user.numpy(),
        )
        for batch in prefetch(iter(batches))
    ]
    if group is not None:  # batch k was predicted by rank k % W, as its (k // W)-th
        ranks = group.gather(pieces)
        pieces = [
            ranks[k % group.world_size][k // group.world_size] for k in range(sum(map(len, ranks)))
        ]
    return Predictions(*(np.concatenate(column) for column in zip(*pieces, strict=True)))


def score(data: PreparedDataset, p: Predictions) -> dict[str, Any]:
    return metrics.evaluate(data.schema.tasks, p.outputs, p.labels, p.label_mask, p.users)


def evaluate_split(
    model: MultiTaskModel,
    data: PreparedDataset,
    split: str,
    batch_size: int = 16384,
    group: Group | None = None,
) -> dict[str, Any]:
    return score(data, predict(model, data, split, batch_size, group=group))
