"""The feature store: user features, item features and recent behaviour histories, encoded.

One interface, two backends (sqlite_store.py: an embedded file in WAL mode, the default;
redis_store.py: `redis://...`). A load writes one *snapshot* of a prepared dataset:

    user record  int32 [M_u + F + F*n*K]: the user's field codes (schema order of the user
                 fields), then the F history lengths, then the F histories [F, n, K] of
                 side-field codes, most recent last, left-padded with PAD (as the loader)
    item record  int32 [M_i]: the item's field codes (schema order of the item fields)

keyed by the raw user key and the raw item id (the item key's vocabulary value). Every
load gets a feature version id; a lookup returns the version its records belong to, so a
served request can record exactly which features it used. A lookup is one round trip for
the user and all candidates.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from infnet.data import layout
from infnet.data.schema import OOV, PAD, Schema, Strict


class StoreUnavailable(RuntimeError):
    """The store cannot answer: unreachable, missing, or holding no features yet."""


class StoreMeta(Strict):
    """What a load wrote: enough to decode records and to check a model against them."""

    version: str
    loaded_at: str
    source: str
    as_of: int | None = None  # only events and rows strictly before this time_ms were loaded
    schema_text: str  # the prepared dataset's schema JSON
    vocab_fingerprint: str
    user_fields: list[str]
    item_fields: list[str]
    behaviours: list[str]
    side_fields: list[str]
    history_len: int  # n
    users: int
    items: int

    def dataset_schema(self) -> Schema:
        return Schema.from_json(self.schema_text)

    @property
    def user_record_len(self) -> int:
        F, n, K = len(self.behaviours), self.history_len, len(self.side_fields)
        return len(self.user_fields) + F + F * n * K


@dataclass
class Snapshot:
    """A whole load: records of every user and item, ready to write."""

    meta: StoreMeta
    user_ids: list[str]
    user_records: np.ndarray  # int32 [U, user_record_len]
    item_ids: list[str]
    item_records: np.ndarray  # int32 [I, M_i]


@dataclass
class Lookup:
    """The decoded answer to one request: one user and K candidates."""

    version: str
    user_codes: np.ndarray  # int64 [M_u]; OOV where the user is unknown
    user_known: bool
    history: np.ndarray  # int64 [F, n, K_side], PAD where empty
    history_mask: np.ndarray  # bool [F, n]
    item_codes: np.ndarray  # int64 [K, M_i]; OOV rows for unknown items
    item_known: np.ndarray  # bool [K]


def decode(meta: StoreMeta, version: str, user: bytes | None, items: list[bytes | None]) -> Lookup:
    F, n, Ks = len(meta.behaviours), meta.history_len, len(meta.side_fields)
    Mu, Mi = len(meta.user_fields), len(meta.item_fields)
    if user is None:
        user_codes = np.full(Mu, OOV, np.int64)
        lengths = np.zeros(F, np.int64)
        history = np.zeros((F, n, Ks), np.int64)
    else:
        rec = np.frombuffer(user, np.int32).astype(np.int64)
        user_codes, lengths = rec[:Mu], rec[Mu : Mu + F]
        history = rec[Mu + F :].reshape(F, n, Ks)
    known = np.array([r is not None for r in items], dtype=bool)
    item_codes = np.full((len(items), Mi), OOV, np.int64)
    if known.any():
        blob = b"".join(r for r in items if r is not None)
        item_codes[known] = np.frombuffer(blob, np.int32).reshape(-1, Mi)
    mask = np.arange(n) >= (n - lengths)[:, None]  # [F, n], left padding
    return Lookup(version, user_codes, user is not None, history, mask, item_codes, known)


class FeatureStore(ABC):
    """Bulk versioned writes, batched lookups. Implementations are thread-safe."""

    url: str
    # Lookups are fast and local enough to run on the server's event loop (saving two
    # thread hops per request); a networked store runs them on worker threads.
    inline: bool = False

    @abstractmethod
    def write(self, snapshot: Snapshot) -> None:
        """Replace the store's content with `snapshot` (its meta.version becomes current)."""

    @abstractmethod
    def fetch(self, user: str, items: list[str]) -> tuple[str, bytes | None, list[bytes | None]]:
        """(current version, user record, item records) in one round trip."""

    @abstractmethod
    def meta(self, version: str | None = None) -> StoreMeta:
        """Meta of `version` (default: the current one); StoreUnavailable if none is loaded."""

    @abstractmethod
    def ping(self) -> None:
        """Return if the store answers, raise StoreUnavailable otherwise."""

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        pass

    def lookup(self, meta: StoreMeta, user: str, items: list[str]) -> Lookup:
        """Fetch and decode; `meta` must describe the version returned (the caller refreshes
        its cached meta when `Lookup.version` changes)."""
        version, user_rec, item_recs = self.fetch(user, items)
        if version != meta.version:
            meta = self.meta(version)
        return decode(meta, version, user_rec, item_recs)


def open_store(url: str | Path) -> FeatureStore:
    """`redis://host:port/db[?prefix=name]`, or an SQLite file: `sqlite:///path` or a path."""
    text = str(url)
    if text.startswith(("redis://", "rediss://", "unix://")):
        from infnet.serving.redis_store import RedisStore

        return RedisStore(text)
    from infnet.serving.sqlite_store import SQLiteStore

    if "://" in text and not text.startswith("sqlite:///"):
        raise ValueError(
            f"feature store URL {text!r}: use redis://..., sqlite:///PATH or a file path"
        )
    return SQLiteStore(text.removeprefix("sqlite:///"))


# --- building a snapshot from a prepared dataset ---------------------------------------------
def vocab_fingerprint(vocab_dir: str | Path) -> str:
    """sha256 over the vocabulary files: models and stores must encode with the same one."""
    digest = hashlib.sha256()
    files = sorted(Path(vocab_dir).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no vocabulary files in {vocab_dir}")
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _latest(rows: pl.DataFrame, key: str, cols: list[str]) -> pl.DataFrame:
    """The most recent row of each key (rows sorted by time)."""
    return rows.group_by(key, maintain_order=True).agg(pl.col(c).last() for c in cols)


def snapshot_from_prepared(path: str | Path, *, as_of: int | None = None) -> Snapshot:
    """User features and item features from each entity's most recent row, and each user's
    last n events per behaviour (a pre-built behaviour: the user's latest row's own block);
    with `as_of`, only rows and events strictly before it."""
    path = Path(path)
    schema = Schema.load(path / layout.SCHEMA)
    user_fields = [f.name for f in schema.fields if f.group == "user"]
    item_fields = [f.name for f in schema.fields if f.group == "item"]
    if schema.item_key not in item_fields:
        raise ValueError(
            f"{path}: the item key {schema.item_key!r} is not an item field of the schema, so "
            "items cannot be addressed by id"
        )
    parts = sorted(p for s in layout.SPLITS for p in (path / s).glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(f"{path}: no split part files; is it a prepared dataset?")
    rows = pl.scan_parquet(parts).select(layout.USER, layout.TIME, *user_fields, *item_fields)
    if as_of is not None:
        rows = rows.filter(pl.col(layout.TIME) < as_of)
    rows = rows.sort(layout.TIME, maintain_order=True).collect()
    if rows.is_empty():
        raise ValueError(f"{path}: no rows before as_of={as_of}")

    users = _latest(rows, layout.USER, user_fields).sort(layout.USER)
    user_ids = users[layout.USER].cast(pl.String).to_list()

    vocab = pl.read_parquet(path / layout.VOCAB_DIR / f"{schema.item_key}.parquet")
    other = [c for c in item_fields if c != schema.item_key]
    items = (
        _latest(rows.filter(pl.col(schema.item_key) > OOV), schema.item_key, other)
        .join(vocab.select("value", pl.col("index").alias(schema.item_key)), on=schema.item_key)
        .sort(schema.item_key)
    )
    item_records = np.ascontiguousarray(items.select(item_fields).to_numpy().astype(np.int32))

    seq = schema.sequences
    behaviours = seq.behaviours if seq else []
    side = seq.side_fields if seq else []
    n = seq.max_len if seq else 0
    F, K = len(behaviours), len(side)
    lengths = np.zeros((len(users), F), np.int32)
    history = np.full((len(users), F, n, K), PAD, np.int32)
    user_index = pl.DataFrame({layout.USER: users[layout.USER], "__u": np.arange(len(users))})
    for f, b in enumerate(behaviours):
        ev = pl.scan_parquet(path / layout.SEQ_DIR / f"{b}.parquet")
        if as_of is not None:
            ev = ev.filter(pl.col(layout.TIME) < as_of)
        if b in seq.prebuilt:  # each row's own block: the user's history is the latest one
            ev = ev.filter(pl.col(layout.TIME) == pl.col(layout.TIME).max().over(layout.USER))
        # rank 0 = the most recent event; the table is sorted by (user, time), ties stable
        ev = (
            ev.with_columns(
                rank=pl.len().over(layout.USER) - 1 - pl.int_range(pl.len()).over(layout.USER)
            )
            .filter(pl.col("rank") < n)
            .join(user_index.lazy(), on=layout.USER)
            .collect()
        )
        u, rank = ev["__u"].to_numpy(), ev["rank"].to_numpy()
        history[u, f, n - 1 - rank] = ev.select(side).to_numpy()
        np.maximum.at(lengths[:, f], u, rank + 1)
    user_records = np.concatenate(
        [
            users.select(user_fields).to_numpy().astype(np.int32),
            lengths,
            history.reshape(len(users), -1),
        ],
        axis=1,
    )
    digest = hashlib.sha256(user_records.tobytes() + item_records.tobytes()).hexdigest()[:8]
    meta = StoreMeta(
        version=f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{digest}",
        loaded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        source=str(path.resolve()),
        as_of=as_of,
        schema_text=schema.to_json(),
        vocab_fingerprint=vocab_fingerprint(path / layout.VOCAB_DIR),
        user_fields=user_fields,
        item_fields=item_fields,
        behaviours=behaviours,
        side_fields=side,
        history_len=n,
        users=len(users),
        items=len(items),
    )
    return Snapshot(
        meta=meta,
        user_ids=user_ids,
        user_records=np.ascontiguousarray(user_records),
        item_ids=items["value"].to_list(),
        item_records=item_records,
    )
