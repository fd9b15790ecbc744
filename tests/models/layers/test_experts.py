"""Experts and gates: the gated mixture, PLE's levels and STEM's gradient stops."""

from __future__ import annotations

import torch

from infnet.models.layers.experts import (
    ExtractionNetwork,
    ProgressiveLayeredExtraction,
    gated_mixture,
)
from infnet.models.stem import STEMLevel


def test_gated_mixture_is_the_softmax_weighted_sum():
    logits = torch.tensor([[0.0, 1.0, 2.0]])
    experts = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[2.0, 2.0]])]
    w = logits.softmax(-1)[0]
    want = w[0] * experts[0] + w[1] * experts[1] + w[2] * experts[2]
    torch.testing.assert_close(gated_mixture(logits, experts), want)


def test_ple_levels_gate_their_own_and_the_shared_experts():
    torch.manual_seed(0)
    level = ExtractionNetwork(4, 2, 2, 1, [6], [], 0.0, final=False)
    assert [g[-1].out_features for g in level.task_gates] == [3, 3]  # 2 own + 1 shared
    assert level.shared_gate[-1].out_features == 5  # every expert
    x = [torch.randn(3, 4), torch.randn(3, 4)]
    task_out, shared_out = level(x, torch.randn(3, 4))
    assert [t.shape for t in task_out] == [(3, 6)] * 2 and shared_out.shape == (3, 6)
    final = ExtractionNetwork(4, 2, 2, 1, [6], [], 0.0, final=True)
    assert final.shared_gate is None and final(x, x[0])[1] is None
    ple = ProgressiveLayeredExtraction(4, 2, 2, 1, 1, [6, 5], [])
    assert [t.shape for t in ple(torch.randn(3, 4))] == [(3, 5)] * 2


def test_stem_task_gate_reads_other_tasks_experts_without_their_gradient():
    torch.manual_seed(0)
    level = STEMLevel(4, 2, 1, 1, [6], [], 0.0, final=True)
    assert [g[-1].out_features for g in level.task_gates] == [3, 3]  # every expert
    task_out, _ = level([torch.randn(3, 4), torch.randn(3, 4)], torch.randn(3, 4))
    task_out[0].sum().backward()  # task 0's loss
    assert all(p.grad is None for p in level.specific[1].parameters())  # task 1's expert
    assert any(p.grad is not None for p in level.specific[0].parameters())
