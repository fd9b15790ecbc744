"""Feature stores: the interface (base.py) and its backends, opened by URL."""

from __future__ import annotations

from pathlib import Path

from infnet.serving.stores.base import (
    CorruptRecord,
    FeatureStore,
    Lookup,
    Snapshot,
    StoreMeta,
    StoreUnavailable,
    decode,
)
from infnet.serving.stores.redis import RedisStore
from infnet.serving.stores.sqlite import SQLiteStore

__all__ = [
    "CorruptRecord",
    "FeatureStore",
    "Lookup",
    "RedisStore",
    "SQLiteStore",
    "Snapshot",
    "StoreMeta",
    "StoreUnavailable",
    "decode",
    "open_store",
]


def open_store(url: str | Path) -> FeatureStore:
    """`redis://host:port/db[?prefix=name]`, or an SQLite file: `sqlite:///path` or a path."""
    text = str(url)
    if text.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(text)
    if "://" in text and not text.startswith("sqlite:///"):
        raise ValueError(
            f"feature store URL {text!r}: use redis://..., sqlite:///PATH or a file path"
        )
    return SQLiteStore(text.removeprefix("sqlite:///"))
