"""The server's typed configuration (YAML via `infnet serve --config`, flags override).

store: features.sqlite            # or sqlite:///path, redis://host:port/0
model: models/v1                  # one model ... or A/B arms over user-hash buckets:
arms:
  - {name: control, model: models/v1, buckets: [0, 90]}      # [start, end)
  - {name: treatment, model: models/v2, buckets: [90, 100]}
num_buckets: 100
ranking: {formula: "click", bid_formula: "click * bid"}
admin_token: ...                  # or the INFNET_ADMIN_TOKEN environment variable
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from pydantic import Field, model_validator

from infnet.config import Strict, load_yaml, validate

ADMIN_TOKEN_ENV = "INFNET_ADMIN_TOKEN"


class ArmConfig(Strict):
    name: str = Field(min_length=1)
    model: str
    buckets: tuple[int, int]  # [start, end) of the user-hash buckets served by this arm
    eager: bool | None = None  # default: the server's `eager`


class RankingConfig(Strict):
    formula: str | None = None  # default: "click" (else the first task)
    bid_formula: str | None = None  # default: "(formula) * bid"


class ServerConfig(Strict):
    model: str | None = None
    arms: list[ArmConfig] = Field(default_factory=list)
    num_buckets: int = Field(default=100, ge=1)
    hash_salt: str = "infnet"
    store: str = "features.sqlite"
    request_log: str | None = "requests.sqlite"  # None: no request log
    # streaming training: impressions and POST /v1/events labels go to this event log
    # (a path or sqlite:///path, or redis://host:port/db); None: no event log, no /v1/events
    event_log: str | None = None
    max_label_events: int = Field(default=1000, ge=1)  # label events per POST /v1/events
    max_queued_impressions: int = Field(default=10_000, ge=1)  # records; past it, dropped
    eager: bool = False  # run PyTorch instead of ONNX Runtime
    max_candidates: int = Field(default=1000, ge=1)
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    # rows per model call: per-row cost grows with the batch (INFNet, 100 candidates of
    # 150 history tokens: 136 us/row at 100 rows, 214 at 1000), so keep batches small
    max_batch_rows: int = Field(default=512, ge=1)
    # beyond this many rows admitted and not yet answered, 503 (overloaded): ~0.3 s of
    # queue at 136 us/row, instead of a queue that grows until clients time out
    max_queued_rows: int = Field(default=2048, ge=1)  # rows admitted and not yet answered
    max_wait_ms: float = Field(default=2.0, ge=0)
    inference_threads: int = Field(default=1, ge=1)
    lookup_threads: int = Field(default=4, ge=1)  # feature-store lookups in flight at once
    admin_token: str | None = None
    # /admin/reload loads only model directories under this folder (default: the folders
    # holding the models the server started with)
    reload_root: str | None = None
    # a slow or stalled client: its connection is closed, its request refused (408)
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=10.0, gt=0)
    utc_offset_hours: float = 8.0  # local time of the hour / weekday context fields
    ranking: RankingConfig = Field(default_factory=RankingConfig)

    @model_validator(mode="after")
    def _check(self) -> ServerConfig:
        if (self.model is None) == (not self.arms):
            raise ValueError("give either `model` (one model) or `arms` (A/B), not both or neither")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique: {names}")
        covered = sorted((a.buckets[0], a.buckets[1], a.name) for a in self.arms)
        position = 0
        for start, end, name in covered:
            if start != position or end <= start:
                raise ValueError(
                    f"arm {name!r}: buckets [{start}, {end}) must start at {position} and be non-empty; "
                    f"the arms must cover [0, {self.num_buckets}) without gaps or overlaps"
                )
            position = end
        if self.arms and position != self.num_buckets:
            raise ValueError(
                f"the arms cover [0, {position}), not [0, num_buckets={self.num_buckets})"
            )
        return self

    def arm_list(self) -> list[ArmConfig]:
        if self.model is not None:
            return [ArmConfig(name="default", model=self.model, buckets=(0, self.num_buckets))]
        return list(self.arms)

    def token(self) -> str | None:
        return self.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None

    def bucket(self, user_id: str) -> int:
        """The user's A/B bucket: a stable hash, the same in every process."""
        return zlib.crc32(f"{self.hash_salt}:{user_id}".encode()) % self.num_buckets


def load_server_config(path: str | Path | None, **overrides: object) -> ServerConfig:
    """The YAML file (if any) with the given non-None values on top."""
    raw = load_yaml(path) if path is not None else {}
    raw |= {k: v for k, v in overrides.items() if v is not None}
    if raw.get("model") is not None and "arms" in raw and overrides.get("model") is not None:
        raw.pop("arms")  # --model on the command line replaces the file's arms
    return validate(ServerConfig, raw, where=str(path) if path else "server config")
