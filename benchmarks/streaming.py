"""Label matcher throughput, peak memory and label-to-sample lag; prints JSON lines.

    python benchmarks/streaming.py [--events 1000000] [--backends sqlite,redis]
                                   [--redis redis://127.0.0.1:6379/0]

Traffic: impressions one every 2 ms of event time, each with the KuaiRand-sized history
(3 behaviours x 50 events x 3 side fields), a click for 30% of them and a like for 3%
after an exponential delay (mean 60 s), 1% of callbacks resent; windows 30 min, lateness
60 s. The log is filled first (not timed), then the matcher drains it in steps of 2,000
entries a stream. `events_per_s` counts impressions and labels read; `peak_rss_mb` is the
process's peak resident memory over the run (ru_maxrss, so one backend per process: the
script runs each in a child). The schema is the simulator's (tasks is_click, is_like,
long_view; long view gets no callbacks, so its windows close as negatives).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from infnet.data.schema import Schema
from infnet.streaming.events import IMPRESSIONS, LABELS, Impression, Label, encode, open_event_log
from infnet.streaming.label_matcher import LabelMatcher, MatcherConfig


def _schema(tmp: Path) -> Schema:
    from infnet.data.sources.synthetic import prepare_synthetic

    prepare_synthetic(tmp / "sim", rows=2000, users=100, items=100, seed=0, max_len=8)
    return Schema.load(tmp / "sim" / "schema.json")


def fill(url: str, events: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    log = open_event_log(url)
    n_imp = int(events / 1.34)  # 30% clicks, 3% likes, 1% resent: ~1.34 events an impression
    seq_ids = rng.integers(1, 1000, (3, 50, 3))
    mask = np.ones((3, 50), bool)
    gap = rng.integers(1, 20, (3, 50))
    total, chunk = 0, 5000
    for lo in range(0, n_imp, chunk):
        imps, labels = [], []
        for i in range(lo, min(lo + chunk, n_imp)):
            t = 1_700_000_000_000 + i * 2
            imps.append(encode(Impression(f"r{i}", str(i % 997), str(i % 50_000), 0, t, t, "m", "a", "f",
                                          np.arange(1), seq_ids, mask, gap)))  # fmt: skip
            for task, p in (("is_click", 0.3), ("is_like", 0.03)):
                if rng.random() < p:
                    at = t + int(rng.exponential(60_000))
                    lab = encode(Label(f"r{i}", str(i % 997), task, 1.0, at, f"{i}-{task}"))
                    labels.append(lab)
                    if rng.random() < 0.01:
                        labels.append(lab)
        log.append(IMPRESSIONS, imps)
        log.append(LABELS, labels)
        total += len(imps) + len(labels)
    log.close()
    return total


def one(backend: str, events: int, redis_url: str) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="infnet-bench-stream-"))
    url = str(tmp / "events.sqlite") if backend == "sqlite" else (
        f"{redis_url}?prefix=bench-{uuid.uuid4().hex[:8]}"
    )  # fmt: skip
    t0 = time.perf_counter()
    total = fill(url, events)
    fill_s = time.perf_counter() - t0
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    m = LabelMatcher(open_event_log(url), tmp / "matcher.sqlite", _schema(tmp), MatcherConfig())
    t0 = time.perf_counter()
    steps = 0
    while m.step() > 0:
        steps += 1
    m.step(drain=True)
    seconds = time.perf_counter() - t0
    out = {
        "benchmark": "streaming_matcher",
        "backend": backend,
        "events": total,
        "impressions": m.counts["impressions"],
        "labels": m.counts["labels"],
        "samples": m.counts["samples"],
        "duplicate_label": m.counts["duplicate_label"],
        "dead_letters": sum(v for k, v in m.counts.items() if k.startswith("dead:")),
        "seconds": round(seconds, 2),
        "events_per_s": round(total / seconds),
        "fill_s": round(fill_s, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_before_matcher_mb": round(rss0, 1),
        "state_rows_after": m.state_sizes(),
        "state_file_mb": round((tmp / "matcher.sqlite").stat().st_size / 2**20, 1),
        "cpu": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
    }
    m.close()
    shutil.rmtree(tmp)  # gigabytes at 1M events
    if backend == "redis":
        import redis

        client = redis.Redis.from_url(redis_url)
        prefix = url.split("prefix=")[1]
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--backends", default="sqlite,redis")
    p.add_argument(
        "--redis", default=os.environ.get("INFNET_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    p.add_argument("--child", default=None)
    args = p.parse_args()
    if args.child:
        print(json.dumps(one(args.child, args.events, args.redis)), flush=True)
        return
    for backend in args.backends.split(","):
        subprocess.run([sys.executable, __file__, "--child", backend, "--events", str(args.events),
                        "--redis", args.redis], check=True)  # fmt: skip


if __name__ == "__main__":
    main()
