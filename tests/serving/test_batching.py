"""The micro-batcher and the ranking formula, without a server."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from infnet.serving.batching import MicroBatcher
from infnet.serving.features import Inputs
from infnet.serving.ranking import Formula, Ranker


class SlowModel:
    """Scores a row by its first categorical code; records the rows of each call."""

    def __init__(self, seconds: float = 0.02, fail: bool = False) -> None:
        self.seconds, self.fail, self.calls = seconds, fail, []
        self.version = "slow"

    def predict(self, categorical, seq_ids, seq_mask, seq_index, seq_gap=None):
        # one history per request: seq_ids [U, F, n, K], seq_index [B] -> its row's history
        self.calls.append(len(categorical))
        assert seq_ids.shape[1:] == (2, 3, 1) and seq_mask.shape == (len(seq_ids), 2, 3)
        assert seq_index.shape == (len(categorical),) and seq_index.max() < len(seq_ids)
        time.sleep(self.seconds)
        if self.fail:
            raise RuntimeError("boom")
        history = seq_ids[seq_index, 0, -1, 0]
        return np.stack([categorical[:, 0] * 1.0, history * 1.0], axis=1).astype(np.float32)


def inputs(first: int, rows: int) -> Inputs:
    categorical = np.arange(first, first + rows, dtype=np.int64)[:, None].repeat(3, axis=1)
    seq_ids = np.full((2, 3, 1), first, np.int64)
    return Inputs(categorical, seq_ids, np.ones((2, 3), bool), np.ones((2, 3), np.int64))


async def submit_all(batcher: MicroBatcher, model, requests: list[Inputs]) -> list[np.ndarray]:
    async def one(x: Inputs) -> np.ndarray:
        batcher.expect()
        await asyncio.sleep(0)
        return await batcher.submit(model, x)

    return await asyncio.gather(*(one(x) for x in requests))


def test_requests_queued_behind_a_running_call_share_the_next_one():
    observed = []
    batcher = MicroBatcher(
        max_rows=64, max_wait_ms=50, observe=lambda r, n, s: observed.append((r, n))
    )
    batcher.start()
    model = SlowModel()
    requests = [inputs(100 * i, 5 + i) for i in range(10)]
    results = asyncio.run(submit_all(batcher, model, requests))
    batcher.stop()
    for x, out in zip(requests, results, strict=True):  # each request gets exactly its own rows
        np.testing.assert_array_equal(out[:, 0], x.categorical[:, 0])
        np.testing.assert_array_equal(out[:, 1], x.seq_ids[0, -1, 0])
    assert sum(r for r, _ in observed) == sum(len(x) for x in requests)
    assert max(n for _, n in observed) > 1  # batched across requests
    assert max(model.calls) <= 64  # bounded batch


def test_a_lone_request_does_not_wait_and_a_full_batch_is_split():
    batcher = MicroBatcher(max_rows=8, max_wait_ms=1000)
    batcher.start()
    model = SlowModel(seconds=0)
    started = time.perf_counter()
    asyncio.run(submit_all(batcher, model, [inputs(0, 3)]))
    assert time.perf_counter() - started < 0.5  # nobody else expected: no 1 s wait
    asyncio.run(submit_all(batcher, model, [inputs(0, 5), inputs(10, 5)]))
    batcher.stop()
    assert model.calls[1:] == [5, 5]  # 10 rows do not fit a batch of 8


def test_a_failing_model_fails_its_requests_not_the_worker():
    batcher = MicroBatcher()
    batcher.start()
    with pytest.raises(RuntimeError, match="inference failed: RuntimeError: boom"):
        asyncio.run(submit_all(batcher, SlowModel(0, fail=True), [inputs(0, 2)]))
    assert asyncio.run(submit_all(batcher, SlowModel(0), [inputs(0, 2)]))[0].shape == (2, 2)
    batcher.stop()
    assert not any(t.name == "infnet-inference" for t in threading.enumerate())


def test_ranking_formula():
    scores = {"click": np.array([0.1, 0.5, 0.2]), "like": np.array([0.3, 0.0, 0.1])}
    np.testing.assert_allclose(
        Formula("click + 0.5 * like ** 2 - -1", ["click", "like"])(scores), [1.145, 1.5, 1.205]
    )
    ranker = Ranker(["click", "like"])
    np.testing.assert_allclose(ranker(scores, None), scores["click"])
    np.testing.assert_allclose(ranker(scores, np.array([2.0, 0.1, 1.0])), [0.2, 0.05, 0.2])
    assert Ranker(["is_click", "x"]).plain.text == "is_click"
    for text, message in (
        ("click + ctr", "unknown name 'ctr'"),
        ("__import__('os')", "not allowed"),
        ("click.real", "not allowed"),
        ("click +", "not an expression"),
    ):
        with pytest.raises(ValueError, match=message):
            Formula(text, ["click", "like"])
    with pytest.raises(ValueError, match="bid_formula"):
        Ranker(["click"], formula="click * bid")


def test_hour_and_weekday_from_timestamp_match_beijing_local_time():
    import polars as pl

    from infnet.serving.features import FROM_TIMESTAMP, HOUR_MS

    t = np.random.default_rng(0).integers(1_600_000_000_000, 1_700_000_000_000, 500)
    local = (
        pl.from_epoch(pl.Series(t), time_unit="ms")
        .dt.replace_time_zone("UTC")
        .dt.convert_time_zone("Asia/Shanghai")
    )
    offset = 8 * HOUR_MS
    assert [FROM_TIMESTAMP["hour"](int(x), offset) for x in t] == local.dt.hour().to_list()
    assert [FROM_TIMESTAMP["weekday"](int(x), offset) for x in t] == local.dt.weekday().to_list()


class PoisonModel(SlowModel):
    """Fails any call that holds a row whose first code is negative."""

    def predict(self, categorical, seq_ids, seq_mask, seq_index, seq_gap=None):
        if (categorical[:, 0] < 0).any():
            self.calls.append(len(categorical))
            raise RuntimeError("index out of range in node Gather_42")
        return super().predict(categorical, seq_ids, seq_mask, seq_index)


def test_a_failing_request_fails_alone_and_its_batch_neighbours_are_scored():
    batcher = MicroBatcher(max_rows=256, max_wait_ms=50)
    batcher.start()
    model = PoisonModel(seconds=0.02)
    good = [inputs(100 * i, 4) for i in range(1, 6)]
    bad = Inputs(
        np.full((3, 3), -5, np.int64),
        np.zeros((2, 3, 1), np.int64),
        np.ones((2, 3), bool),
        np.zeros((2, 3), np.int64),
    )

    async def run() -> list:
        async def one(x: Inputs):
            batcher.expect()
            await asyncio.sleep(0)
            try:
                return await batcher.submit(model, x)
            except RuntimeError as err:
                return err

        return await asyncio.gather(*(one(x) for x in [*good[:3], bad, *good[3:]]))

    results = asyncio.run(run())
    batcher.stop()
    assert isinstance(results[3], RuntimeError) and "inference failed" in str(results[3])
    for x, out in zip(good, [*results[:3], *results[4:]], strict=True):
        np.testing.assert_array_equal(out[:, 0], x.categorical[:, 0])
    assert max(model.calls) > 3  # the poisoned request did share a call before its retry
