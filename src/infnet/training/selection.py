"""Which checkpoint a run keeps, and the tasks it must not hide.

A mean over tasks can rise while one task breaks: a rare binary task whose validation AUC
falls below chance while a regression task improves. `Selection` keeps a checkpoint by
`train.selection` (config.py), and `task_flags` names every task that is below chance
(AUC < 0.5, R2 < 0) or has collapsed (fallen COLLAPSE below its best earlier evaluation
in the run), so the log, metrics.jsonl, test_metrics.json and every report can show it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from typing import Any

from infnet.data.schema import Schema
from infnet.training.config import TrainConfig

BINARY, REGRESSION = ("auc", "gauc", "logloss"), ("mae", "rmse", "r2")  # metrics.evaluate's
LOWER_IS_BETTER = ("logloss", "mae", "rmse")
COLLAPSE = 0.05  # a task score this far below its best earlier score in the run collapsed


def task_scores(schema: Schema, metrics: dict[str, Any]) -> dict[str, float]:
    """Each task's score, higher is better: AUC for a binary task, R2 for a regression task."""
    return {
        t.name: float(metrics[t.name]["auc" if t.kind == "binary" else "r2"]) for t in schema.tasks
    }


def metric_keys(schema: Schema) -> list[str]:
    """Every key `monitored` reads of the schema's validation metrics."""
    keys = ["mtl_auc", "mtl_gauc"]
    for t in schema.tasks:
        keys += [f"{t.name}.{m}" for m in (BINARY if t.kind == "binary" else REGRESSION)]
    return keys


def monitored(metrics: dict[str, Any], key: str) -> float:
    """metrics[key] for a top-level key (mtl_auc) or task.metric (is_click.auc)."""
    if key in metrics and not isinstance(metrics[key], dict):
        return float(metrics[key])
    task, _, name = key.partition(".")
    if isinstance(metrics.get(task), dict) and name in metrics[task] and name != "n":
        return float(metrics[task][name])
    valid = [k for k, v in metrics.items() if not isinstance(v, dict)]
    valid += [f"{t}.{m}" for t, v in metrics.items() if isinstance(v, dict) for m in v if m != "n"]
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"train.monitor={key!r} is not a validation metric{hint} (have {valid})")


class Selection:
    def __init__(self, schema: Schema, config: TrainConfig) -> None:
        unknown = sorted(set(config.selection_weights) - set(schema.task_names))
        if unknown:
            raise ValueError(
                f"train.selection_weights name unknown tasks {unknown}; tasks: {schema.task_names}"
            )
        if config.selection == "monitor" and config.monitor not in metric_keys(schema):
            close = difflib.get_close_matches(config.monitor, metric_keys(schema), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"train.monitor={config.monitor!r} is not a validation metric{hint} "
                f"(have {metric_keys(schema)})"
            )
        self.schema = schema
        self.mode = config.selection
        self.monitor = config.monitor
        self.weights = {
            t.name: config.selection_weights.get(t.name, t.weight) for t in schema.tasks
        }
        no_binary = not any(t.kind == "binary" for t in schema.tasks)
        if self.mode == "monitor" and self.monitor.startswith("mtl_") and no_binary:
            raise ValueError(
                f"train.monitor={self.monitor}: the MTL averages are over binary tasks and "
                "this dataset has none; set train.selection=weighted (R2 per task)"
            )
        if self.mode != "monitor" and sum(self.weights.values()) <= 0:
            raise ValueError("train.selection_weights: at least one task needs a positive weight")

    @property
    def name(self) -> str:
        return self.monitor if self.mode == "monitor" else f"{self.mode} task score"

    def score(self, metrics: dict[str, Any]) -> float:
        """The figure checkpoints are ranked by (NaN if undefined)."""
        if self.mode == "monitor":  # a loss or an error ranks by its negative
            sign = -1.0 if self.monitor.rsplit(".", 1)[-1] in LOWER_IS_BETTER else 1.0
            return sign * monitored(metrics, self.monitor)
        scores = task_scores(self.schema, metrics)
        # a task without a score on this split (no positives) neither counts nor blocks
        pairs = [
            (self.weights[t], s)
            for t, s in scores.items()
            if self.weights[t] > 0 and not math.isnan(s)
        ]
        if not pairs:
            return float("nan")
        return sum(w * s for w, s in pairs) / sum(w for w, _ in pairs)

    def improves(self, metrics: dict[str, Any], kept: dict[str, Any] | None) -> bool:
        """Whether `metrics` should replace the kept checkpoint's validation metrics."""
        if kept is None:
            return True
        new, old = self.score(metrics), self.score(kept)
        if math.isnan(new) or not (math.isnan(old) or new > old):
            return False
        if self.mode != "all_tasks":
            return True
        a, b = task_scores(self.schema, metrics), task_scores(self.schema, kept)
        return all(
            not (a[t] < b[t]) for t in a if self.weights[t] > 0
        )  # NaN compares False: a task without a score does not block


def task_flags(
    schema: Schema,
    metrics: dict[str, Any],
    earlier: Sequence[dict[str, Any]] = (),
    split: str = "valid",
) -> list[str]:
    """What is wrong with each task in `metrics`, given the run's earlier evaluations."""
    flags = []
    scores = task_scores(schema, metrics)
    history = [task_scores(schema, m) for m in earlier]
    for t in schema.tasks:
        s, name = scores[t.name], "AUC" if t.kind == "binary" else "R2"
        if math.isnan(s):
            continue
        chance = 0.5 if t.kind == "binary" else 0.0
        if s < chance:
            what = "chance" if t.kind == "binary" else "0 (worse than a constant)"
            flags.append(f"{t.name}: {split} {name} {s:.4f} is below {what}")
        best = max((h[t.name] for h in history if not math.isnan(h[t.name])), default=None)
        if best is not None and s < best - COLLAPSE:
            flags.append(f"{t.name}: {split} {name} collapsed to {s:.4f} from {best:.4f}")
    return flags
