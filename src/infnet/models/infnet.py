"""INFNet (arXiv 2508.11565), either paper version: preset v1 (default) or v2.

Kuaishou's task-aware Information Flow Network in the design of either version of the
paper: `preset: v1` (infnet_v1.py, the August 2025 paper: proxies,
heterogeneous and homogeneous flows) or `preset: v2` (infnet_v2.py, the January 2026
revision "Aggregate and Broadcast": hubs, aggregate and broadcast phases, width-preserving
sequence tokens). The options and presets are in infnet_config.py; an explicit option
overrides its preset's value.
"""

from __future__ import annotations

import torch

from infnet.data.batch import Batch
from infnet.data.schema import Schema
from infnet.models.base import ModelOutput, MultiTaskModel, register
from infnet.models.infnet_config import INFNetConfig
from infnet.models.infnet_v1 import INFNetV1
from infnet.models.infnet_v2 import INFNetV2

DESIGNS: dict[str, type[MultiTaskModel]] = {"v1": INFNetV1, "v2": INFNetV2}


@register("infnet")
class INFNet(MultiTaskModel):
    """INFNet: the preset's design (`self.net`), one model name for both."""

    Config = INFNetConfig

    def __init__(self, schema: Schema, config: INFNetConfig) -> None:
        super().__init__(schema, config)
        self.net = DESIGNS[config.preset](schema, config)

    def forward(self, batch: Batch, seq_index: torch.Tensor | None = None) -> ModelOutput:
        return self.net(batch, seq_index)

    def attention_maps(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The task tokens' (v1) or task hubs' (v2) attention over the categorical and
        sequence tokens (the designs' docstrings say which block and how they are keyed)."""
        return self.net.attention_maps(batch)
