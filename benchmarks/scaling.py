"""One INFNet block versus the full-attention variant as the total sequence length L grows.

    .venv/bin/python benchmarks/scaling.py [--lengths 64 256 1024 4096] [--batch 256] [--dim 16]
        [--preset v1|v2]

The model under test is `INFNet` (preset v2 by default, --preset) with num_blocks=1 (tokens,
hubs, one block, heads), once with hubs (the paper) and once with use_hubs=false (one full
self-attention
over all M + L + N_task tokens: the quadratic reference). F = 4 behaviour types of L / 4
positions each, every position a real event (the worst case for the proxy path, which does
not skip padding), M = 6 categorical fields, 3 tasks.

Time: the best of several repetitions (at least three, until ~2 s are spent; the median and
the worst are printed beside it), forward alone
(eval, no grad) and forward + backward (train). Memory: each point runs in a fresh child
process; peak = the child's maximum resident set size (ru_maxrss) during the measured call
minus its resident size just before it. That counts every allocation of the call (torch's
CPU allocator is plain malloc; tracemalloc would miss tensors), not only the tensors that
stay alive. A child that runs out of memory or time is reported as such, not estimated.

Prints one JSON line per length, then a summary line: the speedups at the longest length,
and the exponent b of time ~ L^b for INFNet (least squares on log-log over the lengths).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def _child(variant: str, mode: str, length: int, batch: int, dim: int, preset: str) -> dict:
    import torch

    from infnet.data.batch import Batch
    from infnet.data.schema import CategoricalField, Schema, SequenceSpec, Task
    from infnet.models import build_model

    torch.manual_seed(0)
    F, n = 4, length // 4
    schema = Schema(
        dataset="scaling",
        fields=[
            CategoricalField(name="video_id", group="item", vocab_size=10_000),
            CategoricalField(name="author_id", group="item", vocab_size=1_000),
            CategoricalField(name="tag", group="item", vocab_size=50),
            CategoricalField(name="user_id", group="user", vocab_size=5_000),
            CategoricalField(name="age", group="user", vocab_size=8),
            CategoricalField(name="hour", group="context", vocab_size=26),
        ],
        sequences=SequenceSpec(
            behaviours=["click", "like", "long_view", "comment"],
            side_fields=["video_id", "author_id", "tag"],
            max_len=n,
        ),
        tasks=[Task(name=t, kind="binary") for t in ("click", "like", "long_view")],
    )
    vocab = torch.tensor([10_000, 1_000, 50])
    b = Batch(
        categorical=torch.stack(
            [torch.randint(1, f.vocab_size, (batch,)) for f in schema.fields], 1
        ),
        seq_ids=(torch.rand(batch, F, n, 3) * (vocab - 1)).long() + 1,
        seq_mask=torch.ones(batch, F, n, dtype=torch.bool),
        seq_gap=torch.randint(1, 20, (batch, F, n)),
        labels=torch.randint(0, 2, (batch, 3)).float(),
        label_mask=torch.ones(batch, 3, dtype=torch.bool),
        user=torch.zeros(batch, dtype=torch.long),
    )
    config = {
        "preset": preset,
        "embedding_dim": dim,
        "num_blocks": 1,
        "use_hubs": variant == "infnet",
    }
    model = build_model("infnet", schema, config)

    def call() -> None:
        if mode == "forward":
            model.eval()
            with torch.no_grad():
                model(b)
        else:
            model.train()
            model.zero_grad(set_to_none=True)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(b).logits, b.labels)
            loss.backward()

    statm = Path("/proc/self/statm").read_text().split()
    rss_before = int(statm[1]) * os.sysconf("SC_PAGE_SIZE")
    start = time.perf_counter()
    call()  # the first call is the memory measurement (and the warm-up)
    first = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times, spent = [], first
    while (spent < 2.0 and len(times) < 5) or len(times) < 3:
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
        spent += times[-1]
    return {
        "ms": round(1e3 * min(times), 2),
        # the spread over the repetitions, so a difference can be judged against it
        "ms_median": round(1e3 * sorted(times)[len(times) // 2], 2),
        "ms_max": round(1e3 * max(times), 2),
        "reps": len(times),
        "peak_mb": round(max(peak - rss_before, 0) / 2**20, 1),
        "params": model.num_parameters(),
    }


def _measure(
    variant: str, mode: str, length: int, batch: int, dim: int, preset: str, timeout: float
) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, mode, str(length), str(batch), str(dim)]
    cmd.append(preset)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    if out.returncode != 0:
        reason = "killed (out of memory?)" if out.returncode < 0 else out.stderr.strip()[-300:]
        return {"error": reason}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024, 4096])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per child")
    parser.add_argument("--preset", default="v2", choices=["v1", "v2"])
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, mode, length, batch, dim, preset = args.child
        print(json.dumps(_child(variant, mode, int(length), int(batch), int(dim), preset)))
        return

    infnet_ms: dict[int, float] = {}
    last: dict = {}
    for length in args.lengths:
        row: dict = {"L": length, "batch": args.batch, "dim": args.dim, "preset": args.preset}
        for mode, tag in (("forward", "fwd"), ("forward_backward", "fwdbwd")):
            for variant in ("infnet", "full"):
                r = _measure(variant, mode, length, args.batch, args.dim, args.preset, args.timeout)
                if "error" in r:
                    row[f"{variant}_{tag}_error"] = r["error"]
                else:
                    row[f"{variant}_{tag}_ms"] = r["ms"]
                    row[f"{variant}_{tag}_ms_median"] = r["ms_median"]
                    row[f"{variant}_{tag}_ms_max"] = r["ms_max"]
                    row[f"{variant}_{tag}_reps"] = r["reps"]
                    row[f"{variant}_{tag}_peak_mb"] = r["peak_mb"]
            if f"infnet_{tag}_ms" in row and f"full_{tag}_ms" in row:
                row[f"{tag}_speedup"] = round(row[f"full_{tag}_ms"] / row[f"infnet_{tag}_ms"], 2)
                inf_mb, full_mb = row[f"infnet_{tag}_peak_mb"], row[f"full_{tag}_peak_mb"]
                row[f"{tag}_memory_ratio"] = round(full_mb / inf_mb, 2) if inf_mb > 0 else None
        if "infnet_fwd_ms" in row:
            infnet_ms[length] = row["infnet_fwd_ms"]
        print(json.dumps(row), flush=True)
        last = row

    xs = [math.log(L) for L in infnet_ms]
    ys = [math.log(t) for t in infnet_ms.values()]
    slope = None
    if len(xs) >= 2:
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mx) ** 2 for x in xs
        )
    speedup = last.get("fwd_speedup")
    print(
        json.dumps(
            {
                "summary": True,
                "L_max": last.get("L"),
                "fwd_speedup_at_L_max": speedup,
                "fwdbwd_speedup_at_L_max": last.get("fwdbwd_speedup"),
                "infnet_fwd_time_exponent": None if slope is None else round(slope, 2),
                "target_10x_met": None if speedup is None else speedup >= 10,
                "threads": _threads(),
                "load_avg_1min": round(os.getloadavg()[0], 2),
            }
        )
    )


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
