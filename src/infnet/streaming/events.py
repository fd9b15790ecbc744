"""The event log of streaming training: typed, versioned events in named streams, one
interface over two backends.

    impressions   one `Impression` per served candidate, with the exact model inputs
    labels        one `Label` per callback (click, like, watch time: any task of the schema)

Backends, chosen by URL (`open_event_log`):
    events.sqlite | sqlite:///path     the embedded default: one append-only table (WAL),
                                       consumer offsets in the same file
    redis://host:port/db[?prefix=P]    Redis Streams: XADD, a consumer group per consumer,
                                       XREADGROUP / XACK, XAUTOCLAIM of a dead consumer's
                                       entries; the scale-out path

Delivery is at least once on both: `read` gives a consumer the entries it has not
committed (after a restart, the ones it read and did not commit come again), `commit`
marks them done. A consumer that must apply each entry once keeps its own offsets with its
output (the label matcher does) and skips what `order` puts at or before them.
An event that does not decode raises `MalformedEvent` with the reason; the consumer
dead-letters it, it is never dropped silently.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import orjson

IMPRESSIONS, LABELS = "impressions", "labels"
STREAMS = (IMPRESSIONS, LABELS)
VERSION = 1  # of the payloads below; a reader refuses any other


class MalformedEvent(ValueError):
    """An entry that is not an event of this version: the reason, for the dead letter."""


class EventLogUnavailable(RuntimeError):
    """The backend cannot be reached (Redis down); the caller retries, nothing is lost."""


def user_key(user_id: str) -> int:
    """The int64 key of a user id (gAUC groups): the id itself when it is an integer."""
    if user_id.lstrip("-").isdigit() and -(2**63) <= int(user_id) < 2**63:
        return int(user_id)
    return int.from_bytes(hashlib.blake2b(user_id.encode(), digest_size=8).digest(), "big") >> 1


@dataclass(frozen=True)
class Impression:
    """One served candidate and the inputs it was scored on (serving/records.py)."""

    request_id: str
    item_id: str
    user_id: str
    position: int  # its rank in the response, 0 = top
    event_ms: int  # the request's event time
    served_ms: int
    model_version: str
    arm: str
    feature_version: str
    categorical: np.ndarray  # int64 [M]: the model's field order
    seq_ids: np.ndarray  # int64 [F, n, K_side]
    seq_mask: np.ndarray  # bool [F, n]
    seq_gap: np.ndarray  # int64 [F, n]: the gap buckets the model read

    @property
    def key(self) -> tuple[str, str]:
        return self.request_id, self.item_id


@dataclass(frozen=True)
class Label:
    """One label callback: `value` of `task` for the candidate `item_id` of `request_id`."""

    request_id: str
    item_id: str
    task: str
    value: float
    event_ms: int
    event_id: str  # duplicates share it

    @property
    def key(self) -> tuple[str, str]:
        return self.request_id, self.item_id


def label_event_id(request_id: str, item_id: str, task: str, value: float, event_ms: int) -> str:
    """The id of a callback that names none: a resent callback is the same event."""
    text = f"{request_id}\x00{item_id}\x00{task}\x00{value!r}\x00{event_ms}"
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def encode(event: Impression | Label) -> bytes:
    if isinstance(event, Impression):
        body: dict[str, Any] = {"type": "impression", "v": VERSION, **event.__dict__}
        # arrays flat, with their shape: a flat list parses several times faster
        for name in ("categorical", "seq_ids", "seq_mask", "seq_gap"):
            body[name] = np.ravel(body[name])
        body["seq_shape"] = list(event.seq_ids.shape)  # so F = 0 round-trips
    else:
        body = {"type": "label", "v": VERSION, **event.__dict__}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


_STR = ("request_id", "item_id")


def _field(data: dict, name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in data:
        raise MalformedEvent(f"{data.get('type', 'event')}: field {name!r} is missing")
    value = data[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise MalformedEvent(f"{data['type']}: field {name!r} has type {type(value).__name__}")
    return value


def decode(payload: bytes) -> Impression | Label:
    """The event of a payload, or MalformedEvent naming what is wrong."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        raise MalformedEvent(f"not JSON ({err})") from None
    if not isinstance(data, dict) or data.get("type") not in ("impression", "label"):
        raise MalformedEvent("not an event (no type 'impression' or 'label')")
    if data.get("v") != VERSION:
        raise MalformedEvent(
            f"{data['type']}: version {data.get('v')!r}, this reader reads {VERSION}"
        )
    for name in _STR:
        if not _field(data, name, str):
            raise MalformedEvent(f"{data['type']}: field {name!r} is empty")
    event_ms = _field(data, "event_ms", int)
    if event_ms < 0:
        raise MalformedEvent(f"{data['type']}: event_ms {event_ms} is negative")
    if data["type"] == "label":
        value = _field(data, "value", (int, float))
        if not math.isfinite(value):
            raise MalformedEvent(f"label: value {value} is not finite")
        return Label(
            request_id=data["request_id"],
            item_id=data["item_id"],
            task=_field(data, "task", str),
            value=float(value),
            event_ms=event_ms,
            event_id=_field(data, "event_id", str),
        )
    shape = _field(data, "seq_shape", list)
    try:
        seq_ids = np.asarray(_field(data, "seq_ids", list), dtype=np.int64).reshape(shape)
        seq_mask = np.asarray(_field(data, "seq_mask", list), dtype=bool).reshape(shape[:2])
        seq_gap = np.asarray(_field(data, "seq_gap", list), dtype=np.int64).reshape(shape[:2])
        categorical = np.asarray(_field(data, "categorical", list), dtype=np.int64)
    except (ValueError, TypeError) as err:
        raise MalformedEvent(f"impression: model inputs do not fit their shape ({err})") from None
    if categorical.ndim != 1:
        raise MalformedEvent("impression: field 'categorical' is not one row of codes")
    return Impression(
        request_id=data["request_id"],
        item_id=data["item_id"],
        user_id=_field(data, "user_id", str),
        position=_field(data, "position", int),
        event_ms=event_ms,
        served_ms=_field(data, "served_ms", int),
        model_version=_field(data, "model_version", str),
        arm=_field(data, "arm", str),
        feature_version=_field(data, "feature_version", str),
        categorical=categorical,
        seq_ids=seq_ids,
        seq_mask=seq_mask,
        seq_gap=seq_gap,
    )


@dataclass(frozen=True)
class Entry:
    id: str  # the backend's offset, ordered within a stream by `EventLog.order`
    payload: bytes


class EventLog(ABC):
    url: str

    @abstractmethod
    def append(self, stream: str, payloads: Sequence[bytes]) -> None:
        """Append in order, all or nothing (EventLogUnavailable when the backend is down)."""

    @abstractmethod
    def read(self, stream: str, consumer: str, count: int) -> list[Entry]:
        """Up to `count` entries the consumer has not committed, oldest first."""

    @abstractmethod
    def commit(self, stream: str, consumer: str, entries: Sequence[Entry]) -> None:
        """The consumer is done with these entries; they are not delivered to it again."""

    @abstractmethod
    def length(self, stream: str) -> int: ...

    @abstractmethod
    def lag(self, stream: str, consumer: str) -> int:
        """Entries of the stream the consumer has not committed."""

    @staticmethod
    @abstractmethod
    def order(entry_id: str) -> tuple[int, ...]: ...

    def close(self) -> None:  # noqa: B027 (a backend without resources needs nothing)
        pass


# --- SQLite ------------------------------------------------------------------------------------
_TABLES = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL, payload BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS events_stream ON events (stream, id);
CREATE TABLE IF NOT EXISTS offsets (
    consumer TEXT NOT NULL, stream TEXT NOT NULL, id INTEGER NOT NULL,
    PRIMARY KEY (consumer, stream));
"""


class SqliteEventLog(EventLog):
    """One file: `events` (append-only, AUTOINCREMENT ids never reused) and `offsets`."""

    def __init__(self, path: str | Path, *, timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self.url = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # one connection behind a lock: the server appends from several threads
        self._conn = sqlite3.connect(self.path, timeout=timeout_s, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_TABLES)
        self._lock = threading.Lock()
        self._read_to: dict[tuple[str, str], int] = {}  # delivered this session, not committed

    def append(self, stream: str, payloads: Sequence[bytes]) -> None:
        with self._lock, self._conn:
            self._conn.executemany(
                "INSERT INTO events (stream, payload) VALUES (?, ?)",
                [(stream, p) for p in payloads],
            )

    def _committed(self, stream: str, consumer: str) -> int:
        row = self._conn.execute(
            "SELECT id FROM offsets WHERE consumer = ? AND stream = ?", (consumer, stream)
        ).fetchone()
        return row[0] if row else 0

    def read(self, stream: str, consumer: str, count: int) -> list[Entry]:
        with self._lock:
            after = max(self._committed(stream, consumer), self._read_to.get((stream, consumer), 0))
            rows = self._conn.execute(
                "SELECT id, payload FROM events WHERE stream = ? AND id > ? ORDER BY id LIMIT ?",
                (stream, after, count),
            ).fetchall()
            if rows:
                self._read_to[stream, consumer] = rows[-1][0]
        return [Entry(str(i), bytes(p)) for i, p in rows]

    def commit(self, stream: str, consumer: str, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        last = max(int(e.id) for e in entries)
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT INTO offsets (consumer, stream, id) VALUES (?, ?, ?) ON CONFLICT "
                "(consumer, stream) DO UPDATE SET id = max(id, excluded.id)",
                (consumer, stream, last),
            )

    def length(self, stream: str) -> int:
        with self._lock:
            return self._conn.execute(
                "SELECT count(*) FROM events WHERE stream = ?", (stream,)
            ).fetchone()[0]

    def lag(self, stream: str, consumer: str) -> int:
        with self._lock:
            return self._conn.execute(
                "SELECT count(*) FROM events WHERE stream = ? AND id > ?",
                (stream, self._committed(stream, consumer)),
            ).fetchone()[0]

    @staticmethod
    def order(entry_id: str) -> tuple[int, ...]:
        return (int(entry_id),)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# --- Redis Streams ------------------------------------------------------------------------------
class RedisEventLog(EventLog):
    """A stream `PREFIX:events:STREAM` per stream and a consumer group per consumer name
    (processes sharing a consumer's work are members of its group, `member` each). After
    a restart a member first gets its own pending entries (read and never acknowledged),
    then those pending with a member idle over `claim_idle_ms` (one that died), claimed
    with XAUTOCLAIM, then new entries."""

    def __init__(
        self,
        url: str,
        *,
        member: str = "member",
        timeout_s: float = 2.0,
        claim_idle_ms: int = 60_000,
    ) -> None:
        import redis

        self._redis = redis
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        self.prefix = query.pop("prefix", "infnet")
        self.url = url
        self.client = redis.Redis.from_url(
            urlunsplit(parts._replace(query=urlencode(query))),
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )
        self.member, self.claim_idle_ms = member, claim_idle_ms
        self._groups: set[tuple[str, str]] = set()
        # per (stream, consumer): where the own-pending and the claim passes stand (None: done)
        self._backlog: dict[tuple[str, str], list] = {}

    def _key(self, stream: str) -> str:
        return f"{self.prefix}:events:{stream}"

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (self._redis.ConnectionError, self._redis.TimeoutError) as err:
            raise EventLogUnavailable(f"event log {self.url} is unreachable: {err}") from None

    def _group(self, stream: str, consumer: str) -> None:
        if (stream, consumer) in self._groups:
            return
        try:
            self._call(
                self.client.xgroup_create, self._key(stream), consumer, id="0", mkstream=True
            )
        except self._redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise
        self._groups.add((stream, consumer))

    def append(self, stream: str, payloads: Sequence[bytes]) -> None:
        pipe = self.client.pipeline(transaction=True)  # MULTI: all or nothing
        for p in payloads:
            pipe.xadd(self._key(stream), {"p": p})
        self._call(pipe.execute)

    def read(self, stream: str, consumer: str, count: int) -> list[Entry]:
        self._group(stream, consumer)
        key = self._key(stream)
        backlog = self._backlog.setdefault((stream, consumer), ["0", "0-0"])
        if backlog[0] is not None:  # our own pending entries, after the last one given
            got = self._call(
                self.client.xreadgroup, consumer, self.member, {key: backlog[0]}, count=count
            )
            entries = got[0][1] if got else []
            if entries:
                backlog[0] = entries[-1][0].decode()
                return [Entry(i.decode(), f[b"p"]) for i, f in entries]
            backlog[0] = None
        if backlog[1] is not None:  # then those of a member that died
            cursor, claimed, *_ = self._call(
                self.client.xautoclaim, key, consumer, self.member, self.claim_idle_ms,
                backlog[1], count=count,
            )  # fmt: skip
            backlog[1] = None if cursor in (b"0-0", "0-0") else cursor.decode()
            entries = [e for e in claimed if e[1]]
            if entries:
                return [Entry(i.decode(), f[b"p"]) for i, f in entries]
        got = self._call(self.client.xreadgroup, consumer, self.member, {key: ">"}, count=count)
        return [Entry(i.decode(), f[b"p"]) for i, f in (got[0][1] if got else [])]

    def commit(self, stream: str, consumer: str, entries: Sequence[Entry]) -> None:
        if entries:
            self._call(self.client.xack, self._key(stream), consumer, *[e.id for e in entries])

    def length(self, stream: str) -> int:
        return self._call(self.client.xlen, self._key(stream))

    def lag(self, stream: str, consumer: str) -> int:
        self._group(stream, consumer)
        for g in self._call(self.client.xinfo_groups, self._key(stream)):
            if g["name"].decode() == consumer:
                # entries never delivered plus entries delivered and not acknowledged
                return int(g.get("lag") or 0) + int(g["pending"])
        return self.length(stream)

    @staticmethod
    def order(entry_id: str) -> tuple[int, ...]:
        ms, _, seq = entry_id.partition("-")
        return int(ms), int(seq or 0)

    def close(self) -> None:
        self.client.close()


def open_event_log(url: str | Path) -> EventLog:
    """`redis://...` -> Redis Streams; a path or `sqlite:///path` -> SQLite."""
    url = str(url)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisEventLog(url)
    if url.startswith("sqlite:///"):
        url = url.removeprefix("sqlite:///")
    elif "://" in url:
        raise ValueError(f"event log {url!r}: use a path, sqlite:///path or redis://host:port/db")
    return SqliteEventLog(url)
