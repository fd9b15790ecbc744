"""`infnet stream replay`: a prepared dataset's logged rows as live traffic through the server.

Rows from `--from` on (every split), in time order, are grouped into requests (one user at
one timestamp); each request is ranked by the server (POST /v1/rank, so the server writes
its impressions), and each row's logged labels come back as callbacks (POST /v1/events):
binary tasks' positives and regression values, each at the row's time plus an exponential
delay. Callbacks are sent once the replay's clock passes their event time, so they reach
the event log in the order a live stream would bring them, with the faults a live stream
has, at the given rates: a callback sent twice, moved behind later ones, or never sent.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import polars as pl

from infnet.data import layout
from infnet.data.schema import Schema
from infnet.serving.features import FROM_TIMESTAMP


@dataclass
class ReplayStats:
    requests: int = 0
    impressions: int = 0
    callbacks: int = 0
    duplicated: int = 0
    reordered: int = 0
    dropped: int = 0
    unseen_items: int = 0  # rows whose item prepare encoded OOV: sent as unknown ids
    errors: dict[str, int] = field(default_factory=dict)


def _raw(value: str | None, unseen: str) -> int | str:
    """The raw id of a code; a code without a vocabulary value (a value prepare did not see
    in train, encoded OOV) becomes an id the server does not know either, so it is OOV there
    too."""
    if value is None:
        return unseen
    return int(value) if value.lstrip("-").isdigit() else value


def logged_rows(data: Path, since_ms: int, until_ms: int | None) -> tuple[Schema, pl.DataFrame]:
    schema = Schema.load(data / layout.SCHEMA)
    files = sorted(p for s in layout.SPLITS for p in (data / s).glob("part-*.parquet"))
    context = [
        f.name for f in schema.fields if f.group == "context" and f.name not in FROM_TIMESTAMP
    ]
    rows = pl.scan_parquet(files).filter(pl.col(layout.TIME) >= since_ms)
    if until_ms is not None:
        rows = rows.filter(pl.col(layout.TIME) < until_ms)
    cols = [
        layout.USER,
        layout.TIME,
        schema.item_key,
        *context,
        *map(layout.label_col, schema.task_names),
    ]
    frame = rows.select(cols).collect().sort(layout.TIME, layout.USER, maintain_order=True)
    # codes -> the raw values the server is asked with
    for name in [schema.item_key, *context]:
        vocab = pl.read_parquet(data / layout.VOCAB_DIR / f"{name}.parquet")
        frame = frame.join(
            vocab.select(pl.col("index").alias(name), pl.col("value").alias(f"__raw_{name}")),
            on=name, how="left",
        )  # fmt: skip
    return schema, frame.sort(layout.TIME, layout.USER, maintain_order=True)


def replay(
    data: str | Path,
    server: str,
    *,
    since_ms: int,
    until_ms: int | None = None,
    delay_mean_s: float = 60.0,
    duplicate: float = 0.0,
    reorder: float = 0.0,
    drop: float = 0.0,
    seed: int = 0,
    progress: bool = True,
) -> ReplayStats:
    data = Path(data)
    schema, frame = logged_rows(data, since_ms, until_ms)
    rng = np.random.default_rng(seed)
    context = [c[6:] for c in frame.columns if c.startswith("__raw_") and c[6:] != schema.item_key]
    stats = ReplayStats()
    pending: list[tuple[int, int, dict[str, Any]]] = []  # (event_ms, tie, callback)
    tie = 0

    def send(upto: int | None) -> None:
        due = []
        while pending and (upto is None or pending[0][0] <= upto):
            due.append(heapq.heappop(pending)[2])
        if not due:
            return
        for i in range(len(due) - 1):  # a callback overtaken by the next one
            if rng.random() < reorder:
                due[i], due[i + 1] = due[i + 1], due[i]
                stats.reordered += 1
        out = []
        for cb in due:
            if rng.random() < drop:
                stats.dropped += 1
                continue
            out.append(cb)
            if rng.random() < duplicate:
                out.append(cb)
                stats.duplicated += 1
        for lo in range(0, len(out), 500):
            r = client.post(
                f"{server}/v1/events", content=orjson.dumps({"events": out[lo : lo + 500]})
            )
            if r.status_code != 200:
                stats.errors[f"events {r.status_code}"] = (
                    stats.errors.get(f"events {r.status_code}", 0) + 1
                )
            else:
                stats.callbacks += len(out[lo : lo + 500])

    tasks = [(t.name, t.kind, layout.label_col(t.name)) for t in schema.tasks]
    started = last = time.monotonic()
    with httpx.Client(timeout=60, headers={"content-type": "application/json"}) as client:
        for (user, ts), group in frame.group_by([layout.USER, layout.TIME], maintain_order=True):
            send(int(ts))
            request_id = f"replay-{user}-{ts}"
            items = [_raw(v, f"unseen-{user}-{ts}-{j}")
                     for j, v in enumerate(group[f"__raw_{schema.item_key}"].to_list())]  # fmt: skip
            stats.unseen_items += sum(isinstance(i, str) and i.startswith("unseen-") for i in items)
            body = {
                "request_id": request_id,
                "user_id": int(user),
                "context": {"timestamp": int(ts)}
                | {c: _raw(group[f"__raw_{c}"][0], "unseen") for c in context},
                "candidates": items,
            }
            r = client.post(f"{server}/v1/rank", content=orjson.dumps(body))
            stats.requests += 1
            if r.status_code != 200:
                stats.errors[f"rank {r.status_code}"] = (
                    stats.errors.get(f"rank {r.status_code}", 0) + 1
                )
                continue
            stats.impressions += len(items)
            for row, item in zip(group.iter_rows(named=True), items, strict=True):
                for task, kind, col in tasks:
                    value = row[col]
                    if value is None or np.isnan(value) or (kind == "binary" and value != 1):
                        continue
                    at = int(ts) + int(rng.exponential(delay_mean_s) * 1000)
                    cb = {"request_id": request_id, "item_id": str(item), "task": task,
                          "value": float(value), "event_ms": at}  # fmt: skip
                    heapq.heappush(pending, (at, tie, cb))
                    tie += 1
            now = time.monotonic()
            if progress and now - last > 5:
                print(f"replay: {stats.requests:,} requests, {stats.impressions:,} impressions, "
                      f"{stats.callbacks:,} callbacks ({now - started:.0f} s)", flush=True)  # fmt: skip
                last = now
        send(None)
    return stats
