"""Checkpoints: a state dict plus the JSON config and schema it belongs to, and
`load_model`, the one way a trained model comes back (training's evaluation and resume,
export, the eager server).

Files are read with `torch.load(..., weights_only=True)`; anything that does not load,
or loads but does not fit the model or the data at hand, is refused with a message that
names the file and what differs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from infnet.config import validate
from infnet.data.schema import Schema, schema_differences
from infnet.models import build_model, model_class
from infnet.models.base import MultiTaskModel

FORMAT = 1


class CheckpointError(ValueError):
    pass


def save_checkpoint(
    path: str | Path, state: dict[str, Any], *, config: dict, schema: Schema
) -> None:
    """Write atomically (temporary file + rename) so an interruption never leaves half a file."""
    path = Path(path)
    payload = {"format": FORMAT, "config": json.dumps(config), "schema": schema.to_json(), **state}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt file
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {err})"
        ) from None
    missing = [k for k in ("format", "config", "schema", "model") if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: not an infnet checkpoint (missing {missing})")
    if payload["format"] != FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {payload['format']} is not supported (expected {FORMAT})"
        )
    payload["config"] = json.loads(payload["config"])
    payload["schema"] = Schema.from_json(payload["schema"])
    return payload


def check_compatible(path: str | Path, saved: Schema, current: Schema) -> None:
    diffs = schema_differences(saved, current)
    if diffs:
        raise CheckpointError(
            f"{path}: checkpoint does not match the data:\n  " + "\n  ".join(diffs)
        )


def load_state_strict(
    path: str | Path, module: torch.nn.Module, state: dict[str, torch.Tensor]
) -> None:
    """`load_state_dict` with a message naming the file and the parameters that differ."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: {tuple(state[k].shape)} in checkpoint, {tuple(v.shape)} in model"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing parameters {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(
                f"unexpected parameters {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
            )
        parts += shapes[:8]
        raise CheckpointError(
            f"{path}: checkpoint does not match the model:\n  " + "\n  ".join(parts)
        )
    module.load_state_dict(state)


def load_model(path: str | Path, schema: Schema) -> tuple[MultiTaskModel, dict[str, Any]]:
    """The model a checkpoint holds, built from the checkpoint's own config (model name and
    options), checked against `schema` and loaded strictly, in eval mode; and that config."""
    state = load_checkpoint(path)
    check_compatible(path, state["schema"], schema)
    config = state["config"]
    name = config.get("model")
    if not isinstance(name, str):
        raise CheckpointError(f"{path}: the checkpoint's config names no model")
    options = validate(
        model_class(name).Config, config.get("model_options", {}), where=f"{path}: model_options"
    )
    model = build_model(name, schema, options)
    load_state_strict(path, model, state["model"])
    return model.eval(), config
