"""Training and inference speed on the KuaiRand subset; one JSON line per model.

    python benchmarks/train_speed.py [--data PREPARED] [--models infnet,mmoe] [--steps 10]

Without --data the subset is prepared into a temporary directory first (not timed).
Train: optimizer steps (forward, loss, backward, Adam) on shuffled batches from the
loader, loader time included, after one warm-up step. Inference: forward passes under
no_grad. Each model is built with its default config.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from itertools import islice
from pathlib import Path

import torch

from infnet.data.loader import PreparedDataset
from infnet.data.sources.kuairand import prepare_kuairand
from infnet.models import build_model
from infnet.training.config import TrainConfig
from infnet.training.losses import TaskLoss
from infnet.training.step import train_step

DEFAULT_DATA_DIR = Path(
    os.environ.get(
        "INFNET_DATA_DIR", Path(__file__).resolve().parents[2] / "shared/data/kuairand-pure"
    )
)


def measure(data: PreparedDataset, model_name: str, batch_size: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = build_model(model_name, data.schema)
    loss_fn = TaskLoss(data.schema, TrainConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = data.batches("train", batch_size, shuffle=True, seed=0)

    def step(batch) -> None:
        train_step(model, batch, loss_fn, optimizer)

    step(next(batches))  # warm-up
    t0 = time.perf_counter()
    rows = 0
    for batch in islice(batches, steps):
        step(batch)
        rows += len(batch)
    train_s = time.perf_counter() - t0

    model.eval()
    batch = data.batch_at("test", torch.arange(batch_size).numpy())
    with torch.no_grad():
        model(batch)
        t0 = time.perf_counter()
        for _ in range(steps):
            model(batch)
        infer_s = (time.perf_counter() - t0) / steps
    return {
        "benchmark": "train_speed",
        "model": model_name,
        "parameters": model.num_parameters(),
        "batch_size": batch_size,
        "train_samples_per_s": round(rows / train_s),
        "inference_ms_per_batch": round(infer_s * 1000, 1),
        "inference_samples_per_s": round(batch_size / infer_s),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a prepared dataset directory")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--models", default="infnet")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.data
        if path is None:
            if not (args.data_dir / "user_features_pure.csv").is_file():
                print(
                    json.dumps(
                        {"benchmark": "train_speed", "skipped": f"no data at {args.data_dir}"}
                    )
                )
                return
            path = Path(tmp) / "kr"
            prepare_kuairand(args.data_dir, path, progress=False)
        data = PreparedDataset(path)
        for name in args.models.split(","):
            print(json.dumps(measure(data, name, args.batch_size, args.steps)), flush=True)


if __name__ == "__main__":
    main()
