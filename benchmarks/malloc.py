"""The trainer's malloc setting: train samples/s and peak RSS per model, with glibc's defaults,
with the heap kept for blocks under 64 MB (`keep_freed_memory`, what Trainer.fit sets) and
with every block kept; one JSON line per model and setting, each run in a fresh process.

    python benchmarks/malloc.py [--data data/kuairand] [--models infnet,hstu] [--batch-size 2048]

A run: one warm-up step, 5 timed train steps (one thread), one evaluation forward of 16,384
valid rows (TrainConfig's eval_batch_size, where a model's largest blocks come from), two
more train steps; then the process's peak RSS. HSTU is built with embedding_dim 32, its best
configuration of the KuaiRand tune (benchmarks/results/tune-kuairand).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RUN = """
import json, resource, sys, time
from itertools import islice
import torch
from infnet.data.loader import PreparedDataset
from infnet.malloc import _mallopt, keep_freed_memory, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
from infnet.models import build_model
from infnet.training.config import TrainConfig
from infnet.training.losses import TaskLoss
from infnet.training.step import train_step

data, name, batch_size, setting = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if setting == "bounded":
    assert keep_freed_memory()
elif setting == "unbounded":
    assert _mallopt(M_MMAP_THRESHOLD, 2**31 - 1) and _mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
torch.set_num_threads(1)
dataset = PreparedDataset(data)
torch.manual_seed(0)
model = build_model(name, dataset.schema, {"embedding_dim": 32} if name == "hstu" else {})
loss_fn = TaskLoss(dataset.schema, TrainConfig())
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
batches = list(islice(dataset.batches("train", batch_size, shuffle=True, seed=0), 8))
train_step(model, batches[0], loss_fn, optimizer)
t = time.perf_counter()
for b in batches[1:6]:
    train_step(model, b, loss_fn, optimizer)
speed = 5 * batch_size / (time.perf_counter() - t)
with torch.no_grad():
    model.eval()
    model(next(iter(dataset.batches("valid", TrainConfig().eval_batch_size))))
    model.train()
for b in batches[6:]:
    train_step(model, b, loss_fn, optimizer)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
print(json.dumps({"train_samples_per_s": round(speed), "peak_rss_gb": round(rss, 2)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/kuairand"))
    parser.add_argument("--models", default="infnet,hstu")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--settings", default="default,bounded,unbounded")
    args = parser.parse_args()
    if not (args.data / "schema.json").exists():
        print(json.dumps({"benchmark": "malloc", "skipped": f"no prepared data at {args.data}"}))
        return
    for name in args.models.split(","):
        for setting in args.settings.split(","):
            run = [sys.executable, "-c", RUN, str(args.data), name, str(args.batch_size), setting]
            out = subprocess.run(run, capture_output=True, text=True, check=True).stdout
            record = {"benchmark": "malloc", "model": name, "batch_size": args.batch_size}
            print(json.dumps({**record, "setting": setting, **json.loads(out)}), flush=True)


if __name__ == "__main__":
    main()
