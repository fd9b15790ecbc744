"""The streaming loop's throughput, memory and lags; prints JSON lines.

    python benchmarks/streaming.py [--events 1000000] [--backends sqlite,redis]
                                   [--redis redis://127.0.0.1:6379/0]
    python benchmarks/streaming.py --live 120 [--rate 200] [--backends sqlite]

Matcher throughput (the first form). Traffic: impressions one every 2 ms of event time, each with the KuaiRand-sized history
(3 behaviours x 50 events x 3 side fields), a click for 30% of them and a like for 3%
after an exponential delay (mean 60 s), 1% of callbacks resent; windows 30 min, lateness
60 s. The log is filled first (not timed), then the matcher drains it in steps of 2,000
entries a stream. `events_per_s` counts impressions and labels read; `peak_rss_mb` is the
process's peak resident memory over the run (ru_maxrss, so one backend per process: the
script runs each in a child). The schema is the simulator's (tasks is_click, is_like,
long_view; long view gets no callbacks, so its windows close as negatives).

Live lags (`--live SECONDS`): the embedded loop (`StreamLoop`, what `infnet stream run`
runs) against a real `infnet serve` in another process, fed in real time: `--rate`
impressions a second (simulator rows, as the server would log them) with event time = wall
clock, their logged positives as callbacks after an exponential delay (mean 2 s); a fifth
of the impressions get a callback for every task, negatives too, so their samples can be
emitted before their windows close. Windows 10 s, lateness 1 s, parts of 512 samples,
batches of 256, a version published every 2,000 samples (margin 1, so every one is
swapped in). Figures, p50 / p99 over the samples:
- `label_to_sample_s`: from a sample's last label's append to its emission (it includes
  the wait the windows ask for: a sample with a task unlabelled waits for its window);
- `ready_to_sample_s`: from the moment a sample may be emitted (its last label, when every
  task is labelled; its impression + longest window + lateness, otherwise) to its emission:
  the loop's own delay;
- `sample_to_served_s`: from a sample's emission to the server answering with the first
  version trained on it (parts, training, judging, export with its ONNX parity check, and
  the swap).
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import polars as pl

from infnet.data.loader import PreparedDataset
from infnet.data.schema import Schema
from infnet.streaming.events import IMPRESSIONS, LABELS, Impression, Label, encode, open_event_log
from infnet.streaming.label_matcher import LabelMatcher, MatcherConfig, read_samples, sample_id

sys.path.insert(0, str(Path(__file__).parent))
from serving import start_server  # noqa: E402  (the serving benchmark's server start)


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


class Traffic(threading.Thread):
    """Impressions at `rate` a second for `seconds`, event time = wall clock, their labels
    after their delays; `keys` holds (impression ms, last label ms, every task labelled)."""

    def __init__(self, url: str, data: PreparedDataset, rate: float, seconds: float) -> None:
        super().__init__(daemon=True)
        self.url, self.rate, self.seconds = url, rate, seconds
        n = data.num_rows("train")
        self.rows = data.batch_at("train", np.arange(n))
        self.tasks = data.schema.task_names
        self.keys: dict[tuple[str, str], list] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as err:  # reported by the main thread
            self.error = err

    def _run(self) -> None:
        rng = np.random.default_rng(0)
        log = open_event_log(self.url)
        b, n = self.rows, len(self.rows.user)
        due: list[tuple[int, int, str, str, str, float]] = []  # (at, n, request, item, task, value)
        order = itertools.count()
        start, i = time.time(), 0
        while (now := time.time()) - start < self.seconds or due:
            imps = []
            while now - start < self.seconds and i < (now - start) * self.rate:
                j = i % n
                rid, item, t = f"q{i}", str(int(b.categorical[j, 0])), int(now * 1000)
                imps.append(encode(Impression(
                    rid, item, str(int(b.user[j])), 0, t, t, "base", "default", "f0",
                    b.categorical[j].numpy(), b.seq_ids[j].numpy(), b.seq_mask[j].numpy(),
                    b.seq_gap[j].numpy(),
                )))  # fmt: skip
                every = rng.random() < 0.2
                self.keys[(rid, item)] = [t, None, every]
                for k, task in enumerate(self.tasks):
                    value = float(b.labels[j, k])
                    if value == 1.0 or every:
                        at = t + int(rng.exponential(2000))
                        heapq.heappush(due, (at, next(order), rid, item, task, value))
                i += 1
            log.append(IMPRESSIONS, imps)
            labels, now_ms = [], int(time.time() * 1000)
            while due and due[0][0] <= now_ms:
                _, _, rid, item, task, value = heapq.heappop(due)
                labels.append(encode(Label(rid, item, task, value, now_ms, f"{rid}-{item}-{task}")))
                self.keys[(rid, item)][1] = now_ms
            log.append(LABELS, labels)
            time.sleep(0.01)
        log.close()


def _start_model(tmp: Path) -> PreparedDataset:
    """The simulator, a model trained for 20 steps, exported, and a feature store."""
    from infnet.data.sources.synthetic import prepare_synthetic
    from infnet.serving.export import export_run
    from infnet.serving.snapshot import snapshot_from_prepared
    from infnet.serving.stores import open_store
    from infnet.training.config import RunConfig, TrainConfig
    from infnet.training.trainer import Trainer

    prepare_synthetic(tmp / "sim", rows=20_000, users=500, items=300, seed=0, max_len=8)
    config = RunConfig(
        data=str(tmp / "sim"), model="infnet",
        model_options={"preset": "v2", "embedding_dim": 8, "num_blocks": 1, "time_aware": True},
        train=TrainConfig(epochs=1, batch_size=256, max_steps=20, device="cpu"),
    )  # fmt: skip
    Trainer.from_config(config, tmp / "run", progress=False).fit()
    export_run(tmp / "run", tmp / "base")
    data = PreparedDataset(tmp / "sim")
    as_of = data.schema.split("valid").time_min
    open_store(tmp / "features.sqlite").write(snapshot_from_prepared(tmp / "sim", as_of=as_of))
    return data


def _serve(tmp: Path) -> tuple[subprocess.Popen, str]:
    (tmp / "server.yaml").write_text(
        f"model: {tmp / 'base'}\nstore: {tmp / 'features.sqlite'}\nrequest_log: null\n"
        f"reload_root: {tmp}\n"
    )
    return start_server(tmp / "server.yaml", tmp / "serve.log", {"INFNET_ADMIN_TOKEN": "bench"})


def _pct(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    p50, p99 = np.percentile(values, [50, 99])
    return {"n": len(values), "p50": round(float(p50), 2), "p99": round(float(p99), 2)}


def live(backend: str, seconds: float, rate: float, redis_url: str) -> dict:
    from infnet.streaming.loop import StreamLoop
    from infnet.streaming.publisher import PublisherConfig
    from infnet.streaming.samples import held_out

    tmp = Path(tempfile.mkdtemp(prefix="infnet-bench-live-"))
    url = str(tmp / "events.sqlite") if backend == "sqlite" else (
        f"{redis_url}?prefix=bench-{uuid.uuid4().hex[:8]}"
    )  # fmt: skip
    data = _start_model(tmp)
    server, server_url = _serve(tmp)
    tail = 40.0  # traffic after the measured impressions: it moves the watermark past them
    loop = StreamLoop(
        open_event_log(url), tmp / "run", tmp / "base", tmp / "loop", server=server_url,
        token="bench", matcher=MatcherConfig(default_window_s=10, lateness_s=1, orphan_grace_s=5),
        publisher=PublisherConfig(every_samples=2000, every_s=3600, margin=1.0, window=500),
        batch_size=256, part_rows=512,
    )  # fmt: skip
    traffic = Traffic(url, data, rate, seconds + tail)
    emitted: list[tuple[int, float]] = []  # (samples emitted so far, when)
    decisions, busy, ticks, t0 = [], 0.0, 0, time.time()
    try:
        traffic.start()
        while traffic.is_alive():
            a = time.perf_counter()
            tick = loop.tick()
            busy += time.perf_counter() - a
            ticks += 1
            if tick.emitted:
                emitted.append((loop.matcher.counts["samples"], tick.matched_at))
            if tick.decision is not None:
                decisions.append(tick.decision)
            if tick.read == 0:
                time.sleep(0.02)
        if traffic.error is not None:
            raise traffic.error
        elapsed = time.time() - t0
        counts = dict(loop.matcher.counts)
    finally:
        loop.close()
        server.terminate()
        server.wait(timeout=30)
    # emission number -> key: the parts, then what the matcher still holds
    frames = [pl.read_parquet(p, columns=["__seq", "__request_id", "__item_id"])
              for p in sorted((tmp / "loop" / "samples").glob("part-*.parquet"))]  # fmt: skip
    seqs = pl.concat(frames) if frames else pl.DataFrame()
    keys = {int(q): (r, it) for q, r, it in seqs.iter_rows()}
    for q, sample in read_samples(tmp / "loop" / "matcher.sqlite"):
        keys[q] = (sample["request_id"], sample["item_id"])
    seq_at = np.array([q for q, _ in emitted]), np.array([t for _, t in emitted])
    window_ms = 10_000 + 1_000
    measured_until = (t0 + seconds) * 1000
    published = [d for d in decisions if d["result"] == "published"]
    train = dict(zip(keys, ~held_out([sample_id(*k) for k in keys.values()], 0.05), strict=True))
    label_lag, ready_lag, served_lag, never_served = [], [], [], 0
    for q, key in keys.items():
        imp_ms, last_label_ms, every = traffic.keys[key]
        if imp_ms > measured_until:
            continue
        at = seq_at[1][np.searchsorted(seq_at[0], q)]  # the first step whose total reaches q
        if last_label_ms is not None:
            label_lag.append(at - last_label_ms / 1000)
        ready = last_label_ms if every else imp_ms + window_ms
        ready_lag.append(at - ready / 1000)
        if train[q]:
            v = next((d for d in published if d["offset"] >= q), None)
            if v is None:
                never_served += 1
            else:
                served_lag.append(v["served_at"] - at)
    out = {
        "benchmark": "streaming_live",
        "backend": backend,
        "seconds": seconds,
        "rate": rate,
        "impressions": counts.get("impressions", 0),
        "samples": counts.get("samples", 0),
        "measured_samples": len(ready_lag),
        "dead_letters": {k[5:]: v for k, v in counts.items() if k.startswith("dead:")},
        "label_to_sample_s": _pct(label_lag),
        "ready_to_sample_s": _pct(ready_lag),
        "sample_to_served_s": _pct(served_lag),
        "trained_never_served": never_served,
        "versions_published": len(published),
        "loop_busy": round(busy / elapsed, 2),
        "ticks": ticks,
        "cpu": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
    }
    shutil.rmtree(tmp)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--backends", default="sqlite,redis")
    p.add_argument(
        "--redis", default=os.environ.get("INFNET_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    p.add_argument("--live", type=float, default=None, help="seconds of live traffic")
    p.add_argument("--rate", type=float, default=200.0, help="impressions a second, --live")
    p.add_argument("--child", default=None)
    args = p.parse_args()
    if args.live is not None:
        for backend in args.backends.split(","):
            print(json.dumps(live(backend, args.live, args.rate, args.redis)), flush=True)
        return
    if args.child:
        print(json.dumps(one(args.child, args.events, args.redis)), flush=True)
        return
    for backend in args.backends.split(","):
        subprocess.run([sys.executable, __file__, "--child", backend, "--events", str(args.events),
                        "--redis", args.redis], check=True)  # fmt: skip


if __name__ == "__main__":
    main()
