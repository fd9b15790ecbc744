"""Binary and regression tasks trained together: the target scale and the task weighting,
measured, with the reference models beside. One JSON line per run: test AUC of each
binary task, R2 (and RMSE) of each regression task, MTL-AUC, the run's task flags.

    python benchmarks/mixed_tasks.py --data STANDARDISED --raw-data RAW \\
        [--models infnet,din,mmoe] [--weightings fixed,uncertainty,normalised] \\
        [--epochs 1] [--seeds 0] [--workers 2] [--cache runs/mixed-tasks]

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

from infnet.data.loader import PreparedDataset
from infnet.experiments.runner import Runner, RunSpec, ok

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
    for path, scale, runs in plans:
        data = PreparedDataset(path)
        runner = Runner(data, args.cache, workers=args.workers, threads=1)
        try:
            records = runner.run_all([s for _, s in runs], title=f"{scale} targets")
        finally:
            runner.close()
        for (weighting, _), record in zip(runs, records, strict=True):
            print(json.dumps(line(record, scale, weighting, data.schema)), flush=True)


if __name__ == "__main__":
    main()
