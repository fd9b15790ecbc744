"""Scoring a split: predictions (task activations applied) and their metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from infnet import metrics
from infnet.data.loader import PreparedDataset
from infnet.models.base import MultiTaskModel, TaskActivation


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
) -> Predictions:
    """The split's predictions, or those of its `rows` (indices into the split) in order."""
    model.eval()
    device = next(model.parameters()).device
    activate = TaskActivation(data.schema).to(device)
    outs, labels, masks, users = [], [], [], []
    batches = (
        data.batches(split, batch_size)
        if rows is None
        else (
            data.batch_at(split, rows[lo : lo + batch_size])
            for lo in range(0, len(rows), batch_size)
        )
    )
    for batch in batches:
        outs.append(activate(model(batch.to(device)).logits).cpu().numpy())
        labels.append(batch.labels.numpy())
        masks.append(batch.label_mask.numpy())
        users.append(batch.user.numpy())
    return Predictions(
        np.concatenate(outs), np.concatenate(labels), np.concatenate(masks), np.concatenate(users)
    )


def score(data: PreparedDataset, p: Predictions) -> dict[str, Any]:
    return metrics.evaluate(data.schema.tasks, p.outputs, p.labels, p.label_mask, p.users)


def evaluate_split(
    model: MultiTaskModel, data: PreparedDataset, split: str, batch_size: int = 16384
) -> dict[str, Any]:
    return score(data, predict(model, data, split, batch_size))
