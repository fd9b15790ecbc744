"""Initialisation (models/init.py and ModelConfig.embedding_std): Xavier-normal linears with
zero biases and N(0, 1e-4^2) feature tables by default, PyTorch's linears on request, for
every model built through the registry."""

from __future__ import annotations

import math

import pydantic
import pytest
import torch
from tests.helpers import make_schema
from torch import nn

from infnet.data.schema import PAD
from infnet.models import available_models, build_model
from infnet.models.embedding import FeatureEmbedding


def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("name", available_models())
def test_every_linear_is_xavier_normal_with_zero_bias(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, make_schema())
    linears = _linears(model)
    if not linears:
        pytest.skip(f"{name} has no linear layer")
    # the pooled standardised weights of all layers: unit variance iff every layer's std is
    # sqrt(2 / (fan_in + fan_out)); Kaiming-uniform (a = sqrt 5) gives 1/3 * fan ratio
    z = torch.cat(
        [(m.weight / math.sqrt(2 / (m.in_features + m.out_features))).flatten() for m in linears]
    )
    assert z.var().item() == pytest.approx(1.0, abs=0.1)
    assert all(m.bias is None or not m.bias.any() for m in linears)


def test_torch_linear_init_keeps_pytorch_kaiming_uniform() -> None:
    torch.manual_seed(0)
    model = build_model("shared_bottom", make_schema(), {"linear_init": "torch"})
    for m in _linears(model):
        bound = 1 / math.sqrt(m.in_features)  # kaiming_uniform_(a=sqrt(5)) and its bias
        assert m.weight.abs().max() <= bound
        assert m.weight.abs().max() > 0.9 * bound
        assert m.bias is not None and m.bias.any()


@pytest.mark.parametrize("std", [1e-4, 0.01])
def test_feature_tables_follow_embedding_std_and_keep_pad_zero(std: float) -> None:
    torch.manual_seed(0)
    model = build_model("din", make_schema(), {"embedding_std": std, "time_aware": True})
    embeddings = [m for m in model.modules() if isinstance(m, FeatureEmbedding)]
    assert len(embeddings) == 1
    emb = embeddings[0]
    for table in emb.tables:
        assert not table.weight[PAD].any()
        assert table.weight[PAD + 1 :].std().item() == pytest.approx(std, rel=0.25)
    assert emb.positions.weight.std().item() == pytest.approx(std, rel=0.25)
    assert not emb.gaps.weight[0].any()


def test_the_default_is_the_fields_practice_and_a_bad_std_is_refused() -> None:
    config = build_model("mmoe", make_schema()).config
    assert (config.linear_init, config.embedding_std) == ("xavier_normal", 1e-4)
    with pytest.raises(pydantic.ValidationError, match="embedding_std"):
        build_model("mmoe", make_schema(), {"embedding_std": 0})
    with pytest.raises(pydantic.ValidationError, match="linear_init"):
        build_model("mmoe", make_schema(), {"linear_init": "kaiming"})


def test_the_same_seed_builds_the_same_model() -> None:
    def weights(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return [p.detach().clone() for p in build_model("ple", make_schema()).parameters()]

    assert all(torch.equal(a, b) for a, b in zip(weights(3), weights(3), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(weights(3), weights(4), strict=True))
