"""The simulated platform's nightly feature pipeline: each night the store gets a new
snapshot whose users' histories hold the day's events, as a batch feature job would.

The first snapshot comes from the prepared warm-up log (serving/snapshot.py); from then
on the day's clicks, likes and long views are appended to each user's histories (the most
recent n kept, most recent last, as the loader and the store lay them out) and the whole
snapshot is written in one transaction, so the server reads the old or the new features,
never a mix, and records which version it used.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np

from infnet.data.schema import PAD
from infnet.serving.stores.base import FeatureStore, Snapshot


class DailyFeatures:
    def __init__(self, store: FeatureStore, first: Snapshot) -> None:
        self.store, self.first = store, first
        meta = first.meta
        self.F, self.n, self.K = len(meta.behaviours), meta.history_len, len(meta.side_fields)
        F, n, K, M = self.F, self.n, self.K, len(meta.user_fields)
        rec = first.user_records
        self.codes = rec[:, :M].copy()
        self.history = rec[:, M + F : M + F + F * n * K].reshape(-1, F, n, K).copy()
        self.times = rec[:, M + F + F * n * K :].copy().view(np.int64).reshape(-1, F, n)
        self.user_row = {u: i for i, u in enumerate(first.user_ids)}
        side = [meta.item_fields.index(f) for f in meta.side_fields]
        self.item_side = first.item_records[:, side]  # [I, K]
        self.item_row = {i: r for r, i in enumerate(first.item_ids)}
        self.pending: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, behaviour: str, users: list[str], items: list[str], time_ms: np.ndarray) -> None:
        """Events of one behaviour (users and items by raw id); applied at the next publish."""
        f = self.first.meta.behaviours.index(behaviour)
        u = np.array([self.user_row.get(x, -1) for x in users], np.int64)
        i = np.array([self.item_row.get(x, -1) for x in items], np.int64)
        ok = (u >= 0) & (i >= 0)  # a user or item the store does not hold has no history
        self.pending.append((f, u[ok], i[ok], np.asarray(time_ms, np.int64)[ok]))

    def publish(self, as_of: int) -> str:
        """Apply the pending events and write the snapshot; its feature version."""
        n = self.n
        for f, rows, item_rows, t in self.pending:
            if not len(rows):
                continue
            order = np.lexsort((t, rows))
            rows, item_rows, t = rows[order], item_rows[order], t[order]
            starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
            ends = np.r_[starts[1:], len(rows)]
            for a, b in zip(starts, ends, strict=True):
                u = rows[a]
                new = min(b - a, n)
                self.history[u, f] = np.roll(self.history[u, f], -new, axis=0)
                self.times[u, f] = np.roll(self.times[u, f], -new)
                self.history[u, f, n - new :] = self.item_side[item_rows[b - new : b]]
                self.times[u, f, n - new :] = t[b - new : b]
        self.pending = []
        lengths = (self.history[:, :, :, 0] != PAD).sum(axis=2).astype(np.int32)
        U = len(self.codes)
        records = np.concatenate(
            [
                self.codes,
                lengths,
                self.history.reshape(U, -1),
                self.times.reshape(U, -1).view(np.int32),
            ],
            axis=1,
        )
        digest = hashlib.sha256(records.tobytes()).hexdigest()[:8]
        meta = self.first.meta.model_copy(
            update={
                "version": f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{digest}",
                "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "as_of": as_of,
            }
        )
        self.store.write(
            Snapshot(
                meta,
                self.first.user_ids,
                np.ascontiguousarray(records),
                self.first.item_ids,
                self.first.item_records,
            )  # fmt: skip
        )
        return meta.version
