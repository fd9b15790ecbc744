"""The feature-interaction baselines: LR, FM, DIN, DIEN, DCNv2, GDCN, WuKong, HSTU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.helpers import kuairand_dir, make_batch, make_schema

from infnet.config import ConfigError, validate
from infnet.data.batch import Batch
from infnet.data.loader import PreparedDataset
from infnet.data.schema import Schema
from infnet.data.sources import kuairand
from infnet.models import available_models, build_model, model_class
from infnet.models.base import ModelOutput
from infnet.models.dien import AUGRU, to_right_padding
from infnet.models.embedding import field_tokens
from infnet.models.gdcn import GatedCrossNetwork

MODELS = ["lr", "fm", "din", "dien", "dcnv2", "gdcn", "wukong", "hstu"]
# Dropout off where a test compares two forwards or overfits (HSTU defaults to 0.2).
NO_DROPOUT = {"dropout": 0.0}


def task_loss(model, batch: Batch, output: ModelOutput) -> torch.Tensor:
    out = output.logits
    losses = []
    for i, task in enumerate(model.schema.tasks):
        y, m = batch.labels[:, i], batch.label_mask[:, i]
        if task.kind == "binary":
            losses.append(F.binary_cross_entropy_with_logits(out[m, i], y[m]))
        else:
            losses.append(F.mse_loss(out[m, i], y[m]))
    loss = sum(losses)
    if output.auxiliary_loss is not None:
        loss = loss + output.auxiliary_loss
    return loss


def build(name: str, schema: Schema, **config):
    torch.manual_seed(0)
    return build_model(name, schema, {**NO_DROPOUT, **config})


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/models/conftest.py


@pytest.fixture(params=[3, 0], ids=["sequences", "no_sequences"])
def schema(request) -> Schema:
    return make_schema(num_behaviours=request.param)


def test_every_model_is_registered():
    assert set(MODELS) <= set(available_models())
    with pytest.raises(KeyError, match="did you mean 'gdcn'"):
        model_class("gdcm")


@pytest.mark.parametrize("name", MODELS)
def test_unknown_config_key_is_an_error(name):
    with pytest.raises(
        ConfigError, match="unknown key 'embeding_dim'; did you mean 'embedding_dim'"
    ):
        validate(model_class(name).Config, {"embeding_dim": 8}, where=name)


@pytest.mark.parametrize("name", MODELS)
def test_one_training_step(name, schema):
    model = build(name, schema)
    batch = make_batch(schema, batch_size=32)
    output = model(batch)
    assert output.logits.shape == (32, schema.num_tasks)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = task_loss(model, batch, output)
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert torch.isfinite(task_loss(model, batch, model(batch)))
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_a_gradient(name, schema):
    model = build(name, schema)
    batch = make_batch(schema, batch_size=32)
    task_loss(model, batch, model(batch)).backward()
    missing = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert not missing, f"{name}: parameters without gradient: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_ignored_inputs_are_declared(name):
    model = build(name, make_schema())
    ignored = model.ignored_inputs()
    if name in {"lr", "fm", "din", "dcnv2", "gdcn", "wukong"}:
        assert any("order of the behaviour sequences" in s for s in ignored)
    else:
        assert ignored == []
    assert build(name, make_schema(num_behaviours=0)).ignored_inputs() == []
    if name in {"lr", "fm"}:
        assert build(name, make_schema(), use_history=False).ignored_inputs() == [
            "behaviour sequences (use_history=False)"
        ]


def _repad(batch: Batch, seed: int) -> Batch:
    """The same batch with random ids at every padded position."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(1, 10, batch.seq_ids.shape, generator=g)
    pad = ~batch.seq_mask.unsqueeze(-1)
    return Batch(**{**batch.__dict__, "seq_ids": torch.where(pad, noise, batch.seq_ids)})


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", MODELS)
def test_padded_positions_do_not_change_the_output(name, train):
    schema = make_schema()
    # tables N(0, 0.01^2): at the default 1e-4 the outputs sit near zero, where the control
    # below (a real position does change them) drowns in the tolerance
    model = build(name, schema, embedding_std=0.01).train(train)
    if name == "lr":  # zero-initialised: give the control below something to see
        for p in model.parameters():
            torch.nn.init.normal_(p)
    batch = make_batch(schema, batch_size=32, empty_rows=4)
    noisy = _repad(batch, seed=1)
    assert not torch.equal(noisy.seq_ids, batch.seq_ids)
    torch.testing.assert_close(model(noisy).logits, model(batch).logits, rtol=1e-5, atol=1e-6)

    # Control: the same models do read the valid positions.
    changed = batch.seq_ids.clone()
    changed[..., -1, :] = torch.where(batch.seq_mask[..., -1:], (changed[..., -1, :] % 9) + 1, 0)
    assert not torch.allclose(
        model(Batch(**{**batch.__dict__, "seq_ids": changed})).logits, model(batch).logits
    )


@pytest.mark.parametrize("name", MODELS)
def test_rows_without_history_give_finite_outputs_and_gradients(name):
    schema = make_schema()
    model = build(name, schema)
    batch = make_batch(schema, batch_size=8, empty_rows=8)  # no row has any history
    assert not batch.seq_mask.any()
    output = model(batch)
    assert torch.isfinite(output.logits).all()
    task_loss(model, batch, output).backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    assert torch.isfinite(model(batch).logits).all()


@pytest.mark.parametrize("name", MODELS)
def test_a_small_batch_can_be_overfit(name):
    schema = make_schema()
    model = build(name, schema)
    batch = make_batch(schema, batch_size=16)
    # Linear models take larger steps; 1e-2 is unstable for WuKong's layer norms.
    opt = torch.optim.Adam(model.parameters(), lr=1e-2 if name in {"lr", "fm"} else 3e-3)
    first = task_loss(model, batch, model(batch)).item()
    for _ in range(100):
        opt.zero_grad()
        loss = task_loss(model, batch, model(batch))
        loss.backward()
        opt.step()
    model.eval()
    last = task_loss(model, batch, model(batch)).item()
    assert last < first / 10, f"{name}: loss {first:.3f} -> {last:.3f}"


# --- the papers' equations, on small hand-made inputs ------------------------------------


def test_fm_pairwise_term_is_rendles_sum_over_pairs():
    schema = make_schema()
    model = build("fm", schema)
    torch.nn.init.normal_(model.task_weight)
    batch = make_batch(schema, batch_size=4)
    v = field_tokens(model.embedding, batch)  # [B, n, d]
    n = v.shape[1]
    pairs = sum(v[:, i] * v[:, j] for i in range(n) for j in range(i + 1, n))  # [B, d]
    expected = model.linear(batch) + pairs @ model.task_weight.T
    torch.testing.assert_close(model(batch).logits, expected)


def test_lr_starts_at_zero_and_uses_mean_pooled_history():
    schema = make_schema()
    model = build("lr", schema)
    batch = make_batch(schema, batch_size=4)
    assert torch.equal(model(batch).logits, torch.zeros(4, 3))
    click_video = model.linear.history[0][0]
    torch.nn.init.ones_(click_video.weight)
    has_clicks = batch.seq_mask[:, 0].any(1).float()
    # A mean over the click history of a weight of 1 is 1 for every row with clicks.
    torch.testing.assert_close(model(batch).logits, has_clicks.unsqueeze(1).expand(4, 3))


def test_gated_cross_layer_equation():
    torch.manual_seed(0)
    net = GatedCrossNetwork(6, num_layers=1)
    c0 = torch.randn(5, 6)
    wc, wg, b = net.w_c[0].weight, net.w_g[0].weight, net.b[0]
    torch.testing.assert_close(net(c0), c0 * (c0 @ wc.T + b) * torch.sigmoid(c0 @ wg.T) + c0)


def test_left_padding_is_rotated_to_right_padding():
    x = torch.tensor([[0, 0, 7, 8], [0, 0, 0, 0], [1, 2, 3, 4]]).unsqueeze(-1).float()
    mask = x.squeeze(-1) > 0
    y, m = to_right_padding(x, mask)
    assert y.squeeze(-1).tolist() == [[7, 8, 0, 0], [0, 0, 0, 0], [1, 2, 3, 4]]
    assert m.tolist() == [[True, True, False, False], [False] * 4, [True] * 4]


def test_augru_with_zero_attention_keeps_its_state():
    torch.manual_seed(0)
    cell = AUGRU(3, 5)
    i, mask = torch.randn(2, 4, 3), torch.ones(2, 4, dtype=torch.bool)
    assert torch.equal(cell(i, torch.zeros(2, 4), mask), torch.zeros(2, 5))
    assert cell(i, torch.ones(2, 4), mask).abs().sum() > 0


def test_dien_returns_its_auxiliary_loss_only_in_training():
    schema = make_schema()
    model = build("dien", schema)
    batch = make_batch(schema)
    training = model(batch)
    assert training.auxiliary_loss is not None and training.auxiliary_loss.item() > 0
    model.eval()
    assert model(batch).auxiliary_loss is None
    off = build("dien", schema, aux_loss_alpha=0.0)
    assert off(batch).auxiliary_loss.item() == 0.0


# --- the real KuaiRand-Pure schema -------------------------------------------------------


@pytest.fixture(scope="session")
def kuairand_prepared(tmp_path_factory) -> PreparedDataset:
    """KuaiRand-Pure prepared once (default options) for every model of this file."""
    out = tmp_path_factory.mktemp("kuairand_interaction") / "prepared"
    kuairand.prepare_kuairand(kuairand_dir(), out, progress=False)
    return PreparedDataset(out)


@pytest.mark.parametrize("name", MODELS)
def test_default_model_trains_a_step_on_the_kuairand_schema(name, kuairand_prepared):
    data = kuairand_prepared
    torch.manual_seed(0)
    model = build_model(name, data.schema)  # the default config, as a user gets it
    batch = data.batch_at("train", np.arange(0, 50_000, 100))  # 500 rows spread over the split
    assert batch.seq_mask.any() and (~batch.seq_mask.any(-1)).any()  # with and without history
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            loss = task_loss(model, batch, model(batch)).item()
        model.train()
        return loss

    before = eval_loss()
    output = model(batch)
    assert output.logits.shape == (500, data.schema.num_tasks)
    loss = task_loss(model, batch, output)
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert eval_loss() < before
    if name in {"din", "dien", "hstu"}:
        model.eval()
        torch.testing.assert_close(
            model(_repad(batch, seed=2)).logits, model(batch).logits, rtol=1e-5, atol=1e-6
        )
