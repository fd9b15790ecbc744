"""Initialisation of the dense layers, the field's practice.

FuxiCTR (BaseModel.init_weights) and DeepCTR initialise every linear layer Xavier-normal
with a zero bias, and the feature tables N(0, 1e-4^2) (ModelConfig.embedding_std, applied by
FeatureEmbedding). PyTorch's own default, Kaiming-uniform with a = sqrt(5) and a uniform
bias, is kept by `linear_init="torch"`. Parameters that are not nn.Linear weights (hubs,
task tokens, gates) keep the initialisation their module chose.
"""

from __future__ import annotations

from typing import Literal

from torch import nn


def initialise_linears(model: nn.Module, linear_init: Literal["xavier_normal", "torch"]) -> None:
    if linear_init == "torch":
        return
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
