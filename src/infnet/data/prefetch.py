"""Batches built one step ahead on a background thread, so that assembling the next batch
(numpy gathers over the split's columns and the event log) overlaps the model's step."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")

_END = object()


def prefetch(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Yields what `items` yields, in the same order, while a daemon thread computes up to
    `depth` items ahead. An exception of `items` is raised here, at the position where it
    occurred; a consumer that stops early (early stopping, a pruned trial, `islice`) stops
    the thread and waits for it to finish the item in hand, so no thread outlives its
    consumer (nor runs into the interpreter's exit) or holds batches after it.

    numpy's gathers and torch's ops release the GIL, so on a machine with a free core the
    assembly of batch k+1 overlaps the step of batch k: a model whose step is short against
    its loader gains (LR on KuaiRand, batch 4,096, one torch thread: 28,776-30,025 samples/s
    without, 34,696-38,433 with; INFNet's step, not its loader, sets its pace;
    benchmarks/train_speed.py and --no-prefetch)."""
    if depth < 1:
        raise ValueError(f"prefetch depth must be at least 1, got {depth}")
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as err:  # handed to the consumer, raised where it would have been
            put((_END, err))
            return
        put((_END, None))

    thread = threading.Thread(target=produce, name="infnet-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, err = ready.get()
            if item is _END:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        thread.join()
