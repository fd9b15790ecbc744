"""Checkpoints: a state dict plus the JSON config and schema it belongs to.

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

from infnet.data.schema import Schema

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


def schema_differences(saved: Schema, current: Schema) -> list[str]:
    """What a model trained on `saved` would get wrong on data described by `current`."""
    diffs = []
    a, b = {f.name: f for f in saved.fields}, {f.name: f for f in current.fields}
    if list(a) != list(b):
        diffs.append(
            f"fields differ: only in checkpoint {sorted(set(a) - set(b))}, only in data {sorted(set(b) - set(a))}"
            if set(a) != set(b)
            else "field order differs"
        )
    diffs += [
        f"field {n!r}: vocab_size {a[n].vocab_size} in checkpoint, {b[n].vocab_size} in data"
        for n in a
        if n in b and a[n].vocab_size != b[n].vocab_size
    ]
    diffs += [
        f"field {n!r}: bucket boundaries differ"
        for n in a
        if n in b and a[n].boundaries != b[n].boundaries
    ]
    if saved.sequences != current.sequences:
        diffs.append(
            f"sequences differ: {saved.sequences} in checkpoint, {current.sequences} in data"
        )
    if [(t.name, t.kind) for t in saved.tasks] != [(t.name, t.kind) for t in current.tasks]:
        diffs.append(
            f"tasks differ: {[t.name for t in saved.tasks]} in checkpoint, {[t.name for t in current.tasks]} in data"
        )
    return diffs


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
