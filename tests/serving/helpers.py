"""Serving test helpers: vocabulary values, users' first test rows, and what the offline
model scores for a request (the expectation a served answer is checked against)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch

from infnet.data import layout
from infnet.data.loader import PreparedDataset
from infnet.serving.export import ScoringModule


# --- offline expectations ------------------------------------------------------------------
def vocab_values(prepared: Path, field: str) -> dict[int, str]:
    v = pl.read_parquet(prepared / layout.VOCAB_DIR / f"{field}.parquet")
    return dict(zip(v["index"].to_list(), v["value"].to_list(), strict=True))


def first_test_rows(prepared: Path, as_of: int, count: int) -> list[int]:
    """Indices (in the test split) of users' first test rows, for users seen before as_of
    and rows whose item is in the vocabulary."""
    test = pl.read_parquet(prepared / "test" / "*.parquet").with_row_index("i")
    seen = pl.read_parquet(prepared / "train" / "*.parquet")[layout.USER].unique()
    rows = (
        test.group_by(layout.USER, maintain_order=True)
        .first()
        .filter(pl.col(layout.USER).is_in(seen.implode()) & (pl.col("video_id") > 1))
    )
    return rows["i"].to_list()[:count]


def eager_scores(
    run_dir: Path,
    categorical: np.ndarray,
    seq_ids: np.ndarray,
    seq_mask: np.ndarray,
    seq_gap: np.ndarray,
) -> np.ndarray:
    from infnet.training.rundir import load_run

    _, model, _ = load_run(run_dir)
    module = ScoringModule(model).eval()
    inputs = {"categorical": categorical, "seq_ids": seq_ids, "seq_mask": seq_mask}
    with torch.inference_mode():
        return module(
            **{k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in inputs.items()},
            seq_gap=torch.from_numpy(np.ascontiguousarray(seq_gap)),
        ).numpy()


def expected_request(
    prepared: Path, run_dir: Path, row: int, extra_items: list[str]
) -> tuple[dict, dict[str, np.ndarray]]:
    """The /v1/rank body for test row `row` (its user, tab, timestamp and item, plus
    `extra_items` and an unknown item), and the offline model's scores of every candidate:
    the row's batch with the item fields replaced by each candidate's codes (OOV when
    unknown), scored by eager PyTorch."""
    data = PreparedDataset(prepared)
    schema = data.schema
    batch = data.batch_at("test", [row])
    test = pl.read_parquet(prepared / "test" / "*.parquet")
    video, tab = vocab_values(prepared, "video_id"), vocab_values(prepared, "tab")
    code_of = {v: k for k, v in video.items()}
    item_fields = [f.name for f in schema.fields if f.group == "item"]
    item_pos = [schema.field_index(f) for f in item_fields]
    codes = (
        pl.read_parquet(prepared / "train" / "*.parquet")
        .group_by("video_id")
        .agg(pl.col(f).first() for f in item_fields[1:])
    )
    codes = {r[0]: r for r in codes.select(item_fields).iter_rows()}
    own = video[int(batch.categorical[0, schema.field_index("video_id")])]
    candidates = [int(own), *(int(i) for i in extra_items), "unknown-video"]
    categorical = batch.categorical.numpy().repeat(len(candidates), axis=0)
    for k, c in enumerate(candidates[1:], start=1):
        categorical[k, item_pos] = codes[code_of[str(c)]] if str(c) in code_of else 1
    K = len(candidates)
    scores = eager_scores(
        run_dir,
        categorical,
        batch.seq_ids.numpy().repeat(K, axis=0),
        batch.seq_mask.numpy().repeat(K, axis=0),
        batch.seq_gap.numpy().repeat(K, axis=0),  # the loader's gaps at the row's time
    )
    body = {
        "request_id": f"row-{row}",
        "user_id": int(batch.user[0]),
        "context": {
            "tab": int(tab[int(batch.categorical[0, schema.field_index("tab")])]),
            "timestamp": int(test[layout.TIME][row]),
        },
        "candidates": candidates,
    }
    return body, {str(c): scores[k] for k, c in enumerate(candidates)}
