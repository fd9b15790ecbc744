"""Serving latency: `infnet serve` under open-loop load of 100-candidate requests.

    .venv/bin/python benchmarks/serving.py [--rates 20,50,100 --duration 10 --model infnet]

Simulates a dataset, trains the model (default config) for one epoch, exports it to ONNX,
loads the SQLite feature store, starts `infnet serve` in its own process and drives it
with `infnet loadtest` at each rate. Prints one JSON line per rate (p50 / p95 / p99
latency, achieved QPS, errors, server time, RSS, CPU) and a summary line with the
serving overhead ratio: the server's p50 (as the client measures it, and as the server
measures itself) over the in-process ONNX Runtime time of scoring the same 100 candidates
(median of back-to-back calls). Each rate also gives the server's own mean time per model
call (`model_call_ms`, from its /metrics) and requests per call: the client's p50 is that
call, the server's other work (server p50 minus the call) and HTTP (client minus server).
Targets: p99 < 20 ms at 50 requests/s, overhead ratio < 1.5.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import orjson

from infnet.serving.process import start_server  # noqa: F401  (streaming benchmarks import it here)


def wait_ready(url: str, server: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited: {server.stdout.read().decode()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not become ready")


def model_calls(url: str) -> dict[str, float]:
    """Running sums and counts of the server's model calls: seconds and requests per call."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {"infnet_inference_seconds", "infnet_batch_requests"}
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        if family.name in wanted
        for sample in family.samples
        if sample.name.endswith(("_sum", "_count"))
    }


def request_inputs(model, store: str, data: Path, candidates: int) -> dict:
    """One request's inputs to `model` (a loaded ServingModel) as the server builds them (a
    real user, real items, its history), fed as the micro-batcher feeds one request: its
    history once, read by its candidate rows (seq_index)."""
    from infnet.serving.features import Assembler
    from infnet.serving.loadtest import request_bodies
    from infnet.serving.stores import open_store

    st = open_store(store)
    body = orjson.loads(request_bodies(data, 1, candidates, seed=1)[0])
    lookup = st.lookup(st.meta(), str(body["user_id"]), [str(c) for c in body["candidates"]])
    assembler = Assembler(model.schema, model.path / "vocab", 8.0)
    context = {k: v for k, v in body["context"].items() if k != "timestamp"}
    ts = body["context"]["timestamp"]
    x = assembler.build(lookup, assembler.encode_context(context, ts), ts)
    return {
        "categorical": x.categorical,
        "seq_ids": x.seq_ids[None],
        "seq_mask": x.seq_mask[None],
        "seq_index": np.zeros(len(x), np.int64),
        "seq_gap": x.seq_gap[None],
    }


def in_process_ms(model_dir: Path, store: str, data: Path, candidates: int, repeats: int) -> float:
    """Median time of ONNX Runtime scoring one request's candidates in this process."""
    from infnet.serving.runtime import load_model_dir

    model = load_model_dir(model_dir, threads=1)
    args = tuple(request_inputs(model, store, data, candidates).values())
    for _ in range(20):
        model.predict(*args)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict(*args)
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="20,50,100", help="requests per second, comma separated")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of load per rate")
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--model", default="infnet")
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument("--items", type=int, default=1_000)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--workdir", type=Path, default=None, help="keep the data, run and model here")
    args = ap.parse_args()

    from infnet.data.sources.synthetic import prepare_synthetic
    from infnet.serving.export import export_run
    from infnet.serving.loadtest import run_loadtest
    from infnet.serving.snapshot import snapshot_from_prepared
    from infnet.serving.stores import open_store
    from infnet.training.config import RunConfig, TrainConfig
    from infnet.training.trainer import Trainer

    work = args.workdir or Path(tempfile.mkdtemp(prefix="infnet-serving-bench-"))
    data, run, model_dir, store = (
        work / "data",
        work / "run",
        work / "model",
        str(work / "features.sqlite"),
    )
    if not data.exists():
        prepare_synthetic(
            data,
            rows=args.rows,
            users=args.users,
            items=args.items,
            max_len=args.max_len,
            progress=False,
        )
    if not (run / "best.pt").exists():
        config = RunConfig(
            data=str(data), model=args.model, train=TrainConfig(epochs=1, device="cpu")
        )
        Trainer.from_config(config, run, progress=False).fit()
    info = export_run(run, model_dir, overwrite=True)
    open_store(store).write(snapshot_from_prepared(data))
    ort_ms = in_process_ms(model_dir, store, data, args.candidates, repeats=200)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "infnet.cli", "serve", "--model", str(model_dir), "--store", store,
               "--port", str(port), "--request-log", str(work / "requests.sqlite")]  # fmt: skip
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ}
    )
    reports = []
    try:
        wait_ready(url, server)
        run_loadtest(
            url,
            data,
            qps=20,
            duration_s=2,
            candidates=args.candidates,
            server_pid=server.pid,
            seed=99,
        )  # warm-up
        for rate in (float(r) for r in args.rates.split(",")):
            before = model_calls(url)
            report = run_loadtest(
                url,
                data,
                qps=rate,
                duration_s=args.duration,
                candidates=args.candidates,
                server_pid=server.pid,
                seed=int(rate),
            )
            calls = {k: v - before.get(k, 0.0) for k, v in model_calls(url).items()}
            count = max(calls["infnet_inference_seconds_count"], 1.0)
            line = {
                "benchmark": "serving",
                "model": args.model,
                "version": info["version"],
                "rate": rate,
                "candidates": args.candidates,
                "achieved_qps": round(report["achieved_qps"], 2),
                "p50_ms": round(report["latency_ms"]["p50"], 3),
                "p95_ms": round(report["latency_ms"]["p95"], 3),
                "p99_ms": round(report["latency_ms"]["p99"], 3),
                "server_p50_ms": round(report["server_ms"]["p50"], 3),
                "server_p99_ms": round(report["server_ms"]["p99"], 3),
                "model_call_ms": round(1000 * calls["infnet_inference_seconds_sum"] / count, 3),
                "requests_per_call": round(calls["infnet_batch_requests_sum"] / count, 2),
                "overhead_ratio": round(report["latency_ms"]["p50"] / ort_ms, 3),
                "overhead_ratio_server_side": round(report["server_ms"]["p50"] / ort_ms, 3),
                "errors": report["errors"],
                "rss_mb": round(report["server"]["rss_mb"], 1),
                "cpu_percent": round(report["server"]["cpu_percent"], 1),
            }
            reports.append(line)
            print(json.dumps(line), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    lowest = reports[0]
    at_50 = next((r for r in reports if r["rate"] == 50), None)
    print(
        json.dumps(
            {
                "benchmark": "serving_summary",
                "model": args.model,
                "onnx_in_process_ms": round(ort_ms, 3),
                "overhead_ratio": round(lowest["p50_ms"] / ort_ms, 3),
                "overhead_ratio_server_side": round(lowest["server_p50_ms"] / ort_ms, 3),
                "overhead_at_rate": lowest["rate"],
                "p99_ms_at_50": at_50["p99_ms"] if at_50 else None,
                "target_met": bool(
                    at_50 and at_50["p99_ms"] < 20 and lowest["p50_ms"] / ort_ms < 1.5
                ),
                "cpus": os.cpu_count(),
                "workdir": str(work),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
