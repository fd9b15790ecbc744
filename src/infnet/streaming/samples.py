"""The sample producer: the matcher's samples as Parquet parts, and a batch source over them.

    OUT/schema.json                         the served model's schema
    OUT/samples.json                        {"seq_shape": [F, n, K_side]}
    OUT/part-{first:012d}-{last:012d}.parquet
        __seq                 int64: the matcher's emission number (the consumer offset)
        <field> ...           int32 codes as served, schema order
        __user, __time        int64: the user key, the impression's event time
        __label__<task>       float32, NaN where missing (the prepared layout's columns)
        __sample_id, __request_id, __item_id, __arm, __model_version   strings
        __seq_ids             int32 [F * n * K_side]: the history as served, flattened
        __seq_mask, __seq_gap bool / int32 [F * n]

Parts cover fixed ranges of emission numbers (`part_rows` each, a shorter one only when a
drain forces it), written to a temporary name and renamed, so a producer killed and
rerun writes the same file again, never a half one or a doubled row; the matcher's rows
are deleted once a part holds them. The features are the impression's, so a model trains
on exactly what it was served (train/serve consistency by construction).

`SampleParts` reads them back as `Batch`es, with the splits of a prepared dataset:
`train` the samples not held out, `valid` (and `test`) the held-out `holdout` share,
chosen by sample id, so every reader agrees which samples the publisher may judge on.
With `arm` it reads only the samples of that A/B arm's traffic (`__arm`), so each arm of
an A/B test learns from, and is judged on, the users it served.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import torch

from infnet.data import layout
from infnet.data.batch import Batch
from infnet.data.schema import Schema
from infnet.streaming.events import user_key

SEQ = "__seq"
META = "samples.json"


def held_out(sample_ids: list[str], holdout: float) -> np.ndarray:
    """bool [N]: the samples kept out of training, a stable `holdout` share by id."""
    cut = int(holdout * 10_000)
    return np.array(
        [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=4).digest()) % 10_000 < cut
         for s in sample_ids],
        dtype=bool,
    )  # fmt: skip


def _part_name(first: int, last: int) -> str:
    return f"part-{first:012d}-{last:012d}.parquet"


def parts(out: Path) -> list[tuple[int, int, Path]]:
    """(first, last, path) of the written parts, in order."""
    found = []
    for p in out.glob("part-*-*.parquet"):
        _, first, last = p.stem.split("-")
        found.append((int(first), int(last), p))
    return sorted(found)


class SampleWriter:
    def __init__(
        self,
        matcher_state: str | Path,
        out: str | Path,
        schema_file: str | Path,
        *,
        part_rows: int = 4096,
    ) -> None:
        self.state, self.out, self.part_rows = Path(matcher_state), Path(out), part_rows
        self.schema = Schema.load(schema_file)
        self.out.mkdir(parents=True, exist_ok=True)
        if not (self.out / layout.SCHEMA).is_file():
            shutil.copy(schema_file, self.out / layout.SCHEMA)
        elif Schema.load(self.out / layout.SCHEMA).to_json() != self.schema.to_json():
            raise ValueError(f"{self.out}: holds samples of another schema; use a new --out")

    @property
    def written_to(self) -> int:
        """The last emission number a part holds (0: none)."""
        found = parts(self.out)
        return found[-1][1] if found else 0

    def flush(self, *, force: bool = False) -> int:
        """Write every full part of the samples not written yet (with `force`, the rest
        too); the number of samples written."""
        db = sqlite3.connect(self.state, timeout=30)
        written = 0
        try:
            with db:  # a producer killed between its rename and this delete left them
                db.execute("DELETE FROM samples WHERE seq <= ?", (self.written_to,))
            while True:
                after = self.written_to
                rows = db.execute(
                    "SELECT seq, payload FROM samples WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after, self.part_rows),
                ).fetchall()
                if not rows or (len(rows) < self.part_rows and not force):
                    break
                self._write([(seq, orjson.loads(p)) for seq, p in rows])
                with db:  # the part holds them now
                    db.execute("DELETE FROM samples WHERE seq <= ?", (rows[-1][0],))
                written += len(rows)
        finally:
            db.close()
        return written

    def _write(self, rows: list[tuple[int, dict]]) -> None:
        s = self.schema
        samples = [r for _, r in rows]
        seq_shape = list(samples[0]["seq_shape"])
        meta = self.out / META
        if not meta.is_file():
            meta.write_text(json.dumps({"seq_shape": seq_shape}))
        categorical = np.asarray([r["categorical"] for r in samples], dtype=np.int32)
        if categorical.shape[1] != s.num_fields:
            raise ValueError(
                f"samples of {categorical.shape[1]} fields, the schema has {s.num_fields}"
            )
        labels = np.asarray(
            [[np.nan if v is None else v for v in r["labels"]] for r in samples], dtype=np.float32
        )
        B = len(samples)
        columns: dict[str, object] = {SEQ: np.asarray([q for q, _ in rows], dtype=np.int64)}
        columns |= {f.name: categorical[:, i] for i, f in enumerate(s.fields)}
        columns[layout.USER] = np.asarray([user_key(r["user_id"]) for r in samples], np.int64)
        columns[layout.TIME] = np.asarray([r["event_ms"] for r in samples], np.int64)
        columns |= {layout.label_col(t): labels[:, j] for j, t in enumerate(s.task_names)}
        for name in ("sample_id", "request_id", "item_id", "arm", "model_version"):
            columns[f"__{name}"] = [r[name] for r in samples]
        if np.prod(seq_shape) > 0:
            columns["__seq_ids"] = np.asarray([r["seq_ids"] for r in samples], np.int32).reshape(
                B, -1
            )
            columns["__seq_mask"] = np.asarray([r["seq_mask"] for r in samples], bool).reshape(
                B, -1
            )
            columns["__seq_gap"] = np.asarray([r["seq_gap"] for r in samples], np.int32).reshape(
                B, -1
            )
        path = self.out / _part_name(rows[0][0], rows[-1][0])
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        pl.DataFrame(columns).write_parquet(tmp)
        os.replace(tmp, path)


class SampleParts:
    """The parts of a sample directory as a batch source (what the Trainer and `predict`
    read): `schema`, `num_rows(split)`, `batches(split, ...)`, `batch_at`, and `frame`."""

    def __init__(
        self, path: str | Path, *, holdout: float = 0.05, after: int = 0, arm: str | None = None
    ) -> None:
        self.path = Path(path)
        self.schema = Schema.load(self.path / layout.SCHEMA)
        self.holdout, self.after, self.arm = holdout, after, arm
        self.refresh()

    def refresh(self) -> None:
        """Read the parts written since (parts are immutable: only new ones are read)."""
        files = [p for first, last, p in parts(self.path) if last > self.after]
        frame = pl.concat([pl.read_parquet(p) for p in files]) if files else None
        if frame is not None:
            frame = frame.filter(pl.col(SEQ) > self.after)
            if self.arm is not None:
                frame = frame.filter(pl.col("__arm") == self.arm)
        self.frame = frame if frame is None or len(frame) else None
        meta = self.path / META
        self.seq_shape = json.loads(meta.read_text())["seq_shape"] if meta.is_file() else [0, 1, 1]
        ids = frame["__sample_id"].to_list() if frame is not None else []
        self._held = held_out(ids, self.holdout)

    def rows(self, split: str) -> np.ndarray:
        if split not in layout.SPLITS:
            raise KeyError(f"unknown split {split!r} (splits: {list(layout.SPLITS)})")
        return np.flatnonzero(~self._held if split == "train" else self._held)

    def num_rows(self, split: str) -> int:
        return len(self.rows(split))

    def seq(self, index: np.ndarray) -> np.ndarray:
        """The emission numbers of rows `index`."""
        return self.frame[SEQ].to_numpy()[index]

    def batch_at(self, split: str, indices) -> Batch:
        del split  # rows are addressed by their index in the frame
        idx = np.asarray(indices, dtype=np.int64)
        f = self.frame[idx]
        s, B = self.schema, len(idx)
        F, n, K = self.seq_shape
        if F * n * K:
            seq_ids = torch.from_numpy(
                f["__seq_ids"].to_numpy().astype(np.int64).reshape(B, F, n, K)
            )
            seq_mask = torch.from_numpy(f["__seq_mask"].to_numpy().reshape(B, F, n))
            seq_gap = torch.from_numpy(f["__seq_gap"].to_numpy().astype(np.int64).reshape(B, F, n))
        else:
            seq_ids = torch.zeros((B, 0, 1, 1), dtype=torch.int64)
            seq_mask = torch.zeros((B, 0, 1), dtype=torch.bool)
            seq_gap = torch.zeros((B, 0, 1), dtype=torch.int64)
        labels = f.select(map(layout.label_col, s.task_names)).to_numpy().astype(np.float32)
        missing = np.isnan(labels)
        return Batch(
            categorical=torch.from_numpy(f.select(s.field_names).to_numpy().astype(np.int64)),
            seq_ids=seq_ids,
            seq_mask=seq_mask,
            seq_gap=seq_gap,
            labels=torch.from_numpy(np.where(missing, np.float32(0), labels)),
            label_mask=torch.from_numpy(~missing),
            user=torch.from_numpy(f[layout.USER].to_numpy().astype(np.int64)),
        )

    def batches(
        self, split: str, batch_size: int, *, shuffle: bool = False, seed: int = 0,
        drop_last: bool = False,
    ) -> Iterator[Batch]:  # fmt: skip
        rows = self.rows(split)
        order = np.random.default_rng(seed).permutation(rows) if shuffle else rows
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        for lo in range(0, stop, batch_size):
            yield self.batch_at(split, order[lo : lo + batch_size])
