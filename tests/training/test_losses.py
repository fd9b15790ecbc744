"""TaskLoss: standardised regression targets, and the three task weightings against their
formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tests.helpers import make_batch, make_schema

from infnet.data.schema import Schema
from infnet.models.base import TaskActivation
from infnet.training.config import TrainConfig
from infnet.training.losses import NORMALISER_MOMENTUM, TaskLoss


def _scaled_schema(mean: float = 300.0, std: float = 120.0) -> Schema:
    schema = make_schema()
    tasks = [
        t if t.kind == "binary" else t.model_copy(update={"mean": mean, "std": std})
        for t in schema.tasks
    ]
    return schema.model_copy(update={"tasks": tasks})


def _parts(schema, outputs, batch):
    """Each task's loss by hand: BCE on logits, MSE on z = (y - mean) / std."""
    out = []
    for i, t in enumerate(schema.tasks):
        m = batch.label_mask[:, i]
        y = batch.labels[m, i]
        if t.kind == "binary":
            out.append(F.binary_cross_entropy_with_logits(outputs[m, i], y))
        else:
            out.append(F.mse_loss(outputs[m, i], (y - t.mean) / t.std))
    return out


def test_regression_loss_is_on_the_standardised_target_and_activation_maps_back():
    schema = _scaled_schema()
    batch = make_batch(schema, batch_size=32)
    batch.labels[:, 2] = 300.0 + 120.0 * torch.randn(32)
    outputs = torch.randn(32, 3)
    total, per_task = TaskLoss(schema, TrainConfig())(outputs, batch)
    parts = _parts(schema, outputs, batch)
    assert per_task == pytest.approx([p.item() for p in parts], rel=1e-6)
    assert total.item() == pytest.approx(sum(p.item() for p in parts), rel=1e-6)
    assert per_task[2] < 5  # on the raw scale it would be of order 1e5
    # z = 1.5 means mean + 1.5 std for metrics, export and serving; binary tasks keep the sigmoid
    y = TaskActivation(schema)(torch.tensor([[0.0, 2.0, 1.5]]))
    torch.testing.assert_close(y, torch.tensor([[0.5, 1 / (1 + math.exp(-2.0)), 300.0 + 180.0]]))


def test_fixed_weights_multiply_the_task_losses():
    schema = make_schema()
    batch = make_batch(schema)
    outputs = torch.randn(len(batch), 3)
    total, _ = TaskLoss(schema, TrainConfig(task_weights={"like": 3.0, "watch": 0.5}))(
        outputs, batch
    )
    a, b, c = _parts(schema, outputs, batch)
    assert total.item() == pytest.approx((a + 3 * b + 0.5 * c).item(), rel=1e-6)


def test_uncertainty_weighting_follows_kendall_and_learns_its_log_variances():
    schema = make_schema()
    batch = make_batch(schema)
    outputs = torch.randn(len(batch), 3)
    loss = TaskLoss(schema, TrainConfig(task_weighting="uncertainty"))
    with torch.no_grad():
        loss.log_var.copy_(torch.tensor([0.5, -1.0, 2.0]))
    total, _ = loss(outputs, batch)
    s = [0.5, -1.0, 2.0]
    c = [1.0, 1.0, 0.5]  # 1 / sigma^2 for a classification task, 1 / (2 sigma^2) for regression
    expected = sum(
        ci * math.exp(-si) * p.item() + si / 2
        for ci, si, p in zip(c, s, _parts(schema, outputs, batch), strict=True)
    )
    assert total.item() == pytest.approx(expected, rel=1e-6)
    total.backward()
    assert loss.log_var.grad is not None and (loss.log_var.grad != 0).all()
    assert list(loss.task_scales()) == ["click", "like", "watch"]


def test_normaliser_divides_each_task_by_its_running_loss():
    schema = make_schema()
    loss = TaskLoss(schema, TrainConfig(task_weighting="normalised", task_weights={"like": 2.0}))
    first = make_batch(schema, seed=0)
    out1 = torch.randn(len(first), 3)
    total, _ = loss(out1, first)
    assert total.item() == pytest.approx(1 + 2 + 1, rel=1e-6)  # each L_i / L_i at the first step
    p1 = [p.item() for p in _parts(schema, out1, first)]
    second = make_batch(schema, seed=1)
    out2 = torch.randn(len(second), 3)
    total, _ = loss(out2, second)
    p2 = [p.item() for p in _parts(schema, out2, second)]
    m = [
        NORMALISER_MOMENTUM * a + (1 - NORMALISER_MOMENTUM) * b for a, b in zip(p1, p2, strict=True)
    ]
    expected = p2[0] / m[0] + 2 * p2[1] / m[1] + p2[2] / m[2]
    assert total.item() == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(loss.running, torch.tensor(m))


def test_the_loss_state_is_what_resume_restores():
    schema = make_schema()
    a = TaskLoss(schema, TrainConfig(task_weighting="normalised"))
    a(torch.randn(16, 3), make_batch(schema))
    b = TaskLoss(schema, TrainConfig(task_weighting="normalised"))
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a.running, b.running)
    assert set(TaskLoss(schema, TrainConfig(task_weighting="uncertainty")).state_dict()) >= {
        "log_var"
    }


def test_a_loss_that_does_not_fit_the_task_is_refused():
    with pytest.raises(ValueError, match="train.losses.watch: bce does not fit a regression task"):
        TaskLoss(make_schema(), TrainConfig(losses={"watch": "bce"}))
