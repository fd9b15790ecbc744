"""`infnet export`: a trained run -> a self-contained model directory for the server.

    MODEL_DIR/model.onnx     forward over (categorical, seq_ids, seq_mask) -> scores [B, N_task]:
                             probabilities for binary tasks, values for regression tasks;
                             the batch axis is dynamic. A model with `shared_histories`
                             (INFNet) takes the histories once per user: seq_ids [U, F, n, K],
                             seq_mask [U, F, n] and seq_index int64 [B] (row -> history), so
                             a request's K candidates do not repeat (nor recompute) the history
    MODEL_DIR/weights.pt     the checkpoint (state dict, run config, schema), for --eager
    MODEL_DIR/schema.json    the prepared dataset's schema
    MODEL_DIR/vocab/         its vocabularies (the server encodes context values with them)
    MODEL_DIR/config.json    the run config
    MODEL_DIR/version.json   version id (model, weights hash, export time), vocabulary
                             fingerprint, ONNX Runtime vs eager parity on real batches

The ONNX graph is checked against eager PyTorch on real rows of the test split, at two
batch sizes (so a batch size baked into the graph is caught) and with the histories
emptied (so a traced branch on the history is caught), and with rows sharing histories
(the compact form against each row's history repeated, in eager PyTorch); a graph that
differs by more than `atol` is refused (the next exporter is tried), and so is one that does not export
at all: such a model is exported with `onnx=False` and served with `--eager`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from infnet.data import layout
from infnet.data.batch import Batch
from infnet.data.fingerprint import vocab_fingerprint
from infnet.fsutil import atomic_directory
from infnet.models.base import MultiTaskModel
from infnet.training.checkpoint import save_checkpoint

ONNX_FILE = "model.onnx"
WEIGHTS_FILE = "weights.pt"
CONFIG_FILE = "config.json"
VERSION_FILE = "version.json"
INPUTS = ("categorical", "seq_ids", "seq_mask", "seq_index")
# auto: the TorchScript tracer first (seconds), the dynamo exporter when its graph fails
# the parity check or does not export (it traces what the tracer cannot, but takes minutes
# on a busy CPU)
EXPORTERS = {
    "auto": ("torchscript", "dynamo"),
    "torchscript": ("torchscript",),
    "dynamo": ("dynamo",),
}


class ExportError(ValueError):
    pass


class ScoringModule(nn.Module):
    """The model's forward over the Batch tensors a request provides, with the task
    activations applied: sigmoid for binary tasks, identity for regression tasks.

    seq_index int64 [B] maps each row to its history (a row of seq_ids, seq_mask); a model
    with `shared_histories` reads the U histories once, any other reads them gathered per row.
    """

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model
        schema = model.schema
        self.register_buffer("binary", torch.tensor([t.kind == "binary" for t in schema.tasks]))
        seq = schema.sequences
        # [F, n, K] of a schema without sequences: F = 0 (what the loader gives)
        self.seq_shape = (
            (len(seq.behaviours), seq.max_len, len(seq.side_fields)) if seq else (0, 1, 1)
        )
        self.shared_histories = model.shared_histories

    def forward(
        self,
        categorical: torch.Tensor,  # int64 [B, M]
        seq_ids: torch.Tensor | None = None,  # int64 [B, F, n, K] ([U, ...] with seq_index)
        seq_mask: torch.Tensor | None = None,  # bool [B, F, n] ([U, ...] with seq_index)
        seq_index: torch.Tensor | None = None,  # int64 [B]: the history each row reads
    ) -> torch.Tensor:  # float32 [B, N_task]
        B, T = categorical.shape[0], self.binary.shape[0]
        if seq_index is not None and not self.shared_histories:
            seq_ids, seq_mask = (
                seq_ids.index_select(0, seq_index),
                seq_mask.index_select(0, seq_index),
            )
            seq_index = None
        if seq_ids is None:
            seq_ids = categorical.new_zeros((B, *self.seq_shape))
            seq_mask = torch.zeros(
                (B, *self.seq_shape[:2]), dtype=torch.bool, device=categorical.device
            )
        batch = Batch(
            categorical=categorical,
            seq_ids=seq_ids,
            seq_mask=seq_mask,
            labels=torch.zeros((B, T), device=categorical.device),
            label_mask=torch.ones((B, T), dtype=torch.bool, device=categorical.device),
            user=categorical.new_zeros(B),
        )
        out = self.model(batch) if seq_index is None else self.model(batch, seq_index)
        return torch.where(self.binary, torch.sigmoid(out), out)


def input_names(module: ScoringModule) -> list[str]:
    """The graph's inputs: categorical, then the histories (per row, or once per user)."""
    if module.model.schema.sequences is None:
        return list(INPUTS[:1])
    return list(INPUTS if module.shared_histories else INPUTS[:3])


def shared_histories(batch: Batch, users: int) -> tuple[Batch, torch.Tensor]:
    """The batch's rows reading U = `users` histories round robin (row b reads history
    b % U of the batch's first U): (the batch with seq_ids [U, F, n, K] and seq_mask
    [U, F, n], seq_index [B])."""
    compact = Batch(
        **{**batch.__dict__, "seq_ids": batch.seq_ids[:users], "seq_mask": batch.seq_mask[:users]}
    )
    return compact, torch.arange(len(batch)) % users


def _args(batch: Batch, names: list[str], seq_index: torch.Tensor | None) -> tuple:
    """The graph inputs of a batch whose rows read seq_index's histories (None: their own)."""
    if seq_index is None:
        seq_index = torch.arange(len(batch))
    full = {
        "categorical": batch.categorical,
        "seq_ids": batch.seq_ids,
        "seq_mask": batch.seq_mask,
        "seq_index": seq_index,
    }
    if "seq_index" not in names:  # per-row histories
        full |= {"seq_ids": batch.seq_ids[seq_index], "seq_mask": batch.seq_mask[seq_index]}
    return tuple(full[n] for n in names)


def weights_hash(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def export_onnx(module: ScoringModule, example: Batch, path: Path, exporter: str) -> None:
    """torch.onnx.export with a dynamic batch axis: the dynamo exporter (torch.export) or the
    TorchScript tracer (much faster to run, and checked just the same by onnx_parity)."""
    names = input_names(module)
    # histories shared by 4 rows each, so the graph keeps B and U apart
    index = torch.arange(len(example)) // 4 if "seq_index" in names else None
    args = _args(example, names, index)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                batch = torch.export.Dim("batch", min=1, max=1 << 20)
                users = (
                    torch.export.Dim("users", min=1, max=1 << 20) if index is not None else batch
                )
                axes = {
                    "categorical": batch,
                    "seq_ids": users,
                    "seq_mask": users,
                    "seq_index": batch,
                }
                dynamic = {"dynamic_shapes": {n: {0: axes[n]} for n in names}}
            else:
                axes = {n: "batch" for n in [*names, "scores"]}
                if index is not None:
                    axes |= {"seq_ids": "users", "seq_mask": "users"}
                dynamic = {"dynamic_axes": {n: {0: a} for n, a in axes.items()}}
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=exporter == "dynamo",
                input_names=names,
                output_names=["scores"],
                verbose=False,
                **dynamic,
            )
    except Exception as err:
        raise ExportError(
            f"ONNX export ({exporter}) of model {module.model.name!r} failed ({type(err).__name__}: {str(err)[:500]})"
        ) from None
    finally:
        quiet.setLevel(level)


def onnx_parity(
    module: ScoringModule,
    path: Path,
    batches: list[Batch | tuple[Batch, torch.Tensor]],
) -> float:
    """Largest |ONNX Runtime - eager| over the given batches; a (batch, seq_index) pair is
    fed to ONNX Runtime in that form and to eager PyTorch with each row's history repeated."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = input_names(module)
    worst = 0.0
    for b in batches:
        b, index = b if isinstance(b, tuple) else (b, None)
        with torch.inference_mode():
            eager = module(*_args(b, names[:3], index)).numpy()
        feed = {n: a.numpy() for n, a in zip(names, _args(b, names, index), strict=True)}
        try:
            got = session.run(["scores"], feed)[0]
        except Exception as err:
            raise ExportError(
                f"{path}: ONNX Runtime fails on a batch of {len(b)} rows ({str(err)[:300]}); the graph "
                "probably fixed the batch size (a model that calls len(batch) or a Python int of "
                "a shape)"
            ) from None
        if got.shape != eager.shape:
            raise ExportError(f"{path}: ONNX output shape {got.shape} != eager {eager.shape}")
        worst = max(worst, float(np.abs(got - eager).max()))
    return worst


def _without_history(batch: Batch) -> Batch:
    """The batch with every history empty: a traced graph must not have baked in the branch
    a model takes when some history is present (new users, all-masked attention)."""
    return Batch(
        categorical=batch.categorical,
        seq_ids=torch.zeros_like(batch.seq_ids),
        seq_mask=torch.zeros_like(batch.seq_mask),
        labels=batch.labels,
        label_mask=batch.label_mask,
        user=batch.user,
    )


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    onnx: bool = True,
    atol: float = 1e-5,
    check_rows: int = 256,
    exporter: str = "auto",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export the best checkpoint of `run_dir` into `out`; returns version.json's content."""
    from infnet.training.trainer import load_run

    run_dir, out = Path(run_dir), Path(out)
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter {exporter!r}: choose from {sorted(EXPORTERS)}")
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
    config, model, data = load_run(run_dir)
    model.eval()
    module = ScoringModule(model).eval()
    with atomic_directory(out) as tmp:
        shutil.copy(data.path / layout.SCHEMA, tmp / layout.SCHEMA)
        shutil.copytree(data.path / layout.VOCAB_DIR, tmp / layout.VOCAB_DIR)
        (tmp / CONFIG_FILE).write_text(config.model_dump_json(indent=2))
        run_config = config.model_dump(mode="json")
        save_checkpoint(
            tmp / WEIGHTS_FILE, {"model": model.state_dict()}, config=run_config, schema=data.schema
        )
        sha = weights_hash(model)
        info: dict[str, Any] = {
            "version": f"{config.model}-{sha[:12]}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}",
            "model": config.model,
            "weights_sha256": sha,
            "vocab_fingerprint": vocab_fingerprint(data.path / layout.VOCAB_DIR),
            "dataset": data.schema.dataset,
            "run": str(run_dir.resolve()),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "torch": torch.__version__,
            "onnx": onnx,
        }
        if onnx:
            split = "test" if data.num_rows("test") else "valid"
            rows = min(check_rows, data.num_rows(split))
            example = data.batch_at(split, np.arange(min(16, rows)))
            checks = [
                data.batch_at(split, np.arange(rows)),
                data.batch_at(split, [rows - 1]),
                _without_history(example),
                shared_histories(data.batch_at(split, np.arange(rows)), max(1, rows // 50)),
            ]
            failures = []
            for name in EXPORTERS[exporter]:
                try:
                    export_onnx(module, example, tmp / ONNX_FILE, name)
                    worst = onnx_parity(module, tmp / ONNX_FILE, checks)
                except ExportError as err:
                    failures.append(str(err))
                    continue
                if worst <= atol:
                    info["parity"] = {
                        "exporter": name,
                        "split": split,
                        "rows": sum(len(c[0] if isinstance(c, tuple) else c) for c in checks),
                        "inputs": input_names(module),
                        "max_abs_diff": worst,
                        "atol": atol,
                    }
                    break
                failures.append(
                    f"{name}: ONNX Runtime and eager PyTorch differ by {worst:.3g} (> {atol:g}) on {rows} {split} rows"
                )
            else:
                raise ExportError(
                    f"model {config.model!r} does not export to ONNX: "
                    + "; ".join(failures)
                    + "; export with --no-onnx and serve with --eager"
                )
        (tmp / VERSION_FILE).write_text(json.dumps(info, indent=2))
    return info
