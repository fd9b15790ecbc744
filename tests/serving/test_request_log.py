"""The request log: records round-trip with their exact inputs, and a record it cannot
store costs only itself: the writer thread goes on, and counts it."""

from __future__ import annotations

import numpy as np

from infnet.serving.records import ServedRequest
from infnet.serving.request_log import RequestLog, read_request_log


def record(request_id: str, ts_ms: int = 1_651_000_000_000) -> ServedRequest:
    return ServedRequest(
        request_id=request_id,
        ts_ms=ts_ms,
        served_ms=ts_ms + 5,
        user_id="42",
        model_version="m-1",
        arm="control",
        feature_version="f-1",
        context={"tab": 1},
        bid=None,
        candidates=[7, "x"],
        unknown_user=False,
        item_known=np.array([True, False]),
        scores={"is_click": np.array([0.25, 0.5])},
        ranking=np.array([0.25, 0.5]),
        categorical=np.arange(6, dtype=np.int64).reshape(2, 3),
        seq_ids=np.arange(8, dtype=np.int64).reshape(2, 2, 2),
        seq_mask=np.array([[True, False], [False, False]]),
        seq_gap=np.array([[5, 0], [0, 0]]),
    )


def test_records_round_trip(tmp_path):
    log = RequestLog(tmp_path / "log.sqlite")
    log.append(record("a"))
    log.close()
    [got] = read_request_log(tmp_path / "log.sqlite")
    want = record("a")
    assert (got.request_id, got.user_id, got.arm, got.candidates) == (
        "a",
        "42",
        "control",
        [7, "x"],
    )
    for name in ("item_known", "ranking", "categorical", "seq_ids", "seq_mask"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    np.testing.assert_array_equal(got.scores["is_click"], want.scores["is_click"])


def test_a_record_sqlite_cannot_hold_costs_only_itself(tmp_path):
    log = RequestLog(tmp_path / "log.sqlite", flush_s=0.5)
    log.append(record("before"))
    log.append(record("overflow", ts_ms=2**64 - 1))  # not an SQLite integer
    log.append(record("after"))
    assert log.alive
    log.close()
    assert log.errors == 1
    assert [r.request_id for r in read_request_log(tmp_path / "log.sqlite")] == ["before", "after"]
