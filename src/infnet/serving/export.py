"""`infnet export`: a trained run -> a self-contained model directory for the server.

    MODEL_DIR/model.onnx     forward over (categorical, seq_ids, seq_mask, seq_index) -> scores
                             [B, N_task]: probabilities for binary tasks, values for
                             regression tasks; the batch axis is dynamic. The histories come
                             once per user: seq_ids [U, F, n, K], seq_mask [U, F, n] and
                             seq_index int64 [B] (row -> history), so a request's K
                             candidates do not repeat the history (and INFNet, which reads
                             each history once, does not recompute it)
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

`export_model` is the core (a model, its schema, vocabularies and real rows to check on);
`export_run` exports the best checkpoint of a run directory through it.
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
from infnet.fsutil import atomic_directory, refuse_overlap
from infnet.models.base import MultiTaskModel, TaskActivation
from infnet.models.checkpoint import save_checkpoint
from infnet.training.rundir import load_run

ONNX_FILE = "model.onnx"
WEIGHTS_FILE = "weights.pt"
CONFIG_FILE = "config.json"
VERSION_FILE = "version.json"
INPUTS = ("categorical", "seq_ids", "seq_mask", "seq_index", "seq_gap")
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
    """The model's forward over the tensors a request provides, with the task activations
    applied (sigmoid for binary tasks, identity for regression tasks).

    seq_index int64 [B] maps each row to its history (a row of seq_ids, seq_mask); None:
    row b reads history b. How a model reads shared histories is its own business
    (models/base.py).
    """

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model
        self.activate = TaskActivation(model.schema)
        seq = model.schema.sequences
        # [F, n, K] of a schema without sequences: F = 0 (what the loader gives)
        self.seq_shape = (
            (len(seq.behaviours), seq.max_len, len(seq.side_fields)) if seq else (0, 1, 1)
        )

    def forward(
        self,
        categorical: torch.Tensor,  # int64 [B, M]
        seq_ids: torch.Tensor | None = None,  # int64 [U, F, n, K] (U = B without seq_index)
        seq_mask: torch.Tensor | None = None,  # bool [U, F, n]
        seq_index: torch.Tensor | None = None,  # int64 [B]: the history each row reads
        seq_gap: torch.Tensor | None = None,  # int64 [U, F, n]: time-gap buckets
    ) -> torch.Tensor:  # float32 [B, N_task]
        B, T = categorical.shape[0], self.activate.binary.shape[0]
        if seq_ids is None:
            seq_ids = categorical.new_zeros((B, *self.seq_shape))
            seq_mask = torch.zeros(
                (B, *self.seq_shape[:2]), dtype=torch.bool, device=categorical.device
            )
            seq_index = None
        if seq_gap is None:  # a model that is not time-aware does not read it
            seq_gap = torch.zeros(seq_mask.shape, dtype=torch.int64, device=categorical.device)
        batch = Batch(
            categorical=categorical,
            seq_ids=seq_ids,
            seq_mask=seq_mask,
            seq_gap=seq_gap,
            labels=torch.zeros((B, T), device=categorical.device),
            label_mask=torch.ones((B, T), dtype=torch.bool, device=categorical.device),
            user=categorical.new_zeros(B),
        )
        return self.activate(self.model(batch, seq_index).logits)


def input_names(module: ScoringModule) -> list[str]:
    """The graph's inputs: categorical, then the histories once per user and seq_index,
    then the histories' time gaps for a time-aware model."""
    if module.model.schema.sequences is None:
        return list(INPUTS[:1])
    return list(INPUTS if getattr(module.model.config, "time_aware", False) else INPUTS[:4])


def shared_histories(batch: Batch, users: int) -> tuple[Batch, torch.Tensor]:
    """The batch's rows reading U = `users` histories round robin (row b reads history
    b % U of the batch's first U): (the batch with seq_ids [U, F, n, K] and seq_mask
    [U, F, n], seq_index [B])."""
    compact = Batch(
        **{
            **batch.__dict__,
            "seq_ids": batch.seq_ids[:users],
            "seq_mask": batch.seq_mask[:users],
            "seq_gap": batch.seq_gap[:users],
        }
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
        "seq_gap": batch.seq_gap,
    }
    if "seq_index" not in names:  # per-row histories
        full |= {
            "seq_ids": batch.seq_ids[seq_index],
            "seq_mask": batch.seq_mask[seq_index],
            "seq_gap": batch.seq_gap[seq_index],
        }
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
                    "seq_gap": users,
                }
                dynamic = {"dynamic_shapes": {n: {0: axes[n]} for n in names}}
            else:
                axes = {n: "batch" for n in [*names, "scores"]}
                if index is not None:
                    axes |= {n: "users" for n in ("seq_ids", "seq_mask", "seq_gap") if n in names}
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
            per_row = [n for n in names if n != "seq_index"]
            eager = module(**dict(zip(per_row, _args(b, per_row, index), strict=True))).numpy()
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
        seq_gap=torch.zeros_like(batch.seq_gap),
        labels=batch.labels,
        label_mask=batch.label_mask,
        user=batch.user,
    )


def _check_target(out: Path, exporter: str, overwrite: bool) -> None:
    """Before any work: a known exporter, and an output that may be written."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter {exporter!r}: choose from {sorted(EXPORTERS)}")
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")


def export_model(
    model: MultiTaskModel,
    schema_file: Path,
    vocab_dir: Path,
    check: Batch,
    out: str | Path,
    *,
    config: dict[str, Any],
    source: dict[str, Any] | None = None,
    onnx: bool = True,
    atol: float = 1e-5,
    exporter: str = "auto",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write `model` (its schema file, vocabularies and run `config`) as a model directory
    `out`, the ONNX graph checked against eager PyTorch on the real rows of `check`;
    `source` adds to version.json (dataset, run). Returns version.json's content."""
    out = Path(out)
    _check_target(out, exporter, overwrite)
    model.eval()
    module = ScoringModule(model).eval()
    name = config["model"]
    with atomic_directory(out) as tmp:
        shutil.copy(schema_file, tmp / layout.SCHEMA)
        shutil.copytree(vocab_dir, tmp / layout.VOCAB_DIR)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        save_checkpoint(
            tmp / WEIGHTS_FILE, {"model": model.state_dict()}, config=config, schema=model.schema
        )
        sha = weights_hash(model)
        info: dict[str, Any] = {
            "version": f"{name}-{sha[:12]}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}",
            "model": name,
            "weights_sha256": sha,
            "vocab_fingerprint": vocab_fingerprint(vocab_dir),
            **(source or {}),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "torch": torch.__version__,
            "onnx": onnx,
        }
        if onnx:
            info["parity"] = _export_checked(module, check, tmp / ONNX_FILE, exporter, atol)
        (tmp / VERSION_FILE).write_text(json.dumps(info, indent=2))
    return info


def _export_checked(
    module: ScoringModule, check: Batch, path: Path, exporter: str, atol: float
) -> dict[str, Any]:
    """Export with the first exporter whose graph matches eager PyTorch on `check`'s rows,
    its last row alone, 16 rows with their histories emptied, and rows sharing histories."""
    rows = len(check)
    example = _rows(check, range(min(16, rows)))
    checks = [
        check,
        _rows(check, [rows - 1]),
        _without_history(example),
        shared_histories(check, max(1, rows // 50)),
    ]
    failures = []
    for name in EXPORTERS[exporter]:
        try:
            export_onnx(module, example, path, name)
            worst = onnx_parity(module, path, checks)
        except ExportError as err:
            failures.append(str(err))
            continue
        if worst <= atol:
            return {
                "exporter": name,
                "rows": sum(len(c[0] if isinstance(c, tuple) else c) for c in checks),
                "inputs": input_names(module),
                "max_abs_diff": worst,
                "atol": atol,
            }
        failures.append(
            f"{name}: ONNX Runtime and eager PyTorch differ by {worst:.3g} (> {atol:g}) on {rows} rows"
        )
    raise ExportError(
        f"model {module.model.name!r} does not export to ONNX: "
        + "; ".join(failures)
        + "; export with --no-onnx and serve with --eager"
    )


def _rows(batch: Batch, index) -> Batch:
    i = torch.as_tensor(list(index))
    return Batch(**{k: v.index_select(0, i) for k, v in batch.__dict__.items()})


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
    """Export the best checkpoint of `run_dir` into `out`, checked on up to `check_rows`
    rows of its test split (valid when test is empty); returns version.json's content."""
    run_dir, out = Path(run_dir), Path(out)
    _check_target(out, exporter, overwrite)
    config, model, data = load_run(run_dir)
    refuse_overlap(out, [run_dir, data.path])
    split = "test" if data.num_rows("test") else "valid"
    rows = min(check_rows, data.num_rows(split))
    return export_model(
        model,
        data.path / layout.SCHEMA,
        data.path / layout.VOCAB_DIR,
        data.batch_at(split, np.arange(rows)),
        out,
        config=config.model_dump(mode="json"),
        source={"dataset": data.schema.dataset, "run": str(run_dir.resolve()), "split": split},
        onnx=onnx,
        atol=atol,
        exporter=exporter,
        overwrite=overwrite,
    )
