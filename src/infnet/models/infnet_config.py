"""INFNet's options and its two presets: `v1` (arXiv 2508.11565v1, the code of infnet_v1.py)
and `v2` (the revised paper, "Aggregate and Broadcast", infnet_v2.py).

A preset fills every option the config does not give; an explicit option overrides it.
Options that only one preset's design has are None under the other preset (the resolved
config in `config.json` shows them as null), and setting one there is an error that names
the preset it belongs to.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from infnet.models.base import SequenceModelConfig

Preset = Literal["v1", "v2"]
DEFAULT_PRESET: Preset = "v1"

# Per preset, the values of the options whose default depends on it.
PRESETS: dict[str, dict[str, Any]] = {
    "v1": {
        "num_categorical_hubs": 4,  # m
        "num_shared_task_hubs": 2,  # N_s
        "broadcast": "pgu",
        "sequence_pooling": "sqrt",
        "head_hidden": [256, 128],
        "gate": "2sigmoid",
        "pgu_hubs": "post",
        "residual": True,
        "norm": "pre",
        "structured": True,
    },
    "v2": {
        "num_categorical_hubs": 16,  # n_c
        "num_shared_task_hubs": 4,
        "head_hidden": [64],
        "broadcast": "bgu",
        "hub_init": "mlp",
        "fusion": "concat_linear",
        "task_hubs": "hybrid",
        "bgu_form": "affine",
        "hub_views": "all",
        "input_norm": True,
        "candidate_hub": False,
        "wide_heads": False,
    },
}
ONLY = {
    name: preset
    for preset, values in PRESETS.items()
    for name in values
    if not all(name in other for other in PRESETS.values())
}


class INFNetConfig(SequenceModelConfig):
    """Every option of INFNet; `preset` picks the design and the defaults (module docstring).
    The meaning of each option is in the docstring of the preset's model file."""

    preset: Preset = DEFAULT_PRESET
    embedding_dim: int = 16
    num_blocks: int = Field(default=2, ge=1)
    num_heads: int = Field(default=2, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    num_categorical_hubs: int = Field(default=0, ge=1)  # filled by the preset
    sequence_hubs_per_behaviour: int = Field(default=1, ge=1)  # v1: k recency segments
    num_shared_task_hubs: int = Field(default=0, ge=1)
    hub_hidden: list[int] = Field(default_factory=lambda: [64])  # MLPs that build hubs
    gate_hidden: list[int] = Field(default_factory=lambda: [32])  # PGU / BGU MLPs
    head_hidden: list[int] = Field(default_factory=list)  # MLP_i; filled by the preset
    # the ablation switches of both designs
    use_task_tokens: bool = True
    use_hubs: bool = True  # false: full self-attention over all tokens (the quadratic reference)
    aggregation: bool = True  # v1: the heterogeneous flow
    broadcast: Literal["pgu", "bgu", "none"] = "bgu"  # v1: the homogeneous flow (pgu or none)
    # v1 only
    sequence_pooling: Literal["sum", "mean", "sqrt"] | None = None
    gate: Literal["sigmoid", "2sigmoid", "residual"] | None = None
    pgu_hubs: Literal["pre", "post"] | None = None
    residual: bool | None = None
    norm: Literal["none", "pre", "post"] | None = None
    structured: bool | None = None
    # v2 only (and its project extensions, off in the preset)
    hub_init: Literal["mlp", "mean", "random"] | None = None
    fusion: Literal["sum", "concat_linear"] | None = None
    task_hubs: Literal["shared", "hybrid", "specific"] | None = None
    bgu_form: Literal["affine", "scale", "shift"] | None = None
    hub_views: Literal["others", "all"] | None = None
    input_norm: bool | None = None  # LayerNorm of C and S before the first block
    candidate_hub: bool | None = None
    wide_heads: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = data.get("preset", DEFAULT_PRESET)
        if preset not in PRESETS:
            return data  # the Literal check names the valid presets
        given = {k: v for k, v in data.items() if v is not None}
        for name in given:
            if ONLY.get(name, preset) != preset:
                raise ValueError(
                    f"option {name!r} belongs to preset {ONLY[name]!r}; this config has preset "
                    f"{preset!r}"
                )
        return {**PRESETS[preset], **given}

    @model_validator(mode="after")
    def _check(self) -> INFNetConfig:
        if self.embedding_dim % self.num_heads:
            raise ValueError(
                f"embedding_dim ({self.embedding_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.preset == "v1" and self.broadcast == "bgu":
            raise ValueError("broadcast 'bgu' is a v2 design; preset v1 takes 'pgu' or 'none'")
        if not self.use_hubs and not self.aggregation:
            raise ValueError(
                "use_hubs=false replaces the aggregation by full attention; it needs aggregation=true"
            )
        if self.use_task_tokens and not self.aggregation and self.broadcast == "none":
            raise ValueError(
                "with both aggregation and broadcast off the task tokens never see the "
                "input; keep one of them on or set use_task_tokens=false"
            )
        if self.preset == "v2" and (self.candidate_hub or self.wide_heads) and not self.use_hubs:
            raise ValueError("candidate_hub and wide_heads are hubs; they need use_hubs=true")
        if self.candidate_hub and (self.broadcast == "none" or not self.use_task_tokens):
            raise ValueError(
                "the candidate hub reaches the heads through the task tokens' broadcast; it "
                "needs use_task_tokens=true and broadcast 'bgu' or 'pgu'"
            )
        return self
