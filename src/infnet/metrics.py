"""Evaluation metrics of DESIGN.md section 6: numpy arrays in, Python floats out.

AUC is the Mann-Whitney statistic with ties counted one half,
    AUC = (R_1 - n_1 (n_1 + 1) / 2) / (n_1 n_0),
where R_1 is the sum of the positives' average ranks ("midranks") among all scores.
gAUC applies the same formula within each user, all users at once: rows are sorted by
(user, score), so every user is a contiguous run and every tie a run inside it, and the
per-user rank sums are segment sums; no Python loop runs per user.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class Task(Protocol):
    """What the metrics read of a task (data.schema.Task has it)."""

    name: str
    kind: str
    weight: float


EPS = 1e-7  # LogLoss clips probabilities to [EPS, 1 - EPS]


# --- input checks ---------------------------------------------------------------------------
def _vector(x: Any, name: str, finite: bool = True) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if finite and a.dtype.kind in "fc" and not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _binary(labels: Any, name: str = "labels") -> np.ndarray:
    y = _vector(labels, name)
    if not np.isin(y, (0, 1)).all():
        bad = np.unique(y[~np.isin(y, (0, 1))])[:5]
        raise ValueError(f"{name} must be 0 or 1, found {bad.tolist()}")
    return y.astype(bool)


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"arrays differ in length: {lengths}")


# --- ranks ----------------------------------------------------------------------------------
def _run_midranks(run_start: np.ndarray) -> np.ndarray:
    """1-based average ranks of sorted values, given True where a run of equal values starts."""
    starts = np.flatnonzero(run_start)
    ends = np.append(starts[1:], len(run_start))  # exclusive
    # The run occupies ranks starts+1 .. ends; its members share their mean.
    return np.repeat((starts + 1 + ends) / 2.0, ends - starts)


def midranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties get the mean of their ranks), as scipy's rankdata."""
    order = np.argsort(x)  # the order inside a tie run does not matter
    xs = x[order]
    run_start = np.empty(len(x), dtype=bool)
    run_start[:1] = True
    np.not_equal(xs[1:], xs[:-1], out=run_start[1:])
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = _run_midranks(run_start)
    return ranks


# --- binary ---------------------------------------------------------------------------------
def auc(labels: Any, scores: Any) -> float:
    """ROC AUC (Mann-Whitney, ties one half), exact, O(n log n); NaN if one class only."""
    y = _binary(labels)
    s = _vector(scores, "scores")
    _same_length(labels=y, scores=s)
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r1 = midranks(s)[y].sum()
    return float((r1 - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def gauc(labels: Any, scores: Any, groups: Any) -> float:
    """Group AUC: per-group AUC averaged with weights = the group's number of rows.

    Groups (users) whose labels are all one class are skipped (the FuxiCTR convention);
    NaN if no group has both classes.
    """
    y = _binary(labels)
    s = _vector(scores, "scores")
    g = _vector(groups, "groups")
    _same_length(labels=y, scores=s, groups=g)
    if len(y) == 0:
        return float("nan")
    order = np.lexsort((s, g))  # by group, then score
    ys, ss, gs = y[order], s[order], g[order]
    group_start = np.empty(len(gs), dtype=bool)
    group_start[0] = True
    np.not_equal(gs[1:], gs[:-1], out=group_start[1:])
    run_start = group_start.copy()  # a tie run never crosses a group boundary
    run_start[1:] |= ss[1:] != ss[:-1]

    starts = np.flatnonzero(group_start)  # 0-based position of each group's first row
    n = np.diff(np.append(starts, len(gs)))  # rows per group
    # Rank within the group = global midrank - rows of all earlier groups.
    rank = _run_midranks(run_start) - np.repeat(starts, n)
    n1 = np.add.reduceat(ys.astype(np.float64), starts)
    r1 = np.add.reduceat(np.where(ys, rank, 0.0), starts)
    n0 = n - n1
    keep = (n1 > 0) & (n0 > 0)
    if not keep.any():
        return float("nan")
    n1, n0, r1, w = n1[keep], n0[keep], r1[keep], n[keep]
    per_group = (r1 - n1 * (n1 + 1) / 2.0) / (n1 * n0)
    return float(np.dot(w, per_group) / w.sum())


def logloss(labels: Any, probs: Any) -> float:
    """Mean binary cross-entropy with probabilities clipped to [1e-7, 1 - 1e-7]."""
    y = _binary(labels).astype(np.float64)
    p = _vector(probs, "probs").astype(np.float64)
    _same_length(labels=y, probs=p)
    if len(y) == 0:
        raise ValueError("logloss of an empty set")
    if ((p < 0) | (p > 1)).any():
        raise ValueError("probs must lie in [0, 1] (apply the sigmoid to logits first)")
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


# --- regression -----------------------------------------------------------------------------
def _regression(labels: Any, preds: Any) -> tuple[np.ndarray, np.ndarray]:
    y = _vector(labels, "labels").astype(np.float64)
    p = _vector(preds, "preds").astype(np.float64)
    _same_length(labels=y, preds=p)
    if len(y) == 0:
        raise ValueError("regression metric of an empty set")
    return y, p


def mae(labels: Any, preds: Any) -> float:
    y, p = _regression(labels, preds)
    return float(np.mean(np.abs(y - p)))


def rmse(labels: Any, preds: Any) -> float:
    y, p = _regression(labels, preds)
    return float(np.sqrt(np.mean((y - p) ** 2)))


def r2(labels: Any, preds: Any) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot; NaN when the labels are constant."""
    y, p = _regression(labels, preds)
    ss_tot = np.sum((y - y.mean()) ** 2)
    if ss_tot == 0:
        return float("nan")
    return float(1.0 - np.sum((y - p) ** 2) / ss_tot)


# --- multi-task -----------------------------------------------------------------------------
def _weighted_mean(values: list[float], weights: list[float]) -> float:
    w = np.asarray(weights, dtype=np.float64)
    if len(values) == 0 or w.sum() == 0:
        return float("nan")
    return float(np.dot(w, np.asarray(values, dtype=np.float64)) / w.sum())


def evaluate(
    tasks: Sequence[Task],
    outputs: Any,
    labels: Any,
    label_mask: Any,
    users: Any,
) -> dict[str, Any]:
    """Per-task metrics over rows whose label is present, plus MTL-AUC and MTL-gAUC.

    outputs [N, T]: probabilities for binary tasks (after the sigmoid), values for
    regression tasks. labels [N, T] (missing entries may hold anything, NaN included),
    label_mask [N, T] bool, users [N] (the gAUC groups).
    Returns {task: {"auc", "gauc", "logloss", "n"} or {"mae", "rmse", "r2", "n"},
    "mtl_auc": ..., "mtl_gauc": ...}; MTL figures are the binary tasks' figures averaged
    with the task weights (NaN if there is no binary task).
    """
    out = np.asarray(outputs, dtype=np.float64)
    lab = np.asarray(labels, dtype=np.float64)
    mask = np.asarray(label_mask)
    u = _vector(users, "users")
    T = len(tasks)
    for name, a in (("outputs", out), ("labels", lab), ("label_mask", mask)):
        if a.shape != (len(u), T):
            raise ValueError(
                f"{name} has shape {a.shape}, expected (N, T) = ({len(u)}, {T}) "
                f"for tasks {[t.name for t in tasks]} and {len(u)} users"
            )
    if mask.dtype != np.bool_:
        raise ValueError(f"label_mask must be boolean, got dtype {mask.dtype}")

    result: dict[str, Any] = {}
    aucs, gaucs, weights = [], [], []
    for j, task in enumerate(tasks):
        rows = mask[:, j]
        y, p = lab[rows, j], out[rows, j]
        n = int(rows.sum())
        if task.kind == "binary":
            if n == 0:
                m = {"auc": float("nan"), "gauc": float("nan"), "logloss": float("nan")}
            else:
                m = {"auc": auc(y, p), "gauc": gauc(y, p, u[rows]), "logloss": logloss(y, p)}
            aucs.append(m["auc"])
            gaucs.append(m["gauc"])
            weights.append(task.weight)
        elif n == 0:
            m = {"mae": float("nan"), "rmse": float("nan"), "r2": float("nan")}
        else:
            m = {"mae": mae(y, p), "rmse": rmse(y, p), "r2": r2(y, p)}
        result[task.name] = {**m, "n": n}
    result["mtl_auc"] = _weighted_mean(aucs, weights)
    result["mtl_gauc"] = _weighted_mean(gaucs, weights)
    return result


def label_correlation(values: Any, mask: Any) -> np.ndarray:
    """Pairwise Pearson correlation [T, T] of columns, each pair over rows where both are present.

    Used for the task label correlation and the predicted-score correlation. An entry is
    NaN where the pair has fewer than two rows or a column is constant on them.
    """
    x = np.asarray(values, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if x.ndim != 2 or m.shape != x.shape:
        raise ValueError(f"values {x.shape} and mask {m.shape} must be the same [N, T] shape")
    T = x.shape[1]
    corr = np.full((T, T), np.nan)
    for i in range(T):
        for j in range(i, T):
            both = m[:, i] & m[:, j]
            if both.sum() < 2:
                continue
            a = x[both, i] - x[both, i].mean()
            b = x[both, j] - x[both, j].mean()
            denom = np.sqrt(np.dot(a, a) * np.dot(b, b))
            if denom > 0:
                corr[i, j] = corr[j, i] = np.dot(a, b) / denom
    return corr


def relative_improvement(mtl_auc: float, mtl_auc_base: float) -> float:
    """The source document's relative improvement: MTL-AUC(model) / MTL-AUC(base) - 1."""
    return float(mtl_auc / mtl_auc_base - 1.0)
