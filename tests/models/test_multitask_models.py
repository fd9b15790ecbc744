"""Multi-task models: Shared-Bottom, MMoE, OMoE, PLE, STEM and the production baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from tests.helpers import kuairand_dir, make_batch, make_schema

from infnet.data.batch import Batch
from infnet.data.loader import PreparedDataset
from infnet.data.schema import Schema
from infnet.data.sources import kuairand
from infnet.models import build_model
from infnet.models.base import MultiTaskModel

MODELS = ["shared_bottom", "mmoe", "omoe", "ple", "stem", "production"]
# Small sizes for the training tests, so the file stays fast on a shared CPU.
SMALL = {
    "shared_bottom": {"bottom_hidden": [64, 32], "tower_hidden": [16]},
    "mmoe": {"num_experts": 4, "expert_hidden": [64, 32], "tower_hidden": [16]},
    "omoe": {"num_experts": 4, "expert_hidden": [64, 32], "tower_hidden": [16]},
    "ple": {"expert_hidden": [64, 32], "tower_hidden": [16]},
    "stem": {"num_levels": 2, "expert_hidden": [64, 32], "tower_hidden": [16]},
    "production": {"expert_hidden": [64, 32], "tower_hidden": [16], "cross_layers": 2},
}


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: intra-op threads only contend on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def task_losses(schema: Schema, out: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Per-task loss [N_task]: BCE on logits for binary tasks, MSE for regression tasks."""
    losses = []
    for k, task in enumerate(schema.tasks):
        y, m = batch.labels[:, k][batch.label_mask[:, k]], out[:, k][batch.label_mask[:, k]]
        fn = F.binary_cross_entropy_with_logits if task.kind == "binary" else F.mse_loss
        losses.append(fn(m, y))
    return torch.stack(losses)


def build(name: str, schema: Schema, small: bool = True, **extra) -> MultiTaskModel:
    torch.manual_seed(0)
    return build_model(name, schema, {**(SMALL[name] if small else {}), **extra})


@pytest.mark.parametrize("num_behaviours", [3, 0])
@pytest.mark.parametrize("name", MODELS)
def test_default_config_builds_and_gives_one_output_per_task(
    name: str, num_behaviours: int
) -> None:
    schema = make_schema(num_behaviours=num_behaviours)
    model = build(name, schema, small=False)
    out = model(make_batch(schema, batch_size=8)).logits
    assert out.shape == (8, schema.num_tasks)
    assert torch.isfinite(out).all()
    # What is read only as pooled means (or order-agnostically) is said, per behaviour.
    notes = model.ignored_inputs()
    assert len(notes) == num_behaviours
    assert all(b in note for b, note in zip(["click", "like", "long_view"], notes, strict=False))


@pytest.mark.parametrize("num_behaviours", [3, 0])
@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_a_gradient(name: str, num_behaviours: int) -> None:
    schema = make_schema(num_behaviours=num_behaviours)
    model = build(name, schema, small=False)
    batch = make_batch(schema, batch_size=32)
    task_losses(schema, model(batch).logits, batch).sum().backward()
    missing = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert missing == []


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", MODELS)
def test_padded_positions_do_not_change_outputs(name: str, train: bool) -> None:
    schema = make_schema()
    # tables N(0, 0.01^2): at the default 1e-4 the outputs sit near zero, where the control
    # below (a real position does change them) drowns in the tolerance
    model = build(name, schema, embedding_std=0.01).train(train)
    batch = make_batch(schema, batch_size=16)
    assert (~batch.seq_mask).any() and batch.seq_mask.any()
    noisy = make_batch(schema, batch_size=16, seed=1).seq_ids  # other (non-zero) ids everywhere
    pad = ~batch.seq_mask.unsqueeze(-1)
    changed = Batch(**{**vars(batch), "seq_ids": torch.where(pad, noisy, batch.seq_ids)})
    assert not torch.equal(changed.seq_ids, batch.seq_ids)
    with torch.no_grad():
        torch.testing.assert_close(model(changed).logits, model(batch).logits, rtol=0, atol=1e-6)
        # ... while a real (unmasked) position does change them.
        real = Batch(**{**vars(batch), "seq_ids": torch.where(pad, batch.seq_ids, noisy)})
        assert not torch.allclose(model(real).logits, model(batch).logits)


@pytest.mark.parametrize("name", MODELS)
def test_rows_with_empty_history_give_finite_outputs(name: str) -> None:
    schema = make_schema()
    model = build(name, schema)
    for empty_rows in (2, 16):  # some rows, then every row, without any history
        batch = make_batch(schema, batch_size=16, empty_rows=empty_rows)
        assert not batch.seq_mask[:empty_rows].any()
        for mode in (model.train, model.eval):
            mode()
            out = model(batch).logits
            assert torch.isfinite(out).all()
        out.sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        model.zero_grad()


@pytest.mark.parametrize("name", MODELS)
def test_overfits_a_small_batch(name: str) -> None:
    schema = make_schema()
    model = build(name, schema)
    batch = make_batch(schema, batch_size=32, seed=3)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    first = None
    for _ in range(150):
        loss = task_losses(schema, model(batch).logits, batch).sum()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        last = task_losses(schema, model(batch).logits, batch).sum().item()
    assert last < first / 10, (first, last)


@pytest.mark.parametrize("name, num_gates", [("mmoe", 3), ("omoe", 1)])
def test_moe_gates_are_softmax_over_the_experts(name: str, num_gates: int) -> None:
    schema = make_schema()
    model = build(name, schema)
    g = model.gate_weights(make_batch(schema, batch_size=16))
    assert g.shape == (16, num_gates, 4)
    assert (g > 0).all()
    torch.testing.assert_close(g.sum(-1), torch.ones(16, num_gates))
    # the gates depend on the input (not one constant mixture)
    assert g[:, 0].std(0).max() > 0


def test_omoe_gives_every_task_the_same_mixture() -> None:
    schema = make_schema()
    model = build("omoe", schema)
    batch = make_batch(schema)
    x = model.embedding.flat_input(batch)
    f, _ = model.moe(x)
    assert f.shape[1] == 1
    expected = torch.cat([t(f[:, 0]) for t in model.towers.towers], dim=-1)
    torch.testing.assert_close(model(batch).logits, expected)


def test_ple_shared_gate_mixes_all_experts_below_the_last_level() -> None:
    schema = make_schema()
    model = build("ple", schema, num_levels=3, num_specific_experts=2, num_shared_experts=3)
    first, middle, last = model.ple.levels
    assert first.shared_gate[-1].out_features == 3 * 2 + 3  # every task's and the shared experts
    assert middle.shared_gate is not None and last.shared_gate is None
    assert all(g[-1].out_features == 2 + 3 for g in last.task_gates)  # own + shared experts


@pytest.mark.parametrize("num_levels", [1, 2])
def test_stem_task_loss_reaches_only_its_own_and_the_shared_embedding(num_levels: int) -> None:
    schema = make_schema()
    model = build("stem", schema, num_levels=num_levels)
    batch = make_batch(schema, batch_size=32)
    out = model(batch).logits
    losses = task_losses(schema, out, batch)
    for i in range(schema.num_tasks):
        params = list(model.shared_embedding.parameters()) + [
            p for e in model.task_embeddings for p in e.parameters()
        ]
        grads = torch.autograd.grad(losses[i], params, retain_graph=True, allow_unused=True)
        grads = [
            torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)
        ]
        n = len(list(model.shared_embedding.parameters()))
        per_set = [grads[:n]] + [
            grads[n + j * n : n + (j + 1) * n] for j in range(schema.num_tasks)
        ]
        norm = [sum(g.abs().sum() for g in gs).item() for gs in per_set]
        assert norm[0] > 0, "shared embedding gets no gradient"
        assert norm[1 + i] > 0, f"task {i}'s own embedding gets no gradient"
        for j in range(schema.num_tasks):
            if j != i:
                assert norm[1 + j] == 0.0, f"task {i}'s loss reaches task {j}'s embedding"


def test_stem_forward_uses_every_tasks_embedding() -> None:
    """All-forward: changing task j's embedding changes task i's output (i != j)."""
    schema = make_schema()
    model = build("stem", schema).eval()
    batch = make_batch(schema)
    with torch.no_grad():
        before = model(batch).logits
        for p in model.task_embeddings[1].parameters():
            p.add_(torch.randn_like(p))
        after = model(batch).logits
    assert not torch.allclose(before[:, 0], after[:, 0])


@pytest.mark.parametrize("name", MODELS)
def test_unknown_config_key_is_an_error_that_names_it(name: str) -> None:
    with pytest.raises(ValidationError, match="num_expertz"):
        build_model(name, make_schema(), {"num_expertz": 4})


@pytest.fixture(scope="session")
def kuairand_prepared(tmp_path_factory) -> PreparedDataset:
    """KuaiRand-Pure prepared once (default options) for every model of this file."""
    data_dir = kuairand_dir()
    out = tmp_path_factory.mktemp("kuairand_multitask") / "prepared"
    kuairand.prepare_kuairand(data_dir, out, progress=False)
    return PreparedDataset(out)


@pytest.mark.parametrize("name", MODELS)
def test_default_model_trains_a_step_on_the_kuairand_schema(
    name: str, kuairand_prepared: PreparedDataset
) -> None:
    data = kuairand_prepared
    schema = data.schema
    model = build(name, schema, small=False)
    batch = data.batch_at("train", np.arange(0, 50_000, 100))  # 500 rows spread over the split
    assert batch.seq_mask.any() and (~batch.seq_mask.any(-1)).any()  # with and without history
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    out = model(batch).logits
    assert out.shape == (len(batch), schema.num_tasks)
    loss = task_losses(schema, out, batch).sum()
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    with torch.no_grad():
        after = task_losses(schema, model(batch).logits, batch).sum()
    assert after < loss
