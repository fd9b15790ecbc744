"""Initialisation measured: each model trained under each initialisation for the same
seeds, one JSON line per run (test AUC per task at the best validation epoch), then one
line per model and initialisation against the default with the paired t-test over seeds.

    python benchmarks/init.py --data PREPARED --models shared_bottom,mmoe --seeds 0,1,2

The default is models/init.py's (Xavier-normal linears, feature tables N(0, 1e-4^2)); the
others change one part or both back to what infnet used before (PyTorch's linears, tables
N(0, 0.01^2)). Run on the FuxiCTR protocol features
(`infnet prepare table --config ../shared/peers/kuairand-fuxictr-protocol.yaml`) with
5 epochs at batch 4,096, it is the same-data comparison with FuxiCTR's figures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from infnet.data.loader import PreparedDataset
from infnet.experiments.stats import paired_ttest
from infnet.training.config import RunConfig, TrainConfig
from infnet.training.trainer import Trainer

DEFAULT = "default"  # Xavier-normal linears, tables N(0, 1e-4^2)
INITS: dict[str, dict] = {
    DEFAULT: {},
    "before": {"linear_init": "torch", "embedding_std": 0.01},
    "xavier_emb_0.01": {"embedding_std": 0.01},
    "torch_emb_1e-4": {"linear_init": "torch"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models", default="shared_bottom,mmoe")
    parser.add_argument("--inits", default=",".join(INITS), help="comma-separated names")
    parser.add_argument("--options", default="{}", help="JSON model options of every run")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4096)
    args = parser.parse_args()
    data = PreparedDataset(args.data)
    tasks = [t.name for t in data.schema.tasks if t.kind == "binary"]
    seeds = [int(s) for s in args.seeds.split(",")]
    inits = args.inits.split(",")
    if unknown := sorted(set(inits) - set(INITS)):
        parser.error(f"unknown --inits {unknown}; known: {', '.join(INITS)}")
    for model in args.models.split(","):
        auc: dict[str, dict[str, list[float]]] = {}
        for name in inits:
            auc[name] = {t: [] for t in [*tasks, "mtl_auc"]}
            for seed in seeds:
                options = {**json.loads(args.options), **INITS[name]}
                run = RunConfig(
                    data=str(args.data),
                    model=model,
                    model_options=options,
                    train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=seed),
                )
                t0 = time.perf_counter()
                trainer = Trainer.from_config(run, None, data=data, progress=False)
                result = trainer.fit()
                test = result["test"]
                for t in tasks:
                    auc[name][t].append(test[t]["auc"])
                auc[name]["mtl_auc"].append(test["mtl_auc"])
                line = {
                    "benchmark": "init",
                    "model": model,
                    "init": name,
                    "seed": seed,
                    "best_epoch": result["best"]["epoch"],
                    "auc": {t: round(test[t]["auc"], 4) for t in tasks},
                    "mtl_auc": round(test["mtl_auc"], 4),
                    "seconds": round(time.perf_counter() - t0, 1),
                    "threads": torch.get_num_threads(),
                }
                print(json.dumps(line), flush=True)
        for name in inits:
            summary = {"benchmark": "init", "model": model, "init": name, "seeds": seeds}
            for t, values in auc[name].items():
                summary[t] = {"mean": round(float(np.mean(values)), 4)}
                if name != DEFAULT and DEFAULT in auc:
                    _, p = paired_ttest(auc[DEFAULT][t], values)
                    diff = np.mean(auc[DEFAULT][t]) - np.mean(values)
                    summary[t] |= {"default_minus_this": round(float(diff), 4), "p": float(p)}
            print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
