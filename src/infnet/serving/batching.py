"""Micro-batching across concurrent requests on one inference worker thread.

A request's K candidate rows are queued; the worker takes the first queued request and
adds the ones behind it until the batch holds `max_rows` rows (bounded batch) or
`max_wait_ms` has passed since the first arrived (bounded wait). It does not wait at all
when no other request is on its way (none queued, none admitted but still fetching its
features), so a lone request pays no batching delay; under load the requests that queue
while the worker computes share the next call. A batch may mix model versions (an A/B
split, a hot swap): each model scores its own requests, and a request is scored by the
model it was submitted with.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from infnet.serving.features import Inputs
from infnet.serving.runtime import ServingModel


@dataclass
class _Item:
    model: ServingModel
    inputs: Inputs
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    arrived: float


def _resolve(future: asyncio.Future, result: np.ndarray | BaseException) -> None:
    if future.done():  # the client went away
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class MicroBatcher:
    def __init__(
        self,
        max_rows: int = 4096,
        max_wait_ms: float = 2.0,
        observe: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.max_rows = max_rows
        self.max_wait = max_wait_ms / 1000.0
        self.observe = observe  # (rows, requests, seconds) of each model call
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._carry: _Item | None = None
        self._expected = 0  # admitted requests not yet submitted
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # --- request side (event loop) ----------------------------------------------------------
    def expect(self) -> None:
        """A request was admitted and will submit soon (the worker may wait for it)."""
        with self._lock:
            self._expected += 1

    def forget(self) -> None:
        """An admitted request will not submit (it failed before scoring)."""
        with self._lock:
            self._expected -= 1

    async def submit(self, model: ServingModel, inputs: Inputs) -> np.ndarray:
        """Scores [K, N_task] of `inputs` by `model`. Call after expect(); counts as forget()."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._expected -= 1
        self._queue.put(_Item(model, inputs, future, loop, time.perf_counter()))
        return await future

    # --- worker -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="infnet-inference", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def _collect(self) -> list[_Item] | None:
        first = self._carry or self._queue.get()
        self._carry = None
        if first is None:
            return None
        batch, rows = [first], len(first.inputs)
        deadline = first.arrived + self.max_wait
        while rows < self.max_rows:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.perf_counter()
                if self._expected <= 0 or remaining <= 0:
                    break
                try:
                    nxt = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if nxt is None:
                self._queue.put(None)  # stop after this batch
                break
            if rows + len(nxt.inputs) > self.max_rows:
                self._carry = nxt
                break
            batch.append(nxt)
            rows += len(nxt.inputs)
        return batch

    def _work(self) -> None:
        while (batch := self._collect()) is not None:
            groups: dict[int, list[_Item]] = {}
            for item in batch:
                groups.setdefault(id(item.model), []).append(item)
            for items in groups.values():
                self._run(items)
        while self._carry is not None or not self._queue.empty():  # fail what is left
            item = self._carry or self._queue.get_nowait()
            self._carry = None
            if item is not None:
                item.loop.call_soon_threadsafe(
                    _resolve, item.future, RuntimeError("server is shutting down")
                )

    def _run(self, items: list[_Item]) -> None:
        started = time.perf_counter()
        sizes = [len(i.inputs) for i in items]
        try:
            results: list[np.ndarray | BaseException] = _score(items)
        except Exception as err:
            if len(items) == 1:
                results = [RuntimeError(f"inference failed: {type(err).__name__}: {err}")]
            else:  # one request's bad inputs must not fail the others of its micro-batch
                results = [_score_alone(item) for item in items]
        if self.observe is not None:
            self.observe(sum(sizes), len(items), time.perf_counter() - started)
        for item, result in zip(items, results, strict=True):
            item.loop.call_soon_threadsafe(_resolve, item.future, result)


def _score(items: list[_Item]) -> list[np.ndarray]:
    """One model call for the items; each request's history once, read by its K rows."""
    sizes = [len(i.inputs) for i in items]
    categorical = np.concatenate([i.inputs.categorical for i in items])
    seq_ids = np.stack([i.inputs.seq_ids for i in items])  # [U, F, n, K_side]
    seq_mask = np.stack([i.inputs.seq_mask for i in items])  # [U, F, n]
    seq_gap = np.stack([i.inputs.seq_gap for i in items])  # [U, F, n]
    seq_index = np.repeat(np.arange(len(items)), sizes)  # [B]
    scores = items[0].model.predict(categorical, seq_ids, seq_mask, seq_index, seq_gap)
    return np.split(scores, np.cumsum(sizes)[:-1])


def _score_alone(item: _Item) -> np.ndarray | BaseException:
    try:
        return _score([item])[0]
    except Exception as err:
        return RuntimeError(f"inference failed: {type(err).__name__}: {err}")
