"""What every suite shares: the typed `Context` a suite runs in, and the aggregation over
seeds its tables use.

Definitions used by the tables:
- main task: the first binary task of the schema (e.g. click); the columns AUC, gAUC and
  LogLoss of table 4.2.1 are the main task's, MTL-AUC / MTL-gAUC the task-weighted means
  over all binary tasks (DESIGN.md section 6);
- relative improvement (table 4.2.1): MTL-AUC(model) / MTL-AUC(FM) - 1, computed per seed
  against FM's run of the same seed, then mean ± std over seeds;
- relative loss (ablation): MTL-AUC(variant) / MTL-AUC(full) - 1 in the same way;
- mean ± std: over the seeds whose run succeeded, std with ddof = 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from infnet.data.loader import PreparedDataset
from infnet.data.schema import Schema
from infnet.experiments.report import Section
from infnet.experiments.runner import Runner, RunSpec, ok
from infnet.experiments.space import Space
from infnet.experiments.stats import mean_std
from infnet.metrics import relative_improvement

INFNET, REFERENCE = "infnet", "fm"
# The floors a model must beat (models/popularity.py, models/mean.py), strongest last: the
# lift over the strongest present is shown beside every model in `compare`.
FLOORS = ("popularity", "mean")
FLAG = " ⚠"  # after a model's name in a table: one of its runs has a flagged task

# --quick: 1 epoch on the most recent rows of each split (data.loader.RowLimit), batch 256
# (about 117 steps: enough for the AUCs to separate from 0.5 on the simulator),
# one seed by default; the grids (ablation, proxies) run only the first seed, the proxy
# sweeps their ends and the default.
QUICK_TRAIN = {"epochs": 1, "batch_size": 256}
QUICK_ROWS = {"train": 30_000, "valid": 5_000, "test": 10_000}


@dataclass
class Context:
    data: PreparedDataset
    out: Path
    runner: Runner
    seeds: list[int]
    models: list[str] | None = None  # None: every registered model
    quick: bool = False
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides of every run
    infnet_run: Path | None = None  # the attention suite's trained run (else one is trained)
    console: Console = field(default_factory=lambda: Console(stderr=True))
    latency_batch: int = 1024
    reps: int = 5
    trials: int = 20  # tune: finished trials per model
    space: Space | None = None  # tune: the search space (experiments/space.py's default)
    tuned: dict[str, Any] | None = None  # compare --tuned: a tune's outcome (experiments/tune.py)

    @property
    def schema(self) -> Schema:
        return self.data.schema

    @property
    def grid_seeds(self) -> list[int]:
        """Seeds of the ablation and proxy grids: all, or the first one under --quick."""
        return self.seeds[:1] if self.quick else self.seeds

    def spec(self, label: str, model: str, options: dict[str, Any], seed: int) -> RunSpec:
        return RunSpec(label=label, model=model, options=options, train=self.train, seed=seed)


# --- aggregation over seeds -------------------------------------------------------------------
def main_task(schema: Schema) -> str:
    binary = [t.name for t in schema.tasks if t.kind == "binary"]
    return binary[0] if binary else schema.tasks[0].name


def metric(record: dict[str, Any], key: str) -> float:
    """A test figure of a record: "mtl_auc" or "task/metric"; NaN when the run failed."""
    if not ok(record):
        return float("nan")
    node: Any = record["test"]
    for part in key.split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    return float("nan") if node is None else float(node)


def summary(values: list[float]) -> dict[str, Any]:
    finite = [v for v in values if math.isfinite(v)]
    mean, std = mean_std(finite) if finite else (float("nan"), float("nan"))
    return {"mean": mean, "std": std, "values": values, "n": len(finite)}


def by_label(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r["label"], []).append(r)
    return groups


def relative(
    records: list[dict[str, Any]], base: list[dict[str, Any]], key: str = "mtl_auc"
) -> list[float]:
    """Per seed: key(record) / key(base record of the same seed) - 1 (NaN where one is missing)."""
    base_by_seed = {r["seed"]: metric(r, key) for r in base}
    out = []
    for r in records:
        a, b = metric(r, key), base_by_seed.get(r["seed"], float("nan"))
        out.append(
            relative_improvement(a, b) if math.isfinite(a) and math.isfinite(b) else float("nan")
        )
    return out


def run_table(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What results.json keeps of every run: label, model, options, seed, status, run dir, metrics."""
    keep = (
        "label",
        "model",
        "options",
        "seed",
        "status",
        "run_dir",
        "error",
        "parameters",
        "seconds",
        "config",
        "test",
        "flags",
        "predictions",
    )
    return [{k: r[k] for k in keep if k in r} for r in records]


def failures(section: Section, records: list[dict[str, Any]]) -> None:
    failed = [r for r in records if not ok(r)]
    if failed:
        section.table(
            ["run", "model", "seed", "error"],
            [[r["label"], r["model"], str(r["seed"]), r.get("error", "")] for r in failed],
            caption="Failed runs (recorded; the suite went on without them)",
        )


def flagged(records: list[dict[str, Any]]) -> bool:
    """Whether a run among `records` kept a checkpoint with a task below chance or collapsed."""
    return any(ok(r) and r.get("flags") for r in records)


def marked(name: str, records: list[dict[str, Any]]) -> str:
    return name + (FLAG if flagged(records) else "")


def flag_table(section: Section, records: list[dict[str, Any]]) -> None:
    """Every run whose kept checkpoint has a flagged task (training/selection.py), with why."""
    rows = [
        [r["label"], r["model"], str(r["seed"]), flag]
        for r in records
        if ok(r)
        for flag in r.get("flags") or []
    ]
    if rows:
        section.table(
            ["run", "model", "seed", "flag"],
            rows,
            caption=f"Runs with a flagged task ({FLAG.strip()} in the tables): a task below "
            "chance, or collapsed from its best earlier validation score",
        )


def spread(seeds: int) -> str:
    """What a figure's error bars are, for its caption."""
    if seeds >= 2:
        return f"mean over {seeds} seeds, error bars ± 1 std"
    return "one seed, so no error bars"


def figure_path(ctx: Context, name: str) -> Path:
    return ctx.out / f"{name}.png"
