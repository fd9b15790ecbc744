import threading

import numpy as np
import pytest

from infnet.data.loader import PreparedDataset
from infnet.data.prefetch import prefetch


def test_prefetched_batches_are_the_loaders_in_order(small_prepared):
    data = PreparedDataset(small_prepared)
    want = list(data.batches("train", 64, shuffle=True, seed=3))
    got = list(prefetch(data.batches("train", 64, shuffle=True, seed=3)))
    assert len(got) == len(want) > 2
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a.categorical.numpy(), b.categorical.numpy())
        np.testing.assert_array_equal(a.labels.numpy(), b.labels.numpy())


def test_the_next_item_is_built_while_the_consumer_holds_this_one():
    second_started = threading.Event()

    def items():
        yield 0
        second_started.set()
        yield 1

    it = prefetch(items())
    assert next(it) == 0
    # without a thread working ahead, nothing would start item 1 before the next `next`
    assert second_started.wait(timeout=10)
    assert list(it) == [1]


def test_an_error_is_raised_where_it_occurred():
    def items():
        yield 0
        yield 1
        raise ValueError("train.parquet: column 'label' has nulls")

    got = []
    with pytest.raises(ValueError, match="column 'label' has nulls"):
        for x in prefetch(items()):
            got.append(x)
    assert got == [0, 1]


def test_a_consumer_that_stops_early_stops_the_thread():
    made = []

    def endless():
        k = 0
        while True:
            made.append(k)
            yield k
            k += 1

    it = prefetch(endless(), depth=2)
    assert [next(it), next(it), next(it)] == [0, 1, 2]
    it.close()  # returns once the thread has ended: none is left running
    threads = [t for t in threading.enumerate() if t.name == "infnet-prefetch"]
    assert not any(t.is_alive() for t in threads)
    assert len(made) <= 3 + 2 + 1  # consumed, queued, and the one in hand when told to stop


def test_depth_below_one_is_refused():
    with pytest.raises(ValueError, match="prefetch depth"):
        next(prefetch(iter([1]), depth=0))
