"""`infnet loadtest`: open-loop load at a fixed rate against a running server.

Request i is sent at t0 + i / qps whether or not earlier ones have returned (open loop),
and its latency is measured from that scheduled time, so a server that falls behind shows
it in the tail instead of slowing the load down (no coordinated omission). Users, items
and context values are drawn from a prepared dataset; bodies are encoded before the clock
starts, and sent over lean keep-alive connections (one per request in flight) so the
client's own cost stays out of the figures. The server's own time per request comes from
its Server-Timing header; its RSS and CPU from psutil (given its pid) or from its /metrics
process metrics.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import orjson
import polars as pl
from rich.table import Table

from infnet.data import layout
from infnet.data.schema import Schema
from infnet.serving.features import FROM_TIMESTAMP


def _raw(value: str) -> int | str:
    return int(value) if value.lstrip("-").isdigit() else value


def request_bodies(data: str | Path, n: int, candidates: int, seed: int = 0) -> list[bytes]:
    """n JSON bodies of `candidates` distinct items each, for random users of the dataset."""
    data = Path(data)
    schema = Schema.load(data / layout.SCHEMA)
    rng = np.random.default_rng(seed)
    parts = sorted(p for s in layout.SPLITS for p in (data / s).glob("part-*.parquet"))
    users = pl.scan_parquet(parts).select(layout.USER).unique().collect()[layout.USER].to_numpy()
    items = [
        _raw(v)
        for v in pl.read_parquet(data / layout.VOCAB_DIR / f"{schema.item_key}.parquet")["value"]
    ]
    if candidates > len(items):
        raise ValueError(f"--candidates {candidates}: the dataset has only {len(items)} items")
    context_values = {
        f.name: [
            _raw(v) for v in pl.read_parquet(data / layout.VOCAB_DIR / f"{f.name}.parquet")["value"]
        ]
        for f in schema.fields
        if f.group == "context" and f.name not in FROM_TIMESTAMP and f.boundaries is None
    }
    now = int(time.time() * 1000)
    bodies = []
    for i in range(n):
        chosen = rng.choice(len(items), candidates, replace=False)
        context: dict[str, Any] = {k: v[rng.integers(len(v))] for k, v in context_values.items()}
        context["timestamp"] = now
        bodies.append(
            orjson.dumps(
                {
                    "request_id": f"loadtest-{seed}-{i}",
                    "user_id": int(users[rng.integers(len(users))]),
                    "context": context,
                    "candidates": [items[j] for j in chosen],
                }
            )
        )
    return bodies


def _server_timing(header: str | None) -> float | None:
    """Milliseconds of `Server-Timing: total;dur=1.23`."""
    if not header or "dur=" not in header:
        return None
    return float(header.split("dur=", 1)[1].split(",", 1)[0].split(";", 1)[0])


def _process_metrics(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=5).text
    wanted = {"process_cpu_seconds": "cpu_s", "process_resident_memory_bytes": "rss"}
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name in wanted and family.samples:
            out[wanted[family.name]] = family.samples[0].value
    return out


class _Connections:
    """Keep-alive HTTP/1.1 connections to the server, one per request in flight (a lean
    client: httpx costs ~1.4 ms of client CPU per request, which would count as latency).
    The server answers with Content-Length bodies (uvicorn), which is all this reads."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"--url {url!r}: the load test speaks plain http://HOST:PORT")
        self.host, self.port = parts.hostname, parts.port or 80
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: bytes) -> tuple[int, dict[str, str]]:
        # The server closes a connection idle past its keep-alive timeout (uvicorn: 5 s);
        # one left at the bottom of the pool since a burst is dead when the next burst takes
        # it. It is retried on a new connection only when no byte of a response came back.
        while self.idle:
            reader, writer = self.idle.pop()
            if reader.at_eof():  # the server's close has arrived
                writer.close()
                continue
            try:
                return await self._exchange(reader, writer, path, body)
            except (asyncio.IncompleteReadError, ConnectionError) as err:
                if isinstance(err, asyncio.IncompleteReadError) and err.partial:
                    raise
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return await self._exchange(reader, writer, path, body)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, body: bytes
    ) -> tuple[int, dict[str, str]]:
        try:
            head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            writer.write(head.encode() + body)
            lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = {
                k.strip().lower(): v.strip()
                for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
            }
            await reader.readexactly(int(headers.get("content-length", "0")))
        except BaseException:
            writer.close()
            raise
        if headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            self.idle.append((reader, writer))
        return int(lines[0].split()[1]), headers

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def _drive(
    url: str, bodies: list[bytes], qps: float, timeout_s: float
) -> tuple[list, float, float]:
    results: list[tuple[float, int | str, float | None]] = []
    connections = _Connections(url)
    loop = asyncio.get_running_loop()

    async def one(body: bytes, scheduled: float) -> None:
        try:
            status, headers = await asyncio.wait_for(connections.post("/v1/rank", body), timeout_s)
            outcome: int | str = status
            server_ms = _server_timing(headers.get("server-timing"))
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as err:
            outcome, server_ms = type(err).__name__, None
        results.append((loop.time() - scheduled, outcome, server_ms))

    start = loop.time() + 0.05
    tasks = []
    for i, body in enumerate(bodies):
        scheduled = start + i / qps
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(body, scheduled)))
    await asyncio.gather(*tasks)
    end = loop.time()
    connections.close()
    return results, start, end


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    v = np.asarray(values)
    return {
        "p50": float(np.percentile(v, 50)),
        "p95": float(np.percentile(v, 95)),
        "p99": float(np.percentile(v, 99)),
        "max": float(v.max()),
        "mean": float(v.mean()),
    }


def run_loadtest(
    url: str,
    data: str | Path,
    *,
    qps: float,
    duration_s: float,
    candidates: int = 100,
    server_pid: int | None = None,
    seed: int = 0,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    if qps <= 0 or duration_s <= 0:
        raise ValueError(f"--qps and --duration must be positive, got {qps} and {duration_s}")
    url = url.rstrip("/")
    bodies = request_bodies(data, max(1, int(round(qps * duration_s))), candidates, seed)
    process = None
    if server_pid is not None:
        import psutil

        process = psutil.Process(server_pid)
        cpu0 = sum(process.cpu_times()[:2])
    else:
        before = _process_metrics(url)
    wall0 = time.perf_counter()
    results, start, end = asyncio.run(_drive(url, bodies, qps, timeout_s))
    wall = time.perf_counter() - wall0
    if process is not None:
        server = {
            "rss_mb": process.memory_info().rss / 2**20,
            "cpu_percent": 100 * (sum(process.cpu_times()[:2]) - cpu0) / wall,
            "source": "psutil",
        }
    else:
        after = _process_metrics(url)
        server = {
            "rss_mb": after.get("rss", float("nan")) / 2**20,
            "cpu_percent": 100
            * (after.get("cpu_s", float("nan")) - before.get("cpu_s", float("nan")))
            / wall,
            "source": "metrics",
        }
    ok = [lat * 1000 for lat, outcome, _ in results if outcome == 200]
    errors: dict[str, int] = {}
    for _, outcome, _ in results:
        if outcome != 200:
            errors[str(outcome)] = errors.get(str(outcome), 0) + 1
    return {
        "url": url,
        "target_qps": qps,
        "duration_s": duration_s,
        "candidates": candidates,
        "requests": len(results),
        "ok": len(ok),
        "errors": errors,
        "achieved_qps": len(ok) / (end - start) if end > start else 0.0,
        "latency_ms": _percentiles(ok),
        "server_ms": _percentiles(
            [s for _, outcome, s in results if outcome == 200 and s is not None]
        ),
        "server": server,
    }


def report_table(report: dict[str, Any]) -> Table:
    table = Table(
        title=f"loadtest {report['url']}: {report['target_qps']:g} req/s x {report['duration_s']:g} s, {report['candidates']} candidates"
    )
    for column in ("", "p50", "p95", "p99", "max"):
        table.add_column(column, justify="right")
    for name, key in (("latency (ms)", "latency_ms"), ("server time (ms)", "server_ms")):
        p = report[key]
        table.add_row(
            name, *("-" if p[k] is None else f"{p[k]:.2f}" for k in ("p50", "p95", "p99", "max"))
        )
    s = report["server"]
    errors = ", ".join(f"{k}: {v}" for k, v in report["errors"].items()) or "none"
    table.caption = (
        f"achieved {report['achieved_qps']:.1f} req/s, {report['ok']}/{report['requests']} ok, errors {errors}; "
        f"server RSS {s['rss_mb']:.0f} MiB, CPU {s['cpu_percent']:.0f}% ({s['source']})"
    )
    return table
