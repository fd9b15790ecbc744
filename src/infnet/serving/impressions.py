"""What the server gives streaming training: one impression event per served candidate,
and the label callbacks of POST /v1/events, both appended to the event log
(streaming/events.py).

The rank path only enqueues its `ServedRequest`; a background thread turns it into one
`Impression` per candidate (its position in the response, its row of the model inputs,
the history the candidates shared) and appends them. The queue is bounded: past
`max_queued` records a record is dropped and counted, and the request is still served.
While the event log is unreachable the thread retries with backoff and keeps what is
queued; a thread that dies is reported by /readyz.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time

import numpy as np
import orjson

from infnet.serving.records import ServedRequest
from infnet.serving.requests import MAX_TIMESTAMP_MS, RequestError
from infnet.streaming.events import (
    IMPRESSIONS,
    EventLog,
    EventLogUnavailable,
    Impression,
    Label,
    encode,
    label_event_id,
)

log = logging.getLogger("infnet.serving")
LABEL_FIELDS = ("request_id", "item_id", "task", "value", "event_ms", "event_id")


def impressions(record: ServedRequest) -> list[Impression]:
    """The record's displayed candidates (the top `shown`, else all) as impressions,
    position = rank in the response: a candidate never shown has no label to wait for."""
    K = len(record.candidates)
    position = np.empty(K, np.int64)
    position[np.argsort(-record.ranking, kind="stable")] = np.arange(K)
    shown = K if record.shown is None else record.shown
    return [
        Impression(
            request_id=record.request_id,
            item_id=str(item),
            user_id=record.user_id,
            position=int(position[i]),
            event_ms=record.ts_ms,
            served_ms=record.served_ms,
            model_version=record.model_version,
            arm=record.arm,
            feature_version=record.feature_version,
            categorical=record.categorical[i],
            seq_ids=record.seq_ids,
            seq_mask=record.seq_mask,
            seq_gap=record.seq_gap,
        )
        for i, item in enumerate(record.candidates)
        if position[i] < shown
    ]


class ImpressionWriter:
    def __init__(self, events: EventLog, *, max_queued: int = 10_000, retry_s: float = 0.5) -> None:
        self.events, self.retry_s = events, retry_s
        self.written = self.dropped = self.retries = 0
        self._closing: float | None = None  # the deadline of close()
        self._queue: queue.Queue[ServedRequest | None] = queue.Queue(max_queued)
        self._thread = threading.Thread(target=self._write, name="infnet-impressions", daemon=True)
        self._thread.start()

    def append(self, record: ServedRequest) -> None:
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += len(record.candidates)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout_s: float = 30.0) -> None:
        """Append what is queued (for up to `timeout_s`) and stop."""
        self._closing = time.monotonic() + timeout_s
        self._queue.put(None)
        self._thread.join(timeout=timeout_s + 1)

    def _write(self) -> None:
        while True:
            records = [self._queue.get()]
            while len(records) < 64 and not self._queue.empty():
                records.append(self._queue.get_nowait())
            stop = None in records
            payloads = [encode(i) for r in records if r is not None for i in impressions(r)]
            while payloads:
                try:
                    self.events.append(IMPRESSIONS, payloads)
                    self.written += len(payloads)
                    break
                except EventLogUnavailable as err:
                    if self._closing is not None and time.monotonic() > self._closing:
                        self.dropped += len(payloads)
                        log.error("impressions: %d dropped at shutdown: %s", len(payloads), err)
                        break
                    self.retries += 1
                    if self.retries == 1 or self.retries % 100 == 0:
                        log.warning("impressions: event log unavailable, retrying: %s", err)
                    time.sleep(self.retry_s)
            if stop:
                return


def parse_label_events(body: bytes, tasks: dict[str, str], max_events: int) -> list[Label]:
    """The callbacks of a POST /v1/events body, {"events": [{request_id, item_id, task,
    value, event_ms, event_id?}, ...]}; a RequestError names the first bad field."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise RequestError("body", f"malformed JSON ({err})", status=400) from None
    if not isinstance(data, dict) or set(data) != {"events"}:
        raise RequestError("body", 'must be an object with one key, "events"')
    events = data["events"]
    if not isinstance(events, list) or not 0 < len(events) <= max_events:
        raise RequestError(
            "events", f"must be a list of 1 to {max_events} label events", limit=max_events
        )
    labels = []
    for i, e in enumerate(events):
        where = f"events[{i}]"
        if not isinstance(e, dict):
            raise RequestError(where, f"must be an object, got {type(e).__name__}")
        for key in e:
            if key not in LABEL_FIELDS:
                raise RequestError(
                    f"{where}.{key}", f"unknown field; a label has {list(LABEL_FIELDS)}"
                )
        for key in LABEL_FIELDS[:5]:
            if key not in e:
                raise RequestError(f"{where}.{key}", "missing (required)")
        for key in ("request_id", "item_id"):
            value = e[key]
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or not 0 < len(value) <= 256:
                raise RequestError(
                    f"{where}.{key}",
                    "must be a non-empty string (or integer id) of at most 256 characters",
                )
            e[key] = value
        task, value, event_ms = e["task"], e["value"], e["event_ms"]
        if task not in tasks:
            raise RequestError(
                f"{where}.task", f"unknown task {task!r}; the model's tasks are {list(tasks)}"
            )
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise RequestError(f"{where}.value", f"must be a finite number, got {value!r}")
        if tasks[task] == "binary" and value not in (0, 1):
            raise RequestError(f"{where}.value", f"task {task!r} is binary: 0 or 1, got {value!r}")
        if (
            isinstance(event_ms, bool)
            or not isinstance(event_ms, int)
            or not 0 <= event_ms <= MAX_TIMESTAMP_MS
        ):
            raise RequestError(
                f"{where}.event_ms", f"must be an integer from 0 to {MAX_TIMESTAMP_MS} (ms since the epoch)",
                limit=MAX_TIMESTAMP_MS,
            )  # fmt: skip
        event_id = e.get("event_id")
        if event_id is not None and (not isinstance(event_id, str) or not 0 < len(event_id) <= 256):
            raise RequestError(
                f"{where}.event_id", "must be a non-empty string of at most 256 characters"
            )
        value = float(value)
        labels.append(Label(
            e["request_id"], e["item_id"], task, value, event_ms,
            event_id or label_event_id(e["request_id"], e["item_id"], task, value, event_ms),
        ))  # fmt: skip
    return labels
