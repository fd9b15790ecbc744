"""Binary and regression tasks trained together: the target scale and the task weighting,
measured, with the reference models beside. One JSON line per run: test AUC of each
binary task, R2 (and RMSE) of each regression task, MTL-AUC, the run's task flags.

    python benchmarks/mixed_tasks.py --data STANDARDISED --raw-data RAW \\
        [--models infnet,din,mmoe] [--weightings fixed,uncertainty,normalised] \\
        [--epochs 1] [--seeds 0] [--workers 2] [--cache runs/mixed-tasks]

After the runs, one summary line per (model, targets, weighting): mean and std over the
seeds of every figure, and the paired t-test over seeds of each against the same model
with standardised targets and fixed weights.

STANDARDISED and RAW are one dataset prepared twice, the second with `--raw-targets`,
e.g. `infnet prepare kuairand ... --tasks is_click,is_like,long_view,play_time
[--raw-targets]`. Every model runs with fixed weights on RAW (the scale before
standardisation), and with each weighting on STANDARDISED; `popularity` and `mean` run
on STANDARDISED. Runs are cached in --cache (experiments/runner.py), so an interrupted
benchmark resumes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from infnet.data.loader import PreparedDataset
from infnet.experiments.runner import Runner, RunSpec, ok
from infnet.experiments.stats import mean_std, paired_ttest

REFERENCES = ("popularity", "mean")


def line(record: dict, scale: str, weighting: str, schema) -> dict:
    out = {
        "benchmark": "mixed_tasks",
        "model": record["model"],
        "targets": scale,
        "weighting": weighting,
        "seed": record["seed"],
        "status": record["status"],
    }
    if not ok(record):
        return out | {"error": record["error"]}
    test = record["test"]
    for t in schema.tasks:
        keys = ("auc",) if t.kind == "binary" else ("r2", "rmse")
        out |= {f"{t.name} {k}": round(test[t.name][k], 4) for k in keys}
    return out | {
        "mtl_auc": round(test["mtl_auc"], 4),
        "flags": record.get("flags", []),
        "seconds": round(record.get("seconds", 0.0), 1),
    }


def _num(x: float) -> float | None:
    """Rounded, and null where undefined (the std of one seed): JSON has no NaN."""
    return None if np.isnan(x) else round(float(x), 4)


def summaries(lines: list[dict]) -> list[dict]:
    """Per (model, targets, weighting): mean, std over seeds, and p against standardised fixed."""
    groups: dict[tuple, dict[int, dict]] = {}
    for x in lines:
        if x["status"] in ("trained", "cached"):
            groups.setdefault((x["model"], x["targets"], x["weighting"]), {})[x["seed"]] = x
    out = []
    for (model, targets, weighting), runs in groups.items():
        base = groups.get((model, "standardised", "fixed"), {})
        figures = [
            k
            for k, v in next(iter(runs.values())).items()
            if k.endswith(("auc", "r2", "rmse")) and isinstance(v, float)
        ]
        entry = {
            "benchmark": "mixed_tasks",
            "summary": True,
            "model": model,
            "targets": targets,
            "weighting": weighting,
            "seeds": sorted(runs),
        }
        for k in figures:
            mean, std = mean_std([r[k] for r in runs.values()])
            entry[k] = [_num(mean), _num(std)]
            seeds = sorted(set(runs) & set(base))
            if (targets, weighting) != ("standardised", "fixed") and len(seeds) > 1:
                _, p = paired_ttest([runs[s][k] for s in seeds], [base[s][k] for s in seeds])
                entry[f"{k} p"] = float(
                    np.format_float_positional(p, precision=2, fractional=False)
                )
        out.append(entry)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--raw-data", type=Path, required=True)
    parser.add_argument("--models", default="infnet,din,mmoe")
    parser.add_argument("--weightings", default="fixed,uncertainty,normalised")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path("runs/mixed-tasks"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    models = args.models.split(",")

    def spec(model: str, weighting: str, seed: int) -> RunSpec:
        train = {"epochs": args.epochs, "batch_size": args.batch_size, "task_weighting": weighting}
        return RunSpec(f"{model} {weighting}", model, train=train, seed=seed)

    plans = [
        (args.raw_data, "raw", [("fixed", spec(m, "fixed", s)) for m in models for s in seeds]),
        (
            args.data,
            "standardised",
            [(w, spec(m, w, s)) for m in models for w in args.weightings.split(",") for s in seeds]
            + [("fixed", spec(m, "fixed", s)) for m in REFERENCES for s in seeds],
        ),
    ]
    lines = []
    for path, scale, runs in plans:
        data = PreparedDataset(path)
        runner = Runner(data, args.cache, workers=args.workers, threads=1)
        try:
            records = runner.run_all([s for _, s in runs], title=f"{scale} targets")
        finally:
            runner.close()
        for (weighting, _), record in zip(runs, records, strict=True):
            lines.append(line(record, scale, weighting, data.schema))
            print(json.dumps(lines[-1]), flush=True)
    for entry in summaries(lines):
        print(json.dumps(entry), flush=True)


if __name__ == "__main__":
    main()
