"""The feature store: user features, item features and recent behaviour histories, encoded.

One interface, two backends (sqlite.py: an embedded file in WAL mode, the default;
redis.py: `redis://...`; `open_store` picks one by URL). A load writes one *snapshot* of a
prepared dataset (serving/snapshot.py):

    user record  int32 [M_u + F + F*n*K]: the user's field codes (schema order of the user
                 fields), then the F history lengths, then the F histories [F, n, K] of
                 side-field codes, most recent last, left-padded with PAD (as the loader);
                 then int64 [F, n], the events' time_ms (0 where padded), which time-aware
                 models read as gaps to the request's timestamp (absent in stores loaded
                 before: `history_times` false)
    item record  int32 [M_i]: the item's field codes (schema order of the item fields)

keyed by the raw user key and the raw item id (the item key's vocabulary value). Every
load gets a feature version id; a lookup returns the version its records belong to, so a
served request can record exactly which features it used. A lookup is one round trip for
the user and all candidates.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from infnet.config import Strict
from infnet.data.schema import OOV, Schema


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
    history_times: bool = False  # the user records end with the events' times
    users: int
    items: int

    def dataset_schema(self) -> Schema:
        return Schema.from_json(self.schema_text)

    @property
    def user_record_len(self) -> int:
        """In 4-byte words: the int32 codes, plus two per event time."""
        F, n, K = len(self.behaviours), self.history_len, len(self.side_fields)
        return len(self.user_fields) + F + F * n * K + (2 * F * n if self.history_times else 0)


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
    history_time: np.ndarray | None  # int64 [F, n]: time_ms of each event, 0 where empty;
    # None from a store loaded without event times
    item_codes: np.ndarray  # int64 [K, M_i]; OOV rows for unknown items
    item_known: np.ndarray  # bool [K]
    item_cold: np.ndarray  # bool [K]: known to the store, its id unseen in training (OOV)


class CorruptRecord(ValueError):
    """A store record whose codes lie outside the vocabularies: fails only its request."""


@functools.lru_cache(maxsize=8)
def _bounds(schema_text: str, user_fields: tuple, item_fields: tuple, side_fields: tuple):
    """Vocabulary sizes of the user fields, item fields and side fields, in record order."""
    sizes = {f.name: f.vocab_size for f in Schema.from_json(schema_text).fields}
    return tuple(np.array([sizes[f] for f in fs]) for fs in (user_fields, item_fields, side_fields))


@functools.lru_cache(maxsize=8)
def _item_key_column(schema_text: str, item_fields: tuple) -> int:
    """Where the item id lies in an item record: its OOV code marks a cold item."""
    return item_fields.index(Schema.from_json(schema_text).item_key)


def _check_codes(codes: np.ndarray, size: np.ndarray, fields: tuple, what: str) -> None:
    bad = (codes < 0) | (codes >= size)
    if bad.any():
        where = np.argwhere(bad)[0]
        field = fields[where[-1]]
        if what == "item record":
            what = f"item record of candidate {where[0]}"
        raise CorruptRecord(
            f"feature store {what}: code {int(codes[tuple(where)])} of field {field!r} is outside "
            f"its vocabulary [0, {int(size[where[-1]])}); reload the store"
        )


def decode(meta: StoreMeta, version: str, user: bytes | None, items: list[bytes | None]) -> Lookup:
    """The records as codes, each checked against its field's vocabulary size."""
    F, n, Ks = len(meta.behaviours), meta.history_len, len(meta.side_fields)
    Mu, Mi = len(meta.user_fields), len(meta.item_fields)
    if user is None:
        user_codes = np.full(Mu, OOV, np.int64)
        lengths = np.zeros(F, np.int64)
        history = np.zeros((F, n, Ks), np.int64)
        times = np.zeros((F, n), np.int64) if meta.history_times else None
    else:
        if len(user) != 4 * meta.user_record_len:
            raise CorruptRecord(
                f"feature store user record: {len(user)} bytes, expected {4 * meta.user_record_len}"
            )
        codes = Mu + F + F * n * Ks
        rec = np.frombuffer(user, np.int32, count=codes).astype(np.int64)
        user_codes, lengths = rec[:Mu], rec[Mu : Mu + F]
        history = rec[Mu + F :].reshape(F, n, Ks)
        times = (
            np.frombuffer(user, np.int64, offset=4 * codes).reshape(F, n).copy()
            if meta.history_times
            else None
        )
    known = np.array([r is not None for r in items], dtype=bool)
    item_codes = np.full((len(items), Mi), OOV, np.int64)
    for k, r in enumerate(items):
        if r is not None and len(r) != 4 * Mi:
            raise CorruptRecord(
                f"feature store item record of candidate {k}: {len(r)} bytes, expected {4 * Mi}"
            )
    if known.any():
        blob = b"".join(r for r in items if r is not None)
        item_codes[known] = np.frombuffer(blob, np.int32).reshape(-1, Mi)
    fields = (tuple(meta.user_fields), tuple(meta.item_fields), tuple(meta.side_fields))
    user_size, item_size, side_size = _bounds(meta.schema_text, *fields)
    _check_codes(user_codes, user_size, fields[0], "user record")
    _check_codes(history, side_size, fields[2], "user history")
    if not ((lengths >= 0) & (lengths <= n)).all():
        raise CorruptRecord(
            f"feature store user record: history lengths {lengths.tolist()} not in [0, {n}]"
        )
    _check_codes(item_codes, item_size, fields[1], "item record")
    mask = np.arange(n) >= (n - lengths)[:, None]  # [F, n], left padding
    times = None if times is None else times * mask
    cold = known & (item_codes[:, _item_key_column(meta.schema_text, fields[1])] == OOV)
    return Lookup(
        version, user_codes, user is not None, history, mask, times, item_codes, known, cold
    )


class FeatureStore(ABC):
    """Bulk versioned writes, batched lookups. Implementations are thread-safe."""

    url: str

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
