"""The body of POST /v1/rank, validated: every error names the field, and the limit."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request

FIELDS = ("request_id", "user_id", "context", "candidates", "bid", "shown")
# What an error may be counted under in /metrics: a fixed set, so no client can add labels.
REASONS = (*FIELDS, "body", "content-length", "events")
MAX_TIMESTAMP_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def error_reason(field: str) -> str:
    """The metrics label of a RequestError's field: its top-level name, or "other"."""
    top = field.split("[")[0].split(".")[0]
    return top if top in REASONS else "other"


class RequestError(ValueError):
    """A bad request: names the field, and the limit where one applies."""

    def __init__(
        self, field: str, message: str, status: int = 422, limit: int | None = None
    ) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status, self.limit = field, message, status, limit


@dataclass
class RankRequest:
    request_id: str
    user_id: str
    timestamp: int
    context: dict[str, Any]
    candidates: list[int | str]
    bid: np.ndarray | None
    shown: int | None = None  # the top `shown` are displayed: only they become impressions


def _is_id(x: Any) -> bool:
    return isinstance(x, str | int) and not isinstance(x, bool)


def parse_rank_request(body: bytes, max_candidates: int) -> RankRequest:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise RequestError("body", f"malformed JSON ({err})", status=400) from None
    if not isinstance(data, dict):
        raise RequestError("body", f"must be a JSON object, got {type(data).__name__}")
    for key in data:
        if key not in FIELDS:
            raise RequestError(key, f"unknown field; a request has {list(FIELDS)}")
    for key in ("request_id", "user_id", "context", "candidates"):
        if key not in data:
            raise RequestError(key, "missing (required)")
    request_id = data["request_id"]
    if not isinstance(request_id, str) or not 0 < len(request_id) <= 256:
        raise RequestError(
            "request_id", "must be a non-empty string of at most 256 characters", limit=256
        )
    if not _is_id(data["user_id"]):
        raise RequestError(
            "user_id", f"must be an integer or a string, got {type(data['user_id']).__name__}"
        )
    context = data["context"]
    if not isinstance(context, dict):
        raise RequestError("context", f"must be an object, got {type(context).__name__}")
    timestamp = context.get("timestamp")
    if timestamp is None:
        raise RequestError("context.timestamp", "missing (required: milliseconds since the epoch)")
    if (
        not isinstance(timestamp, int)
        or isinstance(timestamp, bool)
        or not 0 <= timestamp <= MAX_TIMESTAMP_MS
    ):
        raise RequestError(
            "context.timestamp",
            f"must be an integer from 0 to {MAX_TIMESTAMP_MS} (ms since the epoch), got {timestamp!r}",
            limit=MAX_TIMESTAMP_MS,
        )
    candidates = data["candidates"]
    if not isinstance(candidates, list):
        raise RequestError(
            "candidates", f"must be a list of item ids, got {type(candidates).__name__}"
        )
    if not candidates:
        raise RequestError(
            "candidates", f"empty; give 1 to {max_candidates} item ids", limit=max_candidates
        )
    if len(candidates) > max_candidates:
        raise RequestError(
            "candidates",
            f"{len(candidates)} items; the limit is {max_candidates}",
            limit=max_candidates,
        )
    for i, c in enumerate(candidates):
        if not _is_id(c):
            raise RequestError(
                f"candidates[{i}]", f"must be an integer or a string id, got {type(c).__name__}"
            )
    bid = data.get("bid")
    if bid is not None:
        values = bid if isinstance(bid, list) else [bid]
        for i, b in enumerate(values):
            if isinstance(b, bool) or not isinstance(b, int | float) or not 0 <= b < float("inf"):
                where = f"bid[{i}]" if isinstance(bid, list) else "bid"
                raise RequestError(where, f"must be a non-negative number, got {b!r}")
        if isinstance(bid, list) and len(bid) != len(candidates):
            raise RequestError(
                "bid",
                f"has {len(bid)} values for {len(candidates)} candidates (give one number, or one per candidate)",
            )
        bid = np.asarray(values, dtype=np.float64)
    shown = data.get("shown")
    if shown is not None and (
        isinstance(shown, bool) or not isinstance(shown, int) or not 1 <= shown <= len(candidates)
    ):
        raise RequestError(
            "shown",
            f"must be an integer from 1 to the {len(candidates)} candidates (how many of the "
            f"top-ranked the client displays), got {shown!r}",
        )
    context = {k: v for k, v in context.items() if k != "timestamp"}
    return RankRequest(request_id, str(data["user_id"]), timestamp, context, candidates, bid, shown)


async def read_body(request: Request, limit: int, timeout_s: float = 10.0) -> bytes:
    """The body, at most `limit` bytes, within `timeout_s` (a client that trickles it is
    refused with 408 rather than holding the request open)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _read_body(request, limit)
    except TimeoutError:
        raise RequestError(
            "body", f"not received within {timeout_s:g} s", status=408, limit=None
        ) from None


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise RequestError("content-length", f"not a number: {length!r}", status=400)
        if int(length) > limit:
            raise RequestError(
                "body", f"{length} bytes; the limit is {limit} bytes", status=413, limit=limit
            )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(
                "body", f"over {limit} bytes; the limit is {limit} bytes", status=413, limit=limit
            )
        chunks.append(chunk)
    return b"".join(chunks)
