"""Metric speed: gAUC on 1M rows / 100k users and AUC on 10M rows, one JSON line each.

    .venv/bin/python benchmarks/metrics.py [--gauc-rows 1000000 --users 100000 --auc-rows 10000000]

Scores are float32 like a model's output; each figure is the best of --repeats runs.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from infnet.metrics import auc, gauc


def best_seconds(fn, repeats: int) -> tuple[float, float]:
    times, value = [], float("nan")
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return min(times), value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gauc-rows", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--auc-rows", type=int, default=10_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)

    n = args.gauc_rows
    users = rng.integers(0, args.users, n)
    y = rng.random(n) < 0.3
    s = (rng.random(n) + 0.2 * y).astype(np.float32)
    sec, value = best_seconds(lambda: gauc(y, s, users), args.repeats)
    print(
        json.dumps(
            {
                "metric": "gauc",
                "rows": n,
                "users": args.users,
                "seconds": round(sec, 3),
                "value": round(value, 4),
            }
        )
    )

    n = args.auc_rows
    y = rng.random(n) < 0.3
    s = (rng.random(n) + 0.2 * y).astype(np.float32)
    sec, value = best_seconds(lambda: auc(y, s), args.repeats)
    print(
        json.dumps({"metric": "auc", "rows": n, "seconds": round(sec, 3), "value": round(value, 4)})
    )


if __name__ == "__main__":
    main()
