"""The nightly features: the day's events become the most recent history positions, as
the store serves them; an empty or unknown batch of events changes nothing."""

from __future__ import annotations

import numpy as np

from infnet.abtest.features import DailyFeatures
from infnet.data.sources.synthetic import prepare_synthetic
from infnet.serving.snapshot import snapshot_from_prepared
from infnet.serving.stores import open_store


def test_the_days_events_are_the_newest_history_positions(tmp_path):
    prepare_synthetic(tmp_path / "data", rows=5000, users=200, items=100, max_len=4, progress=False)
    store = open_store(tmp_path / "features.sqlite")
    first = snapshot_from_prepared(tmp_path / "data")
    daily = DailyFeatures(store, first)
    v0 = daily.publish(as_of=0)
    user, items = first.user_ids[0], first.item_ids[:6]
    meta = store.meta()
    before = store.lookup(meta, user, items[:1])
    daily.add("like", [], [], np.zeros(0, np.int64))  # an empty batch
    daily.add("like", ["no-such-user", user], [items[0], "no-such-item"], np.array([1, 2]))
    t = np.array([10, 30, 20, 40, 50], np.int64)  # out of order: applied by time
    daily.add("click", [user] * 5, items[:5], t)
    v1 = daily.publish(as_of=100)
    assert v1 != v0 and store.meta().version == v1 and store.meta().as_of == 100
    after = store.lookup(store.meta(), user, items[:1])
    f = first.meta.behaviours.index("click")
    like = first.meta.behaviours.index("like")
    order = items[0], items[2], items[1], items[3], items[4]  # by time, the last 4 kept
    side = [daily.item_side[daily.item_row[i]] for i in order[1:]]
    np.testing.assert_array_equal(after.history[f], np.stack(side))
    np.testing.assert_array_equal(after.history_time[f], [20, 30, 40, 50])
    assert after.history_mask[f].all()
    np.testing.assert_array_equal(after.history[like], before.history[like])  # unknowns skipped
    np.testing.assert_array_equal(after.user_codes, before.user_codes)
