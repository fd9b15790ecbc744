"""INFNet v2 (preset v2): the presets and their overrides, every ablation and extension
trains every parameter, padding and shared histories change nothing, width-preserving sequence tokens, attention maps, bad configs."""

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

from infnet.config import ConfigError, validate
from infnet.data.batch import Batch
from infnet.data.schema import SequenceSpec
from infnet.models import build_model
from infnet.models.infnet import INFNet
from infnet.models.infnet_config import PRESETS, INFNetConfig
from infnet.models.infnet_v2 import Block

VARIANTS = {
    "default": {},
    "-aggregation": {"aggregation": False},
    "-broadcast": {"broadcast": "none"},
    "-hubs": {"use_hubs": False},
    "-task": {"use_task_tokens": False},
    "-task -broadcast": {"use_task_tokens": False, "broadcast": "none"},
    "hub_init=mean": {"hub_init": "mean"},
    "hub_init=random": {"hub_init": "random"},
    "fusion=sum": {"fusion": "sum"},
    "task_hubs=shared": {"task_hubs": "shared"},
    "task_hubs=specific": {"task_hubs": "specific"},
    "broadcast=pgu": {"broadcast": "pgu"},
    "bgu_form=scale": {"bgu_form": "scale"},
    "bgu_form=shift": {"bgu_form": "shift"},
    "hub_views=others": {"hub_views": "others", "num_blocks": 3},
    "n_s=4, n_c=8": {"sequence_hubs_per_behaviour": 4, "num_categorical_hubs": 8},
    "candidate hub": {"candidate_hub": True},
    "wide heads": {"wide_heads": True},
    "time-aware": {"time_aware": True},
    "all extensions": {"candidate_hub": True, "wide_heads": True, "time_aware": True},
    "one block": {"num_blocks": 1},
}


GOLDEN = Path(__file__).parent / "data" / "infnet_v2_logits.pt"
# the initialisation of the code that saved them (models/init.py's default came later)
GOLDEN_INIT = {"linear_init": "torch", "embedding_std": 0.01}


def _model(config: dict, schema=None, seed: int = 0) -> INFNet:
    torch.manual_seed(seed)
    return build_model("infnet", schema or make_schema(), {"preset": "v2", **config})


@pytest.mark.parametrize("name", list(VARIANTS))
def test_outputs_equal_those_before_the_speed_work(name: str) -> None:
    # logits of every variant on a fixed batch, seed 0, saved in another process from
    # commit 681c82f (before the shared attention passes and the pooled hub MLPs) with the
    # blocks built in a fixed order: the speed work changes no output, and the same seed
    # gives the same model whatever the process's string hashing
    golden = torch.load(GOLDEN)
    model = _model({**GOLDEN_INIT, **VARIANTS[name]}).eval()
    with torch.no_grad():
        got = model(Batch(**golden["batch"])).logits
    torch.testing.assert_close(got, golden["logits"][name], rtol=0, atol=1e-6)


def test_preset_fills_every_option_and_an_explicit_one_overrides_it() -> None:
    v2 = INFNetConfig(preset="v2")
    assert v2.num_categorical_hubs == 16 and v2.num_shared_task_hubs == 4
    assert (v2.broadcast, v2.fusion, v2.task_hubs, v2.hub_views) == (
        "bgu",
        "concat_linear",
        "hybrid",
        "all",
    )
    assert v2.norm is None and v2.structured is None  # v1-only options: not applicable
    v1 = INFNetConfig(preset="v1")
    assert (v1.num_categorical_hubs, v1.broadcast, v1.norm, v1.fusion) == (4, "pgu", "pre", None)
    # the heads' depth is the preset's: v1's chosen on KuaiRand, v2's as before
    assert (v1.head_hidden, v1.sequence_pooling, v2.head_hidden) == ([256, 128], "sqrt", [64])
    override = INFNetConfig(preset="v2", num_categorical_hubs=8, fusion="sum")
    assert (override.num_categorical_hubs, override.fusion, override.bgu_form) == (
        8,
        "sum",
        "affine",
    )
    # the resolved config round-trips: every field written, the same config read back
    dumped = override.model_dump(mode="json")
    assert set(dumped) == set(INFNetConfig.model_fields)
    assert INFNetConfig.model_validate(dumped) == override
    assert set(PRESETS["v2"]) <= set(dumped)


def test_unknown_preset_or_value_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="'v1' or 'v2'"):
        validate(INFNetConfig, {"preset": "v3"})
    with pytest.raises(ConfigError, match="'affine', 'scale' or 'shift'"):
        validate(INFNetConfig, {"preset": "v2", "bgu_form": "gated"})
    with pytest.raises(ConfigError, match="belongs to preset 'v1'"):
        validate(INFNetConfig, {"preset": "v2", "norm": "post"})


@pytest.mark.parametrize("name", list(VARIANTS))
def test_shapes_finite_and_every_parameter_gets_a_gradient(name: str) -> None:
    schema = make_schema()
    batch = make_batch(schema, batch_size=12, empty_rows=3)
    model = _model(VARIANTS[name], schema)
    y = model(batch).logits
    assert y.shape == (12, 3) and torch.isfinite(y).all()
    task_loss(model, batch).backward()
    # parts nothing reads are not built (the last block's C and S broadcasts; without
    # broadcast the C and S hubs), so every parameter is trained
    missing = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert missing == []


@pytest.mark.parametrize("name", ["default", "-hubs", "hub_init=mean", "all extensions"])
def test_padded_positions_do_not_change_any_output(name: str) -> None:
    schema = make_schema()
    batch = make_batch(schema, batch_size=10, empty_rows=2)
    model = _model(VARIANTS[name], schema).eval()
    pad = ~batch.seq_mask
    changed = Batch(
        **{
            **batch.__dict__,
            "seq_ids": batch.seq_ids
            + torch.randint(1, 10, batch.seq_ids.shape) * pad.unsqueeze(-1),
            "seq_gap": batch.seq_gap + torch.randint(1, 20, batch.seq_gap.shape) * pad,
        }
    )
    torch.testing.assert_close(model(changed).logits, model(batch).logits, rtol=0, atol=1e-6)


def test_history_and_time_gaps_change_the_output() -> None:
    schema = make_schema()
    batch = make_batch(schema, batch_size=8, empty_rows=0)
    shuffled = Batch(
        **{**batch.__dict__, "seq_ids": batch.seq_ids.flip(0), "seq_mask": batch.seq_mask.flip(0)}
    )
    older = Batch(
        **{**batch.__dict__, "seq_gap": (batch.seq_gap + 3).clamp_max(23) * batch.seq_mask}
    )
    plain, timed = _model({}).eval(), _model({"time_aware": True}).eval()
    assert (plain(shuffled).logits - plain(batch).logits).abs().max() > 1e-4
    assert torch.equal(plain(older).logits, plain(batch).logits)  # gaps unread
    assert (timed(older).logits - timed(batch).logits).abs().max() > 1e-5


@pytest.mark.parametrize(
    "name", ["default", "-hubs", "-broadcast", "all extensions", "hub_init=mean"]
)
def test_shared_histories_give_the_outputs_of_repeated_ones(name: str) -> None:
    schema = make_schema()
    batch = make_batch(schema, batch_size=11, empty_rows=2)
    model = _model(VARIANTS[name], schema).eval()
    index = torch.tensor([0, 0, 1, 2, 2, 2, 3, 3, 3, 3, 1])
    history = ("seq_ids", "seq_mask", "seq_gap")
    repeated = Batch(**{**batch.__dict__, **{k: getattr(batch, k)[index] for k in history}})
    compact = Batch(**{**batch.__dict__, **{k: getattr(batch, k)[:4] for k in history}})
    expected = model(repeated).logits
    torch.testing.assert_close(model(compact, index).logits, expected, rtol=0, atol=1e-6)
    assert (model(compact, index.flip(0)).logits - expected).abs().max() > 1e-5


def test_empty_histories_and_no_sequences_are_finite() -> None:
    schema = make_schema()
    empty = make_batch(schema, batch_size=6, empty_rows=6)
    for config in ({}, {"use_hubs": False}, {"candidate_hub": True, "time_aware": True}):
        model = _model(config, schema)
        loss = task_loss(model, empty)
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    flat = make_schema(num_behaviours=0)
    for config in ({}, {"use_hubs": False}, {"wide_heads": True}):
        y = _model(config, flat)(make_batch(flat, batch_size=5)).logits
        assert y.shape == (5, 3) and torch.isfinite(y).all()
    with pytest.raises(ValueError, match="candidate_hub reads the behaviour sequences"):
        _model({"candidate_hub": True}, flat)


def test_sequence_tokens_keep_their_width_through_every_block() -> None:
    # item-level tokens survive: every block hands on S at [B, L, d], never a pooled S
    schema = make_schema()
    batch = make_batch(schema, batch_size=4)
    model = _model({"num_blocks": 3})
    seen = []
    for block in model.net.blocks:
        block.register_forward_hook(lambda m, args, out: seen.append(out[0]["sequence"].shape))
    model(batch)
    L = schema.num_behaviours * schema.sequences.max_len
    assert seen == [torch.Size([4, L, 16])] * 3
    assert isinstance(model.net.blocks[0], Block)
    assert set(model.net.blocks[0].broadcast) == {"categorical", "sequence", "task"}
    assert set(model.net.blocks[-1].broadcast) == {"task"}  # the last block: what heads read


def test_candidate_hub_reads_only_the_sequence_and_the_heads_widen() -> None:
    model = _model({"candidate_hub": True, "wide_heads": True})
    first = model.net.blocks[0]
    assert first.aggregate["candidate"].views == ["sequence"]
    assert "candidate" in first.reads["task"]
    assert model.net.heads[0][0].in_features == 16 + 16 * 16 + 3 * 16  # T_i, H_C, H_cand


def test_attention_maps_are_distributions_over_real_tokens() -> None:
    schema = make_schema()
    batch = make_batch(schema, batch_size=7, empty_rows=2)
    maps = _model({}, schema).attention_maps(batch)
    M, L = schema.num_fields, batch.seq_mask[0].numel()
    assert maps["task/categorical"].shape == (7, 3, M)
    assert maps["shared/sequence"].shape == (7, 4, L)
    torch.testing.assert_close(maps["task/categorical"].sum(-1), torch.ones(7, 3))
    has = batch.seq_mask.flatten(1).any(1).float().unsqueeze(1).expand(7, 3)
    torch.testing.assert_close(maps["task/sequence"].sum(-1), has)
    with pytest.raises(ValueError, match="hub_views"):
        _model({"hub_views": "others"}, schema).attention_maps(batch)


def test_overfits_a_small_batch() -> None:
    schema = make_schema()
    batch = make_batch(schema, batch_size=16, seed=3)
    model = _model({"wide_heads": True}, schema)
    assert overfit_ratio(model, batch) < 0.2


def test_bad_configs_name_the_problem() -> None:
    schema = make_schema(max_len=4)
    with pytest.raises(ValueError, match="num_heads"):
        _model({"num_heads": 3}, schema)
    with pytest.raises(ValueError, match="need use_hubs=true"):
        _model({"use_hubs": False, "wide_heads": True}, schema)
    with pytest.raises(ValueError, match="task tokens' broadcast"):
        _model({"candidate_hub": True, "broadcast": "none"}, schema)
    with pytest.raises(ValueError, match="never see the input"):
        _model({"aggregation": False, "broadcast": "none"}, schema)
    prebuilt = make_schema()
    prebuilt.sequences = SequenceSpec(**{**prebuilt.sequences.model_dump(), "prebuilt": ["like"]})
    with pytest.raises(ValueError, match="behaviour 'like' comes from a pre-built history"):
        _model({"time_aware": True}, prebuilt)


@pytest.mark.parametrize("name", [*VARIANTS, "input_norm=false"])
def test_distinct_tokens_give_the_outputs_and_gradients_of_every_position(name: str) -> None:
    # as v1's: distinct (behaviour, item) tokens gathered, against seq_index = identity
    options = VARIANTS.get(name, {"input_norm": False})
    batch = repeated_items(make_batch(make_schema(), batch_size=12, empty_rows=2))
    grads = [
        loss_gradients(_model({**options, "embedding_std": 0.1}), batch, index)
        for index in (None, torch.arange(12))
    ]
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-6, msg=n)
