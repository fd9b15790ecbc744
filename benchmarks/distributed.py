"""Scale-out figures, one JSON line each:

    python benchmarks/distributed.py --data PREPARED [--model infnet] [--steps 40]
        [--budget-mb 512] [--skip ddp|loader]

ddp: train samples/s of one model for 1 process of 1 thread, 1 process of 2 threads and
2 DDP processes (gloo) of 1 thread each, the global batch `--batch-size` in every case;
the loader's time included, after 3 warm-up steps, timed on rank 0 between barriers.
loader: one epoch of the train split (batches of `--batch-size`, shuffled) from the
in-memory loader and from the out-of-core loader in `--budget-mb`, each in a fresh
process: samples/s, and the peak resident memory above the process's before the loader
was made (VmHWM - VmRSS, /proc/self/status). Prepare 10M simulated rows with
`infnet prepare synthetic --rows 10000000 --users 50000 --items 20000 --out D`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from itertools import islice
from pathlib import Path

import torch

from infnet.data.loader import PreparedDataset
from infnet.data.parts import PartsDataset
from infnet.models import build_model
from infnet.training import distributed
from infnet.training.config import TrainConfig
from infnet.training.losses import TaskLoss
from infnet.training.step import train_step

WARMUP = 3


def _memory_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _train_rate(data_path: str, model: str, batch: int, steps: int, threads: int, out) -> None:
    """Samples/s of `steps` train steps (this process, or this rank of a DDP group)."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    group = distributed.from_environment(torch.device("cpu"))
    data = PreparedDataset(data_path)
    torch.manual_seed(0)
    net = module = build_model(model, data.schema)
    if group is not None:
        net = torch.nn.parallel.DistributedDataParallel(module)
    loss = TaskLoss(data.schema, TrainConfig())
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    shard = group.shard if group else None
    batches = data.batches("train", batch, shuffle=True, seed=0, shard=shard)
    for b in islice(batches, WARMUP):
        train_step(net, b, loss, optimizer, group=group)
    if group:
        group.barrier()
    started = time.perf_counter()
    for b in islice(batches, steps):
        train_step(net, b, loss, optimizer, group=group)
    if group:
        group.barrier()
    seconds = time.perf_counter() - started
    if group is None or group.is_main:
        out.put(round(steps * batch / seconds))
    distributed.shut_down()


def ddp(args) -> None:
    ctx = multiprocessing.get_context("spawn")
    for procs, threads in ((1, 1), (1, 2), (2, 1)):
        queue = ctx.Manager().Queue()
        common = (str(args.data), args.model, args.batch_size, args.steps, threads)
        if procs == 1:
            p = ctx.Process(target=_train_rate, args=(*common, queue))
            p.start()
            p.join()
        else:
            distributed.spawn(_train_rate, procs, *common, queue)
        record = {
            "benchmark": "distributed",
            "case": "ddp",
            "model": args.model,
            "processes": procs,
            "threads_per_process": threads,
            "global_batch": args.batch_size,
            "steps": args.steps,
            "train_samples_per_s": queue.get(),
        }
        print(json.dumps(record), flush=True)


def _epoch(data_path: str, loader: str, batch: int, budget_mb: float, out) -> None:
    torch.set_num_threads(1)
    before = _memory_kb("VmRSS")
    started = time.perf_counter()
    data = PartsDataset(data_path, budget_mb) if loader == "parts" else PreparedDataset(data_path)
    data.check()  # the in-memory loader reads every split here
    loaded = time.perf_counter() - started
    rows = 0
    for b in data.batches("train", batch, shuffle=True, seed=0):
        rows += len(b)
    seconds = time.perf_counter() - started
    out.put(
        {
            "benchmark": "distributed",
            "case": "loader",
            "loader": loader,
            "budget_mb": budget_mb if loader == "parts" else None,
            "rows": rows,
            "batch_size": batch,
            "load_s": round(loaded, 1),
            "epoch_s": round(seconds, 1),
            "samples_per_s": round(rows / seconds),
            "peak_mb_above_start": round((_memory_kb("VmHWM") - before) / 1024),
        }
    )


def loader(args) -> None:
    ctx = multiprocessing.get_context("spawn")
    for kind in ("memory", "parts"):
        queue = ctx.Manager().Queue()
        p = ctx.Process(
            target=_epoch, args=(str(args.data), kind, args.batch_size, args.budget_mb, queue)
        )
        p.start()
        p.join()
        print(json.dumps(queue.get()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a prepared dataset directory")
    parser.add_argument("--model", default="infnet")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--budget-mb", type=float, default=512)
    parser.add_argument("--skip", choices=["ddp", "loader"])
    args = parser.parse_args()
    if args.skip != "ddp":
        ddp(args)
    if args.skip != "loader":
        loader(args)


if __name__ == "__main__":
    main()
