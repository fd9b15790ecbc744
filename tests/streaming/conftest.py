"""The event logs every streaming test runs on: SQLite always, Redis Streams when a
redis-server is there (CI starts one)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from infnet.data.loader import PreparedDataset
from infnet.data.schema import Schema
from infnet.streaming.events import (
    EventLog,
    Impression,
    Label,
    encode,
    label_event_id,
    open_event_log,
)
from infnet.streaming.label_matcher import LabelMatcher
from infnet.streaming.samples import SampleWriter


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


def impressions_of(data: PreparedDataset, split: str, rows: np.ndarray) -> list:
    """Each row an impression (its features as the loader gives them) and its positives."""
    b = data.batch_at(split, rows)
    time_ms = data._split(split).time[rows]
    events = []
    for j, i in enumerate(rows.tolist()):
        events.append(Impression(
            request_id=f"row-{i}", item_id=str(int(b.categorical[j, 0])), user_id=str(int(b.user[j])),
            position=0, event_ms=int(time_ms[j]), served_ms=int(time_ms[j]), model_version="m0",
            arm="default", feature_version="f0", categorical=b.categorical[j].numpy(),
            seq_ids=b.seq_ids[j].numpy(), seq_mask=b.seq_mask[j].numpy(), seq_gap=b.seq_gap[j].numpy(),
        ))  # fmt: skip
        for t, task in enumerate(data.schema.task_names):
            if b.labels[j, t] == 1:
                events.append(
                    label(f"row-{i}", str(int(b.categorical[j, 0])), task, int(time_ms[j]) + 1000)
                )
    return events


@pytest.fixture(scope="session")
def streamed(small_prepared, tmp_path_factory) -> tuple[Path, Path]:
    """The test split, served and labelled, through the matcher into sample parts."""
    tmp = tmp_path_factory.mktemp("streamed")
    data = PreparedDataset(small_prepared)
    log = open_event_log(tmp / "events.sqlite")
    for e in impressions_of(data, "test", np.arange(data.num_rows("test"))):
        log.append("labels" if type(e).__name__ == "Label" else "impressions", [encode(e)])
    matcher = LabelMatcher(log, tmp / "matcher.sqlite", data.schema)
    matcher.run_until_idle(drain=True)
    matcher.close()
    writer = SampleWriter(
        tmp / "matcher.sqlite", tmp / "samples", small_prepared / "schema.json", part_rows=128
    )
    assert writer.flush() == 7 * 128  # full parts only
    assert writer.flush(force=True) == 900 - 7 * 128
    return tmp / "samples", tmp / "matcher.sqlite"


@pytest.fixture(scope="session")
def start_run(small_prepared, tmp_path_factory) -> Path:
    from infnet.training.config import RunConfig, TrainConfig
    from infnet.training.trainer import Trainer

    run_dir = tmp_path_factory.mktemp("start") / "run"
    config = RunConfig(
        data=str(small_prepared), model="infnet",
        # dropout, so the RNG a resumed trainer restores is part of what is checked
        model_options={"preset": "v2", "embedding_dim": 8, "num_blocks": 1, "time_aware": True,
                       "dropout": 0.2},
        train=TrainConfig(epochs=1, batch_size=512, device="cpu"),
    )  # fmt: skip
    Trainer.from_config(config, run_dir, progress=False).fit()
    return run_dir
