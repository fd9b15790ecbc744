"""Soak: `infnet serve` under steady load while models are hot-swapped and features reloaded.

    .venv/bin/python benchmarks/soak.py [--duration 600 --rate 50 --swap-every 30 --reload-every 120]

Simulates a dataset, trains INFNet for one epoch, exports it twice (two model versions),
loads the SQLite feature store and starts `infnet serve` in its own process. Then, for
`--duration` seconds, drives it with open-loop load of 100-candidate requests in 10 s
rounds while a side thread swaps the model (`POST /admin/reload`, alternating versions)
every `--swap-every` seconds and reloads the features every `--reload-every` seconds the
way an operator does (`load-features` into a new file, then `mv` over the served one).
One JSON line per round (errors, latency, RSS), then a summary: total errors (target 0),
the worst round's p99, and RSS growth from the first round to the last and from the end
of `--warmup` to the last (target < 5%: the allocator and the caches fill in the first
minute whether or not anything is swapped), and the floor and peak of RSS over the first
reload period after the warm-up and over the last one (RSS saws up and down with every
swap, so a single round's sample depends on where in the swap cycle it falls).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from serving import wait_ready  # noqa: E402  (the serving benchmark's readiness wait)

TOKEN = "soak-token"


def operator(
    url: str, models: list[Path], data: Path, store: Path, args, stop: threading.Event, log: list
) -> None:
    """Swap the model and reload the features on schedule; record what each one answered."""
    from infnet.serving.snapshot import snapshot_from_prepared
    from infnet.serving.stores import open_store

    started, swaps, reloads = time.time(), 0, 0
    while not stop.wait(1.0):
        elapsed = time.time() - started
        if elapsed >= (swaps + 1) * args.swap_every:
            swaps += 1
            r = httpx.post(
                f"{url}/admin/reload",
                json={"model": str(models[swaps % 2])},
                headers={"authorization": f"Bearer {TOKEN}"},
                timeout=60,
            )
            log.append({"event": "swap", "at_s": round(elapsed, 1), "status": r.status_code})
        if elapsed >= (reloads + 1) * args.reload_every:
            reloads += 1
            fresh = store.with_name(f"next-{reloads}.sqlite")
            open_store(fresh).write(snapshot_from_prepared(data))
            os.replace(fresh, store)
            version = httpx.get(f"{url}/readyz", timeout=10).json().get("feature_version")
            log.append({"event": "reload", "at_s": round(elapsed, 1), "version": version})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--round", type=float, default=10.0, help="seconds of load per round")
    ap.add_argument("--swap-every", type=float, default=30.0)
    ap.add_argument("--reload-every", type=float, default=120.0)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--warmup", type=float, default=120.0,
                    help="seconds after which RSS growth is measured (allocator and caches fill first)")  # fmt: skip
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    from infnet.data.sources.synthetic import prepare_synthetic
    from infnet.serving.export import export_run
    from infnet.serving.loadtest import run_loadtest
    from infnet.serving.snapshot import snapshot_from_prepared
    from infnet.serving.stores import open_store
    from infnet.training.config import RunConfig, TrainConfig
    from infnet.training.trainer import Trainer

    work = args.workdir or Path(tempfile.mkdtemp(prefix="infnet-soak-"))
    data, run, store = work / "data", work / "run", work / "features.sqlite"
    models = [work / "models" / "a", work / "models" / "b"]
    if not data.exists():
        prepare_synthetic(data, rows=50_000, users=2_000, items=1_000, progress=False)
    if not (run / "best.pt").exists():
        config = RunConfig(data=str(data), train=TrainConfig(epochs=1, device="cpu"))
        Trainer.from_config(config, run, progress=False).fit()
    versions = [export_run(run, m, overwrite=True)["version"] for m in models]
    open_store(store).write(snapshot_from_prepared(data))

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "infnet.cli", "serve", "--model", str(models[0]),
               "--store", str(store), "--port", str(port),
               "--request-log", str(work / "requests.sqlite")]  # fmt: skip
    server = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "INFNET_ADMIN_TOKEN": TOKEN},
    )
    rounds, events, stop = [], [], threading.Event()
    try:
        wait_ready(url, server)
        side = threading.Thread(
            target=operator, args=(url, models, data, store, args, stop, events), daemon=True
        )
        side.start()
        started = time.time()
        i = 0
        while time.time() - started < args.duration:
            report = run_loadtest(url, data, qps=args.rate, duration_s=args.round,
                                  candidates=args.candidates, server_pid=server.pid, seed=i)  # fmt: skip
            line = {
                "benchmark": "soak",
                "round": i,
                "at_s": round(time.time() - started, 1),
                "rate": args.rate,
                "achieved_qps": round(report["achieved_qps"], 2),
                "errors": report["errors"],
                "p50_ms": round(report["latency_ms"]["p50"], 3),
                "p99_ms": round(report["latency_ms"]["p99"], 3),
                "rss_mb": round(report["server"]["rss_mb"], 1),
            }
            rounds.append(line)
            print(json.dumps(line), flush=True)
            i += 1
        stop.set()
        side.join(timeout=120)
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=30)
    errors = sum(sum(r["errors"].values()) if isinstance(r["errors"], dict) else r["errors"]
                 for r in rounds)  # fmt: skip
    growth = (rounds[-1]["rss_mb"] - rounds[0]["rss_mb"]) / rounds[0]["rss_mb"]
    warm = next((r for r in rounds if r["at_s"] >= args.warmup), rounds[0])
    steady = (rounds[-1]["rss_mb"] - warm["rss_mb"]) / warm["rss_mb"]

    # A swap loads the new model before the old one is freed, so RSS saws up and down
    # every swap and one round's sample lands anywhere on the tooth: the floor (what the
    # server holds between swaps) and the peak of the first reload period after the
    # warm-up and of the last one show the trend apart from the phase.
    def period(lo: float) -> list[float]:
        return [r["rss_mb"] for r in rounds if lo <= r["at_s"] < lo + args.reload_every]

    first = period(args.warmup) or [warm["rss_mb"]]
    last = period(rounds[-1]["at_s"] - args.reload_every + 1e-9)
    print(
        json.dumps(
            {
                "benchmark": "soak_summary",
                "seconds": args.duration,
                "rounds": len(rounds),
                "requests_per_s": args.rate,
                "swaps": [e for e in events if e["event"] == "swap"],
                "feature_reloads": [e for e in events if e["event"] == "reload"],
                "versions": versions,
                "errors": errors,
                "worst_p99_ms": max(r["p99_ms"] for r in rounds),
                "median_p99_ms": sorted(r["p99_ms"] for r in rounds)[len(rounds) // 2],
                "rss_mb_first": rounds[0]["rss_mb"],
                "rss_mb_last": rounds[-1]["rss_mb"],
                "rss_growth": round(growth, 4),
                "rss_mb_after_warmup": warm["rss_mb"],
                "rss_growth_after_warmup": round(steady, 4),
                "rss_mb_floor": [min(first), min(last)],
                "rss_mb_peak": [max(first), max(last)],
                "rss_growth_floor": round(min(last) / min(first) - 1, 4),
                "rss_growth_peak": round(max(last) / max(first) - 1, 4),
                "target_met": errors == 0 and steady < 0.05,
                "cpus": os.cpu_count(),
                "workdir": str(work),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
