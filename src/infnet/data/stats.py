"""The per-split figures prepare writes to stats.json: rows, users, items, label rates and
means, missing labels, OOV rates, and the simulator's oracle AUC."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from infnet.data.schema import OOV
from infnet.data.spec import RawDataset
from infnet.metrics import auc


def _nan_none(x: float) -> float | None:
    return None if math.isnan(x) else x


def _mean(y: np.ndarray) -> float | None:
    """Mean of the non-missing labels; None (JSON null) when there are none."""
    y = y[~np.isnan(y)]
    return float(y.mean()) if len(y) else None


def split_stats(
    raw: RawDataset,
    split_rows: dict[str, np.ndarray],
    user: np.ndarray,
    item: pl.Series,
    labels: dict[str, np.ndarray],
    codes: dict[str, np.ndarray],
    oracle: dict[str, np.ndarray],
) -> dict:
    rows = np.concatenate(list(split_rows.values()))
    out: dict = {
        "rows": {s: len(r) for s, r in split_rows.items()},
        "users": {"all": len(np.unique(user[rows]))}
        | {s: len(np.unique(user[r])) for s, r in split_rows.items()},
        "items": {"all": item.gather(rows).n_unique()}
        | {s: item.gather(r).n_unique() for s, r in split_rows.items()},
        "label_rate": {},
        "label_mean": {},
        "nan_labels": {},
        "oov_rate": {
            f.name: {s: float((codes[f.name][r] == OOV).mean()) for s, r in split_rows.items()}
            for f in raw.fields
        },
    }
    for s, r in split_rows.items():
        out["nan_labels"][s] = {t: int(np.isnan(y[r]).sum()) for t, y in labels.items()}
        out["label_rate"][s] = {
            t.name: _mean(labels[t.name][r]) for t in raw.tasks if t.kind == "binary"
        }
        out["label_mean"][s] = {
            t.name: _mean(labels[t.name][r]) for t in raw.tasks if t.kind == "regression"
        }
    binary = {t.name for t in raw.tasks if t.kind == "binary"}
    if oracle:
        out["oracle_auc"] = {}
        for s, r in split_rows.items():
            out["oracle_auc"][s] = {}
            for t in sorted(set(oracle) & binary):
                y, p = labels[t][r], oracle[t][r]
                ok = ~np.isnan(y) & ~np.isnan(p)
                out["oracle_auc"][s][t] = _nan_none(auc(y[ok], p[ok]))
    return out
