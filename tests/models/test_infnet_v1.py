"""INFNet v1 (preset v1): today's outputs reproduced (to float rounding), shapes under every ablation
switch, padding invariance, empty histories, gradients, overfitting a small batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.helpers import (
    loss_gradients,
    make_batch,
    make_schema,
    overfit_ratio,
    repeated_items,
    task_loss,
)

from infnet.data.batch import Batch
from infnet.models import build_model
from infnet.models.infnet import INFNet

GOLDEN = Path(__file__).parent / "data" / "infnet_v1_logits.pt"
# the initialisation and v1 defaults of the code that saved them (models/init.py's default
# and the v1 preset's pooling and heads came later)
GOLDEN_INIT = {
    "linear_init": "torch",
    "embedding_std": 0.01,
    "sequence_pooling": "mean",
    "head_hidden": [64],
}

# The ablations of the paper and of the source document, plus the proxy-count variants.
ABLATIONS = {
    "default": {},
    "no_task_tokens": {"use_task_tokens": False},
    "full_attention": {"use_hubs": False},
    "no_homogeneous": {"broadcast": "none"},
    "no_heterogeneous": {"aggregation": False},
    "untyped": {"structured": False},
    "full_attention_no_tasks": {"use_hubs": False, "use_task_tokens": False},
    "proxy_counts": {
        "num_categorical_hubs": 8,
        "sequence_hubs_per_behaviour": 4,
        "num_shared_task_hubs": 3,
    },
    "paper_literal": {
        "sequence_pooling": "sum",
        "gate": "sigmoid",
        "pgu_hubs": "pre",
        "norm": "none",
    },
    "pre_norm_sqrt": {
        "norm": "pre",
        "sequence_pooling": "sqrt",
        "gate": "residual",
        "num_blocks": 3,
    },
}


def _model(config: dict, schema=None, seed: int = 0) -> INFNet:
    torch.manual_seed(seed)
    return build_model("infnet", schema or make_schema(), {"preset": "v1", **config})


@pytest.mark.parametrize("name", ["default", "full_attention", "untyped", "paper_literal"])
def test_preset_v1_reproduces_the_outputs_of_the_v1_code(name: str) -> None:
    # logits of the v1 model (commit 12e6505, before the presets) on a fixed batch, seed 0
    golden = torch.load(GOLDEN)
    batch = Batch(
        **golden["batch"], seq_gap=torch.zeros_like(golden["batch"]["seq_mask"], dtype=torch.long)
    )
    model = _model({**GOLDEN_INIT, **ABLATIONS[name]}, make_schema()).eval()
    with torch.no_grad():
        # 1e-6, not equality: CPUs with other vector units round the same sums apart by
        # ~5e-8 (AMD EPYC against the machine that saved them); a changed model moves 1e-3
        torch.testing.assert_close(model(batch).logits, golden["logits"][name], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_shapes_finite_and_every_parameter_gets_a_gradient(name: str) -> None:
    schema = make_schema()
    batch = make_batch(schema, batch_size=12, empty_rows=3)  # rows 0-2: no history at all
    model = _model(ABLATIONS[name], schema)
    y = model(batch).logits
    assert y.shape == (12, 3)
    assert torch.isfinite(y).all()
    task_loss(model, batch).backward()
    # Parts that nothing downstream reads are not built (e.g. the last block's C~/S~ flows),
    # so every parameter of every switch combination is trained.
    missing = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", ["default", "full_attention", "untyped", "paper_literal"])
def test_padded_sequence_ids_do_not_change_any_output(name: str) -> None:
    schema = make_schema()
    batch = make_batch(schema, batch_size=10, empty_rows=2)
    model = _model(ABLATIONS[name], schema).eval()
    noisy = torch.randint(1, 10, batch.seq_ids.shape) * ~batch.seq_mask.unsqueeze(-1)
    changed = Batch(**{**batch.__dict__, "seq_ids": batch.seq_ids + noisy})
    assert not torch.equal(changed.seq_ids, batch.seq_ids)
    torch.testing.assert_close(model(changed).logits, model(batch).logits, rtol=0, atol=1e-6)
    for key, value in model.attention_maps(batch).items():
        torch.testing.assert_close(model.attention_maps(changed)[key], value, rtol=0, atol=1e-6)


def test_history_does_change_the_output() -> None:
    # Guards the invariance test above against a model that ignores sequences altogether.
    schema = make_schema()
    batch = make_batch(schema, batch_size=8, empty_rows=0)
    model = _model({}, schema).eval()
    shuffled = Batch(
        **{**batch.__dict__, "seq_ids": batch.seq_ids.flip(0), "seq_mask": batch.seq_mask.flip(0)}
    )
    assert (model(shuffled).logits - model(batch).logits).abs().max() > 1e-4


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_shared_histories_give_the_outputs_of_repeated_ones(name: str) -> None:
    # Serving: 4 users' histories given once, read by 11 candidate rows through seq_index,
    # against the same rows with each history repeated (the training form).
    schema = make_schema()
    batch = make_batch(schema, batch_size=11, empty_rows=2)  # users 0, 1 have no history
    model = _model(ABLATIONS[name], schema).eval()
    index = torch.tensor([0, 0, 1, 2, 2, 2, 3, 3, 3, 3, 1])
    repeated = Batch(
        **{**batch.__dict__, "seq_ids": batch.seq_ids[index], "seq_mask": batch.seq_mask[index]}
    )
    compact = Batch(
        **{**batch.__dict__, "seq_ids": batch.seq_ids[:4], "seq_mask": batch.seq_mask[:4]}
    )
    expected = model(repeated).logits
    torch.testing.assert_close(model(compact, index).logits, expected, rtol=0, atol=1e-6)
    assert (model(compact, index.flip(0)).logits - expected).abs().max() > 1e-4  # the index is read
    # without seq_index the positions are embedded once per distinct (behaviour, item):
    # the same sums in another order
    torch.testing.assert_close(
        model(batch, torch.arange(11)).logits, model(batch).logits, rtol=0, atol=1e-6
    )


def test_block_one_task_tokens_read_each_history_once(monkeypatch) -> None:
    # Serving: T and T~ enter block 1 the same in every row, so their flows over S run on
    # the U histories (keys [U, L, d]), not on the B candidate rows; the equality of the
    # outputs is test_shared_histories_give_the_outputs_of_repeated_ones.
    import infnet.models.infnet_v1_block as block_module

    schema = make_schema()
    batch = make_batch(schema, batch_size=11, empty_rows=2)
    model = _model({}, schema).eval()
    compact = Batch(
        **{**batch.__dict__, "seq_ids": batch.seq_ids[:4], "seq_mask": batch.seq_mask[:4]}
    )
    attend_shared, calls = block_module.attend_shared, []

    def recording(attns, queries, key, *args):
        calls.append((len(attns), key.shape[0]))
        return attend_shared(attns, queries, key, *args)

    monkeypatch.setattr(block_module, "attend_shared", recording)
    model(compact, torch.tensor([0, 0, 1, 2, 2, 2, 3, 3, 3, 3, 1]))
    assert (2, 4) in calls  # T and T~ over the 4 histories, in one pass
    calls.clear()
    model(batch)  # training form: every row its own history, no shortcut
    assert all(rows == 11 for _, rows in calls)


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_distinct_tokens_give_the_outputs_and_gradients_of_every_position(name: str) -> None:
    # Training batches embed each distinct (behaviour, item) once and gather it per position
    # (embedding.sequence_tokens); seq_index = identity takes the per-position path.
    batch = repeated_items(make_batch(make_schema(), batch_size=12, empty_rows=2))
    grads = [
        loss_gradients(_model({**ABLATIONS[name], "embedding_std": 0.1}), batch, index)
        for index in (None, torch.arange(12))
    ]
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-6, msg=n)


def test_empty_history_rows_are_finite_forward_and_backward() -> None:
    schema = make_schema()
    batch = make_batch(schema, batch_size=6, empty_rows=6)  # nobody has a history
    assert not batch.seq_mask.any()
    for config in (ABLATIONS["default"], ABLATIONS["full_attention"], ABLATIONS["paper_literal"]):
        model = _model(config, schema)
        loss = task_loss(model, batch)
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        maps = model.attention_maps(batch)
        assert torch.equal(maps["task/sequence"], torch.zeros_like(maps["task/sequence"]))


@pytest.mark.parametrize("name", ["default", "full_attention"])
def test_overfits_a_small_batch(name: str) -> None:
    schema = make_schema()
    batch = make_batch(schema, batch_size=16, seed=3)
    model = _model(ABLATIONS[name], schema)
    assert overfit_ratio(model, batch) < 0.2


def test_model_without_sequences() -> None:
    schema = make_schema(num_behaviours=0)
    batch = make_batch(schema, batch_size=5)
    for config in (ABLATIONS["default"], ABLATIONS["full_attention"], ABLATIONS["untyped"]):
        model = _model(config, schema)
        y = model(batch).logits
        assert y.shape == (5, 3) and torch.isfinite(y).all()
        task_loss(model, batch).backward()
        assert all(p.grad is not None for p in model.parameters())
    maps = _model({}, schema).attention_maps(batch)
    assert set(maps) == {"task/categorical", "shared/categorical"}


def test_attention_maps_are_distributions_over_real_tokens() -> None:
    schema = make_schema()
    batch = make_batch(schema, batch_size=7, empty_rows=2)
    model = _model({}, schema)
    maps = model.attention_maps(batch)
    M, L = schema.num_fields, batch.seq_mask[0].numel()
    assert maps["task/categorical"].shape == (7, 3, M)
    assert maps["shared/sequence"].shape == (7, 2, L)
    torch.testing.assert_close(maps["task/categorical"].sum(-1), torch.ones(7, 3))
    has = batch.seq_mask.flatten(1).any(1)
    torch.testing.assert_close(maps["task/sequence"].sum(-1), has.float().unsqueeze(1).expand(7, 3))
    pad = ~batch.seq_mask.flatten(1)
    assert (maps["task/sequence"].masked_select(pad.unsqueeze(1)) == 0).all()
    full = _model({"use_hubs": False}, schema).attention_maps(batch)
    assert full["task/categorical"].shape == (7, 3, M) and full["task/sequence"].shape == (7, 3, L)


def test_sequence_proxies_pooling_and_segments() -> None:
    schema = make_schema(num_behaviours=1, max_len=4)
    batch = make_batch(schema, batch_size=4)
    for pooling, scale in (
        ("sum", lambda c: 1.0),
        ("mean", lambda c: c),
        ("sqrt", lambda c: c**0.5),
    ):
        model = _model({"sequence_pooling": pooling, "sequence_hubs_per_behaviour": 2}, schema)
        for shared in (False, True):  # distinct tokens gathered, or every position its own
            # S [B, 1, 4, d]; S~ [B, 2, d]: positions {3, 2} (recent), {1, 0}
            s, m, got, _ = model.net._sequence(batch, shared)
            phi = model.net.phi_seq(s) * m.unsqueeze(-1)
            for k, positions in enumerate(([3, 2], [1, 0])):
                count = m[:, 0, positions].sum(1, keepdim=True).float().clamp_min(1)
                want = phi[:, 0, positions].sum(1) / scale(count)
                torch.testing.assert_close(got[:, k], want)


def test_bad_configs_name_the_problem() -> None:
    schema = make_schema(max_len=4)
    with pytest.raises(ValueError, match="num_heads"):
        _model({"embedding_dim": 16, "num_heads": 3}, schema)
    with pytest.raises(ValueError, match="aggregation"):
        _model({"use_hubs": False, "aggregation": False}, schema)
    with pytest.raises(ValueError, match="belongs to preset 'v2'"):
        _model({"fusion": "sum"}, schema)
    with pytest.raises(ValueError, match="'pgu' or 'none'"):
        _model({"broadcast": "bgu"}, schema)
    with pytest.raises(ValueError, match="max_len"):
        _model({"sequence_hubs_per_behaviour": 5}, schema)
    with pytest.raises(ValueError, match="num_blok"):
        _model({"num_bloks": 2}, schema)
