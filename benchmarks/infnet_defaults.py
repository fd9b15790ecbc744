"""INFNet's engineering options (the ones the paper leaves open), measured: one JSON line
per variant with test AUC / gAUC per task, MTL-AUC and train seconds.

    python benchmarks/infnet_defaults.py --data PREPARED [--epochs 2] [--seeds 0]

Each variant changes one option of the default config (models/infnet.py), so every line
reads as "the default, except ...". Without --data a 100k-row simulator dataset
(max_len 20) is prepared into a temporary directory first.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from infnet.data.loader import PreparedDataset
from infnet.data.sources.synthetic import prepare_synthetic
from infnet.training.config import RunConfig, TrainConfig
from infnet.training.trainer import Trainer

# v1's open engineering options (preset v1), and v2's (preset v2)
VARIANTS: dict[str, dict] = {
    "v1 default": {"preset": "v1"},
    "v1 norm=post": {"preset": "v1", "norm": "post"},
    "v1 pgu_hubs=pre (paper eq. 14)": {"preset": "v1", "pgu_hubs": "pre"},
    "v1 gate=sigmoid (paper)": {"preset": "v1", "gate": "sigmoid"},
    "v1 gate=residual": {"preset": "v1", "gate": "residual"},
    "v1 norm=none": {"preset": "v1", "norm": "none"},
    "v1 residual=false": {"preset": "v1", "residual": False},
    "v1 sequence_pooling=sum (paper)": {"preset": "v1", "sequence_pooling": "sum"},
    "v2 default": {"preset": "v2"},
    "v2 input_norm=false": {"preset": "v2", "input_norm": False},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.data
        if path is None:
            path = Path(tmp) / "sim"
            prepare_synthetic(
                path, rows=100_000, users=3_000, items=1_500, max_len=20, progress=False
            )
        data = PreparedDataset(path)
        for name in args.variants.split(","):
            for seed in [int(s) for s in args.seeds.split(",")]:
                run = RunConfig(
                    data=str(path),
                    model="infnet",
                    model_options=VARIANTS[name],
                    train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=seed),
                )
                t0 = time.perf_counter()
                result = Trainer.from_config(run, None, data=data, progress=False).fit()
                test = result["test"]
                print(
                    json.dumps(
                        {
                            "benchmark": "infnet_defaults",
                            "variant": name,
                            "seed": seed,
                            "mtl_auc": round(test["mtl_auc"], 4),
                            "mtl_gauc": round(test["mtl_gauc"], 4),
                            "auc": {t: round(test[t]["auc"], 4) for t in data.schema.task_names},
                            "seconds": round(time.perf_counter() - t0, 1),
                            "threads": torch.get_num_threads(),
                        }
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
