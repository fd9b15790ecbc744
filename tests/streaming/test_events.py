from __future__ import annotations

import numpy as np
import pytest

from infnet.streaming.events import (
    IMPRESSIONS,
    LABELS,
    Impression,
    MalformedEvent,
    RedisEventLog,
    decode,
    encode,
    open_event_log,
    user_key,
)

from .conftest import impression, label


def test_impression_and_label_round_trip():
    imp = impression("r1", "42", 1_000)
    back = decode(encode(imp))
    assert isinstance(back, Impression)
    for name in ("categorical", "seq_ids", "seq_mask", "seq_gap"):
        np.testing.assert_array_equal(getattr(back, name), getattr(imp, name))
        assert getattr(back, name).dtype == getattr(imp, name).dtype
    assert (back.request_id, back.item_id, back.event_ms) == ("r1", "42", 1_000)
    lab = label("r1", "42", "is_click", 2_000)
    assert decode(encode(lab)) == lab


def test_an_impression_without_history_round_trips():
    imp = impression("r1", "42", 1_000)
    empty = Impression(**imp.__dict__ | {
        "seq_ids": np.zeros((0, 50, 3), np.int64),
        "seq_mask": np.zeros((0, 50), bool),
        "seq_gap": np.zeros((0, 50), np.int64),
    })  # fmt: skip
    assert decode(encode(empty)).seq_ids.shape == (0, 50, 3)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "not JSON"),
        (b'{"type": "click"}', "not an event"),
        (b'{"type": "label", "v": 99}', "version 99"),
        (b'{"type": "label", "v": 1, "request_id": "r", "item_id": "i"}', "'event_ms' is missing"),
        (
            b'{"type": "label", "v": 1, "request_id": "r", "item_id": "i", "event_ms": "5"}',
            "'event_ms' has type str",
        ),
        (
            b'{"type": "label", "v": 1, "request_id": "", "item_id": "i", "event_ms": 5}',
            "'request_id' is empty",
        ),
    ],
)
def test_a_malformed_payload_names_what_is_wrong(payload, reason):
    with pytest.raises(MalformedEvent, match=reason):
        decode(payload)


def test_impression_inputs_that_do_not_fit_their_shape_are_malformed():
    body = encode(impression("r1", "42", 1_000)).replace(
        b'"seq_shape":[2,3,2]', b'"seq_shape":[2,4,2]'
    )
    with pytest.raises(MalformedEvent, match="do not fit their shape"):
        decode(body)


def test_user_key_is_the_integer_id_or_a_stable_hash():
    assert user_key("12345") == 12345
    assert user_key("alice") == user_key("alice") != user_key("bob")
    assert 0 <= user_key("alice") < 2**63


def test_read_commit_and_redelivery_after_a_restart(event_log, tmp_path):
    event_log.append(IMPRESSIONS, [b"a", b"b", b"c"])
    event_log.append(LABELS, [b"x"])
    first = event_log.read(IMPRESSIONS, "m", 2)
    assert [e.payload for e in first] == [b"a", b"b"]
    assert [e.payload for e in event_log.read(IMPRESSIONS, "m", 10)] == [b"c"]
    assert event_log.read(IMPRESSIONS, "m", 10) == []
    event_log.commit(IMPRESSIONS, "m", first)
    assert event_log.lag(IMPRESSIONS, "m") == 1
    assert event_log.length(IMPRESSIONS) == 3 and event_log.length(LABELS) == 1
    # a restarted consumer gets what it read and did not commit, then the rest
    again = open_event_log(event_log.url)
    try:
        assert [e.payload for e in again.read(IMPRESSIONS, "m", 10)] == [b"c"]
        # another consumer reads the whole stream on its own
        assert [e.payload for e in again.read(IMPRESSIONS, "other", 10)] == [b"a", b"b", b"c"]
        ids = [e.id for e in again.read(LABELS, "m", 10)]
        assert len(ids) == 1
    finally:
        again.close()
    orders = [event_log.order(e.id) for e in first]
    assert orders == sorted(orders) and orders[0] < orders[1]


def test_redis_claims_the_entries_of_a_dead_consumer(redis_url):
    dead = RedisEventLog(redis_url, member="host-a")
    dead.append(IMPRESSIONS, [b"a", b"b"])
    assert len(dead.read(IMPRESSIONS, "m", 10)) == 2  # read, never acknowledged
    dead.close()
    patient = RedisEventLog(redis_url, member="host-b")
    heir = RedisEventLog(redis_url, member="host-c", claim_idle_ms=0)
    try:
        assert patient.read(IMPRESSIONS, "m", 10) == []  # not idle long enough to claim
        claimed = heir.read(IMPRESSIONS, "m", 10)
        assert [e.payload for e in claimed] == [b"a", b"b"]
        assert patient.lag(IMPRESSIONS, "m") == 2  # claimed, not acknowledged yet
        heir.commit(IMPRESSIONS, "m", claimed)
        assert patient.lag(IMPRESSIONS, "m") == 0
    finally:
        heir.close()
        patient.close()


def test_unknown_url_scheme_is_refused(tmp_path):
    with pytest.raises(ValueError, match="use a path, sqlite:///path or redis://"):
        open_event_log("kafka://broker:9092")
    log = open_event_log(f"sqlite:///{tmp_path / 'e.sqlite'}")
    assert log.url == str(tmp_path / "e.sqlite")
    log.close()


def test_redis_down_is_unavailable_not_lost(own_redis):
    from infnet.streaming.events import EventLogUnavailable

    log = RedisEventLog(own_redis.url, timeout_s=0.5)
    log.append(IMPRESSIONS, [b"a"])
    own_redis.stop()
    with pytest.raises(EventLogUnavailable, match="unreachable"):
        log.append(IMPRESSIONS, [b"b"])
    log.close()
