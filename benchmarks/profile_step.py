"""Where a model's train step goes: a torch.profiler table of a few steps, the minor page faults
per step, and the share of history positions that are padding; JSON lines.

    python benchmarks/profile_step.py [--data data/kuairand] [--model infnet] [--steps 2]
        [--batch-size 4096] [--malloc default|bounded] [--top 12] [--shapes]

One thread; one warm-up step, then `--steps` profiled steps on shuffled train batches. A
"step" line gives the self CPU time per step and the minor page faults per step (measured
over the same steps without the profiler); an "op" line per operator, the largest self CPU
first. `--malloc bounded` keeps freed blocks under 64 MB as Trainer.fit does
(infnet.malloc.keep_freed_memory); `default` leaves glibc's settings. `--shapes` gives an
"op" line per operator and input shapes (which LayerNorm, which copy) instead of per operator.
"""

from __future__ import annotations

import argparse
import json
import resource
from itertools import islice
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from infnet.data.loader import PreparedDataset
from infnet.malloc import keep_freed_memory
from infnet.models import build_model
from infnet.training.config import TrainConfig
from infnet.training.losses import TaskLoss
from infnet.training.step import train_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/kuairand"))
    parser.add_argument("--model", default="infnet")
    parser.add_argument("--options", type=json.loads, default={}, help="model options (JSON)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--malloc", choices=["default", "bounded"], default="bounded")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--shapes", action="store_true", help="one line per op and input shapes")
    args = parser.parse_args()
    if not (args.data / "schema.json").exists():
        print(
            json.dumps({"benchmark": "profile_step", "skipped": f"no prepared data at {args.data}"})
        )
        return
    if args.malloc == "bounded":
        keep_freed_memory()
    torch.set_num_threads(1)
    data = PreparedDataset(args.data)
    torch.manual_seed(0)
    model = build_model(args.model, data.schema, args.options)
    loss_fn = TaskLoss(data.schema, TrainConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = list(
        islice(data.batches("train", args.batch_size, shuffle=True, seed=0), 1 + 2 * args.steps)
    )
    train_step(model, batches[0], loss_fn, optimizer)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for b in batches[1 : 1 + args.steps]:
        train_step(model, b, loss_fn, optimizer)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
        for b in batches[1 + args.steps :]:
            train_step(model, b, loss_fn, optimizer)
    averages = prof.key_averages(group_by_input_shape=args.shapes)
    ops = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops) / 1e3 / args.steps  # ms per step
    head = {"benchmark": "profile_step", "model": args.model, "malloc": args.malloc}
    padding = None
    if batches[0].seq_mask is not None:
        padding = round(1 - float(torch.cat([b.seq_mask for b in batches]).float().mean()), 3)
    step = {"self_cpu_ms_per_step": round(total, 1), "minor_faults_per_step": faults // args.steps}
    print(json.dumps({**head, "line": "step", **step, "padded_history_share": padding}))
    for e in ops[: args.top]:
        ms = e.self_cpu_time_total / 1e3 / args.steps
        record = {"op": e.key, "self_cpu_ms_per_step": round(ms, 1), "share": round(ms / total, 3)}
        if args.shapes:
            record["input_shapes"] = [s for s in e.input_shapes if s]
        print(json.dumps({**head, "line": "op", **record, "calls_per_step": e.count // args.steps}))


if __name__ == "__main__":
    main()
