"""The event logs every streaming test runs on: SQLite always, Redis Streams when a
redis-server is there (CI starts one)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from infnet.data.schema import Schema
from infnet.streaming.events import EventLog, Impression, Label, label_event_id, open_event_log


@pytest.fixture(params=["sqlite", "redis"])
def event_log(request, tmp_path) -> Iterator[EventLog]:
    if request.param == "sqlite":
        log = open_event_log(tmp_path / "events.sqlite")
    else:
        log = open_event_log(request.getfixturevalue("redis_url"))
    yield log
    log.close()


@pytest.fixture(scope="session")
def schema(small_prepared) -> Schema:
    return Schema.load(small_prepared / "schema.json")


def impression(request_id: str, item_id: str, event_ms: int, *, user: str = "7") -> Impression:
    return Impression(
        request_id=request_id,
        item_id=item_id,
        user_id=user,
        position=0,
        event_ms=event_ms,
        served_ms=event_ms,
        model_version="m1",
        arm="default",
        feature_version="f1",
        categorical=np.arange(5, dtype=np.int64),
        seq_ids=np.ones((2, 3, 2), np.int64),
        seq_mask=np.array([[False, True, True], [False, False, True]]),
        seq_gap=np.array([[0, 4, 3], [0, 0, 2]], np.int64),
    )


def label(request_id: str, item_id: str, task: str, event_ms: int, value: float = 1.0) -> Label:
    return Label(
        request_id, item_id, task, value, event_ms,
        label_event_id(request_id, item_id, task, value, event_ms),
    )  # fmt: skip
