"""The Redis feature store, for when one file no longer suffices.

Keys (prefix `infnet` unless the URL says `?prefix=NAME`):
    PREFIX:current              the current feature version
    PREFIX:meta:VERSION         StoreMeta JSON of each load
    PREFIX:VERSION:u:USER       user record (stores/base.py), raw int32 bytes
    PREFIX:VERSION:i:ITEM       item record

A load writes a new VERSION namespace with pipelined MSETs, then switches `current` (one
SET) and unlinks the previous namespace. A lookup is one Lua script call, atomic in Redis:
it reads `current` and MGETs the user and the candidates of that version, so a request
never mixes two versions and names the one it used.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from infnet.serving.stores.base import FeatureStore, Snapshot, StoreMeta, StoreUnavailable

_FETCH = """
local v = redis.call('GET', ARGV[1] .. ':current')
if not v then return false end
local ns = ARGV[1] .. ':' .. v
local keys = {ns .. ':u:' .. ARGV[2]}
for i = 3, #ARGV do keys[#keys + 1] = ns .. ':i:' .. ARGV[i] end
return {v, redis.call('MGET', unpack(keys))}
"""
CHUNK = 10_000  # keys per MSET


class RedisStore(FeatureStore):
    def __init__(self, url: str, *, timeout_s: float = 1.0) -> None:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        self.prefix = query.pop("prefix", "infnet")
        self.url = url
        client_url = urlunsplit(parts._replace(query=urlencode(query)))
        # No retries: an unreachable store must fail fast (503), not stall requests.
        self.client = redis.Redis.from_url(
            client_url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._fetch = self.client.register_script(_FETCH)

    def _unavailable(self, err: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"feature store {self.url} is unreachable: {err}")

    def write(self, snapshot: Snapshot) -> None:
        v = snapshot.meta.version
        ns = f"{self.prefix}:{v}"
        try:
            previous = self.client.get(f"{self.prefix}:current")
            pipe = self.client.pipeline(transaction=False)
            for kind, ids, records in (
                ("u", snapshot.user_ids, snapshot.user_records),
                ("i", snapshot.item_ids, snapshot.item_records),
            ):
                for lo in range(0, len(ids), CHUNK):
                    pipe.mset(
                        {
                            f"{ns}:{kind}:{k}": bytes(r)
                            for k, r in zip(
                                ids[lo : lo + CHUNK], records[lo : lo + CHUNK], strict=True
                            )
                        }
                    )
                    pipe.execute()
            self.client.set(f"{self.prefix}:meta:{v}", snapshot.meta.model_dump_json())
            self.client.set(f"{self.prefix}:current", v)
            if previous is not None and previous.decode() != v:
                old = self.client.scan_iter(
                    match=f"{self.prefix}:{previous.decode()}:*", count=CHUNK
                )
                batch = []
                for key in old:
                    batch.append(key)
                    if len(batch) == CHUNK:
                        self.client.unlink(*batch)
                        batch = []
                if batch:
                    self.client.unlink(*batch)
        except redis.RedisError as err:
            raise self._unavailable(err) from None

    def fetch(self, user: str, items: list[str]) -> tuple[str, bytes | None, list[bytes | None]]:
        try:
            answer = self._fetch(args=[self.prefix, user, *items])
        except redis.RedisError as err:
            raise self._unavailable(err) from None
        if not answer:
            raise StoreUnavailable(
                f"feature store {self.url} holds no features; run `infnet serve load-features`"
            )
        version, records = answer
        return version.decode(), records[0], records[1:]

    def meta(self, version: str | None = None) -> StoreMeta:
        try:
            if version is None:
                current = self.client.get(f"{self.prefix}:current")
                version = current.decode() if current is not None else None
            raw = self.client.get(f"{self.prefix}:meta:{version}") if version else None
        except redis.RedisError as err:
            raise self._unavailable(err) from None
        if raw is None:
            raise StoreUnavailable(
                f"feature store {self.url} holds no features; run `infnet serve load-features`"
            )
        return StoreMeta.model_validate_json(raw)

    def ping(self) -> None:
        self.meta()

    def close(self) -> None:
        self.client.close()
