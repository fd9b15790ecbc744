"""The per-split figures prepare writes to stats.json: rows, users, items, label rates and
means, missing labels, OOV rates, the rows whose user or item train never saw, and the
simulator's oracle AUC."""

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
    item = item.to_numpy()
    train_users, train_items = (
        np.unique(user[split_rows["train"]]),
        np.unique(item[split_rows["train"]]),
    )
    out["unseen"] = {}  # share of a split's rows whose user / item has no train row
    for s, r in split_rows.items():
        new_user, new_item = ~np.isin(user[r], train_users), ~np.isin(item[r], train_items)
        out["unseen"][s] = {
            k: float(v.mean()) if len(r) else 0.0
            for k, v in (("user", new_user), ("item", new_item), ("either", new_user | new_item))
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


def unseen_rows(stats: dict) -> list[tuple[str, list[str]]]:
    """Rows of a prepare summary: per split, the share of rows whose user, item, or either
    has no train row (cold start the models meet on valid and test)."""
    splits = list(stats["rows"])
    return [
        (f"{what} unseen in train", [f"{stats['unseen'][s][key]:.1%}" for s in splits])
        for key, what in (("user", "users"), ("item", "items"), ("either", "user or item"))
    ]


def unseen_line(stats: dict) -> str:
    """The same as one line: "rows whose user or item is unseen in train: valid 3.1% ..."."""
    parts = [
        f"{s} {u['either']:.1%} (user {u['user']:.1%}, item {u['item']:.1%})"
        for s, u in stats["unseen"].items()
        if s != "train"
    ]
    return "rows whose user or item is unseen in train: " + "; ".join(parts)
