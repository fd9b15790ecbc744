"""A model directory (export.py) loaded for serving: ONNX Runtime, or eager PyTorch."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from infnet.data import layout
from infnet.data.schema import OOV, Schema
from infnet.models.checkpoint import load_model
from infnet.serving.export import (
    CONFIG_FILE,
    ONNX_FILE,
    VERSION_FILE,
    WEIGHTS_FILE,
    ScoringModule,
)


class ModelLoadError(ValueError):
    pass


@dataclass
class ServingModel:
    path: Path
    version: str
    name: str
    schema: Schema
    vocab_fingerprint: str
    eager: bool
    time_aware: bool  # reads the histories' time gaps (the store must hold event times)
    _run: object = field(repr=False)  # (feed dict) -> scores

    @property
    def has_sequences(self) -> bool:
        return self.schema.sequences is not None

    def predict(
        self,
        categorical: np.ndarray,
        seq_ids: np.ndarray,
        seq_mask: np.ndarray,
        seq_index: np.ndarray | None = None,
        seq_gap: np.ndarray | None = None,
    ) -> np.ndarray:
        """categorical int64 [B, M], seq_ids int64 [U, F, n, K], seq_mask bool [U, F, n],
        seq_index int64 [B] (the history each row reads; None: U = B, row b reads history b),
        seq_gap int64 [U, F, n] (time-gap buckets; None: unknown, 0)
        -> float32 [B, N_task]: probabilities (binary tasks), values (regression tasks)."""
        feed = {"categorical": categorical}
        if self.has_sequences:
            if seq_index is None:
                seq_index = np.arange(len(categorical))
            if seq_gap is None:
                seq_gap = np.zeros(seq_mask.shape, np.int64)
            feed |= {
                "seq_ids": seq_ids,
                "seq_mask": seq_mask,
                "seq_index": seq_index,
                "seq_gap": seq_gap,
            }
        return self._run(feed)

    def warm_up(self, rows: int = 64) -> None:
        """Score OOV rows with a full and an empty history (each shared by half the rows);
        refuse wrong shapes or non-finite output."""
        M, T = self.schema.num_fields, self.schema.num_tasks
        seq = self.schema.sequences
        F, n, K = (len(seq.behaviours), seq.max_len, len(seq.side_fields)) if seq else (0, 1, 1)
        categorical = np.full((rows, M), OOV, np.int64)
        seq_ids = np.full((2, F, n, K), OOV, np.int64)
        seq_mask = np.ones((2, F, n), bool)
        seq_ids[1], seq_mask[1] = 0, False
        for b in (rows, 1):
            index = (np.arange(b) >= b // 2).astype(np.int64)
            try:
                out = self.predict(categorical[:b], seq_ids, seq_mask, index)
            except Exception as err:
                raise ModelLoadError(
                    f"{self.path}: warm-up failed ({type(err).__name__}: {str(err)[:300]})"
                ) from None
            if out.shape != (b, T):
                raise ModelLoadError(
                    f"{self.path}: warm-up output shape {out.shape}, expected {(b, T)}"
                )
            if not np.isfinite(out).all():
                raise ModelLoadError(f"{self.path}: warm-up output is not finite")


def session_options(threads: int):
    """The server's ONNX Runtime session options: `threads` intra-op threads, sequential, every
    graph optimisation, denormals as zero."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # A masked attention score is -inf, and ONNX Runtime's Softmax over [100, 18, 150] with
    # half the keys masked took 0.92 ms against 0.14 unmasked; with this entry 0.12 ms
    # (benchmarks/ort_softmax.py). The first session of a process sets it for all of them.
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return options


def _onnx_runner(path: Path, threads: int):
    import onnxruntime as ort

    options = session_options(threads)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        # a graph exported before every model took seq_index reads per-row histories
        if "seq_index" in feed and "seq_index" not in names:
            index = feed.pop("seq_index")
            feed |= {k: feed[k][index] for k in ("seq_ids", "seq_mask", "seq_gap")}
        return session.run(["scores"], {k: v for k, v in feed.items() if k in names})[0]

    return run


def _eager_runner(path: Path, schema: Schema, threads: int):
    torch.set_num_threads(threads)
    model, _ = load_model(path / WEIGHTS_FILE, schema)
    module = ScoringModule(model).eval()

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return module(**{k: torch.from_numpy(v) for k, v in feed.items()}).numpy()

    return run


def load_model_dir(
    path: str | Path, *, eager: bool = False, threads: int = 1, warm_up: bool = True
) -> ServingModel:
    """Load MODEL_DIR; with warm_up (default) the model has scored a batch before it is returned."""
    path = Path(path)
    for name in (VERSION_FILE, layout.SCHEMA, CONFIG_FILE):
        if not (path / name).is_file():
            raise ModelLoadError(
                f"{path}: not a model directory (no {name}); make one with `infnet export`"
            )
    try:
        info = json.loads((path / VERSION_FILE).read_text())
        options = json.loads((path / CONFIG_FILE).read_text()).get("model_options", {})
        schema = Schema.load(path / layout.SCHEMA)
        if eager:
            run = _eager_runner(path, schema, threads)
        elif not (path / ONNX_FILE).is_file():
            raise ModelLoadError(
                f"{path}: no {ONNX_FILE} (exported with --no-onnx); serve it with --eager"
            )
        else:
            run = _onnx_runner(path / ONNX_FILE, threads)
    except ModelLoadError:
        raise
    except Exception as err:
        raise ModelLoadError(
            f"{path}: cannot load the model ({type(err).__name__}: {str(err)[:300]})"
        ) from None
    model = ServingModel(
        path=path,
        version=info["version"],
        name=info["model"],
        schema=schema,
        vocab_fingerprint=info["vocab_fingerprint"],
        eager=eager,
        time_aware=bool(options.get("time_aware", False)),
        _run=run,
    )
    if warm_up:
        model.warm_up()
    return model
