"""Training and inference speed on the KuaiRand subset, and the share of the machine's peak
it reaches; one JSON line per model and thread count.

    python benchmarks/train_speed.py [--data PREPARED] [--models infnet,mmoe] [--steps 10]
        [--threads 1,2] [--options '{"preset": "v2"}'] [--compile] [--bf16] [--no-prefetch]

Without --data the subset is prepared into a temporary directory first (not timed).
Train: optimizer steps (forward, loss, backward, Adam) on shuffled batches from the
loader, loader time included, after one warm-up step. As in the trainer, the next batch is
assembled on a background thread while the model steps (infnet.data.prefetch; a second core
takes it); --no-prefetch assembles it between the steps, on the one thread. Inference:
forward passes under no_grad. Each model is built with its default config (and --options,
for every model); --compile times the train steps of torch.compile(model) (train.compile),
after compiling; --bf16 runs them under torch.autocast("cpu", bfloat16). The process keeps
freed blocks under 64 MB for reuse, as the trainer's does (infnet.malloc.keep_freed_memory).

FLOPs are counted by torch.utils.flop_counter (matrix products and attention, 2 per
multiply-add; elementwise work is not counted; scaled-dot-product attention through its
math kernel, whose products the counter sees): one train step (forward and backward) and
one forward, per sample. GFLOP/s = FLOPs per sample x samples/s. The peak is measured here,
first, at each thread count: the best of fp32 2,048 x 2,048 matrix products (a "peak" line),
so the share says how much of what this machine's GEMM reaches the model gets.
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
from infnet.data.prefetch import prefetch
from infnet.data.sources.kuairand import prepare_kuairand
from infnet.experiments.measure import counted_flops, forward_flops
from infnet.malloc import keep_freed_memory
from infnet.models import build_model
from infnet.training.config import TrainConfig
from infnet.training.losses import TaskLoss
from infnet.training.step import train_step

DEFAULT_DATA_DIR = Path(
    os.environ.get(
        "INFNET_DATA_DIR", Path(__file__).resolve().parents[2] / "shared/data/kuairand-pure"
    )
)


def gemm_peak_gflops(n: int = 2048, seconds: float = 2.0) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best, spent = float("inf"), 0.0
    while spent < seconds:
        t = time.perf_counter()
        torch.mm(a, b)
        dt = time.perf_counter() - t
        best, spent = min(best, dt), spent + dt
    return 2 * n**3 / best / 1e9


def measure(
    data: PreparedDataset,
    model_name: str,
    batch_size: int,
    steps: int,
    options: dict,
    peak: float,
    compile: bool = False,
    bf16: bool = False,
    prefetched: bool = True,
) -> dict:
    torch.manual_seed(0)
    model = build_model(model_name, data.schema, options)
    loss_fn = TaskLoss(data.schema, TrainConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = data.batches("train", batch_size, shuffle=True, seed=0)
    batches = prefetch(batches) if prefetched else batches

    net = model

    def step(batch) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            train_step(net, batch, loss_fn, optimizer)

    first = next(batches)
    # the warm-up, counted (eagerly: the counter does not see compiled code)
    train_flops = counted_flops(lambda: step(first)) / len(first)
    if compile:
        net = torch.compile(model)
        t0 = time.perf_counter()
        step(next(batches))
        compile_s = time.perf_counter() - t0
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
    infer_flops = forward_flops(model, batch)
    train_rate, infer_rate = rows / train_s, batch_size / infer_s
    return {
        "benchmark": "train_speed",
        "model": model_name,
        "options": options,
        "compiled": compile,
        "bf16_autocast": bf16,
        "prefetch": prefetched,
        **({"compile_s": round(compile_s, 1)} if compile else {}),
        "parameters": model.num_parameters(),
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "train_samples_per_s": round(train_rate),
        "train_mflop_per_sample": round(train_flops / 1e6, 2),
        "train_gflop_per_s": round(train_flops * train_rate / 1e9, 1),
        "train_share_of_peak": round(train_flops * train_rate / 1e9 / peak, 3),
        "inference_ms_per_batch": round(infer_s * 1000, 1),
        "inference_samples_per_s": round(infer_rate),
        "inference_mflop_per_sample": round(infer_flops / 1e6, 2),
        "inference_gflop_per_s": round(infer_flops * infer_rate / 1e9, 1),
        "inference_share_of_peak": round(infer_flops * infer_rate / 1e9 / peak, 3),
        "load_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a prepared dataset directory")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--models", default="infnet")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated")
    parser.add_argument("--compile", action="store_true", help="torch.compile the train steps")
    parser.add_argument("--bf16", action="store_true", help="train steps under bf16 autocast")
    parser.add_argument(
        "--no-prefetch", action="store_true", help="assemble each batch between the steps"
    )
    parser.add_argument("--options", type=json.loads, default={}, help="model options (JSON)")
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
        keep_freed_memory()  # as Trainer.fit does
        for threads in map(int, args.threads.split(",")):
            torch.set_num_threads(threads)
            peak = gemm_peak_gflops()
            print(
                json.dumps(
                    {
                        "benchmark": "train_speed",
                        "peak_gflop_per_s": round(peak, 1),
                        "threads": threads,
                    }
                ),
                flush=True,
            )
            for name in args.models.split(","):
                record = measure(
                    data,
                    name,
                    args.batch_size,
                    args.steps,
                    args.options,
                    peak,
                    args.compile,
                    args.bf16,
                    not args.no_prefetch,
                )
                print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
