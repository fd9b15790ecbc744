"""The request log: every served request, with the exact model inputs it was scored on.

One SQLite table (WAL mode), appended by a background thread in batched transactions so
the request path only enqueues. A row holds the request (id, user, timestamp, context,
bid, candidates), who served it (model version, A/B arm, feature version), what it
answered (task scores and ranking scores in candidate order), and the features as used:
`categorical` int [K, M] in the model's field order, and `seq_ids` [F, n, K_side] /
`seq_mask` / `seq_gap` [F, n] shared by the K candidates (and `seq_shape`, so F = 0 round-trips). `read_request_log` gives them back as
numpy arrays in a `ServedRequest` (records.py), which is what streaming training joins
with delayed labels.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson

from infnet.serving.records import ServedRequest

_TABLE = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    served_ms INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    model_version TEXT NOT NULL,
    arm TEXT NOT NULL,
    feature_version TEXT NOT NULL,
    context TEXT NOT NULL,
    bid TEXT,
    candidates TEXT NOT NULL,
    unknown_user INTEGER NOT NULL,
    item_known TEXT NOT NULL,
    scores TEXT NOT NULL,
    ranking TEXT NOT NULL,
    features TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_request_id ON requests (request_id);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts_ms);
"""
COLUMNS = (
    "request_id", "ts_ms", "served_ms", "user_id", "model_version", "arm", "feature_version",
    "context", "bid", "candidates", "unknown_user", "item_known", "scores", "ranking", "features",
)  # fmt: skip
_JSON = {"context", "bid", "candidates", "item_known", "scores", "ranking", "features"}
_OPT = orjson.OPT_SERIALIZE_NUMPY


def _row(r: ServedRequest) -> tuple:
    """The table row of a record: JSON columns serialised, the features as one JSON column."""
    values = {c: getattr(r, c) for c in COLUMNS if c != "features"}
    values["unknown_user"] = int(r.unknown_user)
    values["features"] = {
        "categorical": r.categorical,
        "seq_ids": r.seq_ids,
        "seq_mask": r.seq_mask,
        "seq_gap": r.seq_gap,
        "seq_shape": list(r.seq_ids.shape),  # so F = 0 round-trips
        "shown": r.shown,
    }
    return tuple(orjson.dumps(values[c], option=_OPT) if c in _JSON else values[c] for c in COLUMNS)


def _record(row: tuple) -> ServedRequest:
    v = {
        c: (orjson.loads(x) if c in _JSON and x is not None else x)
        for c, x in zip(COLUMNS, row, strict=True)
    }
    f = v.pop("features")
    shape = f["seq_shape"]
    v |= {
        "unknown_user": bool(v["unknown_user"]),
        "item_known": np.asarray(v["item_known"], dtype=bool),
        "scores": {t: np.asarray(x, dtype=np.float64) for t, x in v["scores"].items()},
        "ranking": np.asarray(v["ranking"], dtype=np.float64),
    }
    return ServedRequest(
        **v,
        categorical=np.asarray(f["categorical"], dtype=np.int64),
        seq_ids=np.asarray(f["seq_ids"], dtype=np.int64).reshape(shape),
        seq_mask=np.asarray(f["seq_mask"], dtype=bool).reshape(shape[:2]),
        # logs written before time-aware tokens hold no gaps: 0, "unknown", as padding
        seq_gap=np.asarray(f.get("seq_gap", 0), dtype=np.int64) * np.ones(shape[:2], np.int64),
        shown=f.get("shown"),
    )


class RequestLog:
    def __init__(self, path: str | Path, *, flush_s: float = 0.05, max_batch: int = 512) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_TABLE)
        conn.close()
        self.flush_s, self.max_batch = flush_s, max_batch
        self.errors = 0
        self._queue: queue.SimpleQueue[ServedRequest | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="infnet-request-log", daemon=True)
        self._thread.start()

    def append(self, record: ServedRequest) -> None:
        """Enqueue one record; the writer thread serialises it."""
        self._queue.put(record)

    def close(self) -> None:
        """Write what is queued and stop."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    @property
    def alive(self) -> bool:
        """The writer thread runs (a server whose log stopped is not ready)."""
        return self._thread.is_alive()

    def _write(self) -> None:
        # One bad record (a value SQLite cannot hold, one orjson cannot encode) costs its
        # batch, counted in `errors`; the thread goes on for the records after it.
        conn = sqlite3.connect(self.path)
        conn.execute("PRAGMA synchronous=NORMAL")
        sql = (
            f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        )
        stop = False
        while not stop:
            records = [self._queue.get()]
            try:
                while len(records) < self.max_batch:
                    records.append(self._queue.get(timeout=self.flush_s))
            except queue.Empty:
                pass
            if None in records:
                stop = True
                records = [r for r in records if r is not None]
            try:
                rows = [_row(r) for r in records]
                with conn:
                    conn.executemany(sql, rows)
            except Exception:
                self.errors += len(records)  # reported by /metrics; serving goes on
                self._write_each(conn, sql, records)
        conn.close()

    def _write_each(self, conn: sqlite3.Connection, sql: str, records: list[ServedRequest]) -> None:
        """After a failed batch: the records that can be written, one by one."""
        for r in records:
            try:
                with conn:
                    conn.execute(sql, _row(r))
                self.errors -= 1
            except Exception:
                pass


def read_request_log(path: str | Path, *, since_ms: int | None = None) -> Iterator[ServedRequest]:
    """Logged requests in order."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        where, args = ("WHERE served_ms >= ?", (since_ms,)) if since_ms is not None else ("", ())
        for row in conn.execute(
            f"SELECT {', '.join(COLUMNS)} FROM requests {where} ORDER BY rowid", args
        ):
            yield _record(row)
    finally:
        conn.close()
