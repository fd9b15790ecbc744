"""The server's side of streaming training: impressions and label callbacks in the event
log, joined by the label matcher into samples that hold the features as served."""

from __future__ import annotations

import time
from dataclasses import replace

import httpx
import numpy as np
import orjson
import pytest

from infnet.data.schema import Schema
from infnet.serving.request_log import read_request_log
from infnet.streaming.events import IMPRESSIONS, LABELS, decode, open_event_log
from infnet.streaming.label_matcher import LabelMatcher, read_samples

from .helpers import expected_request, first_test_rows, vocab_values


@pytest.fixture(scope="module")
def bodies(small_prepared, served_run, test_as_of):
    video = vocab_values(small_prepared, "video_id")
    extra = [video[i] for i in (2, 3, 5)]
    return [
        expected_request(small_prepared, served_run, r, extra)[0]
        for r in first_test_rows(small_prepared, test_as_of, 4)
    ]


def post(url: str, path: str, body) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(f"{url}{path}", content=content, timeout=30)


def wait_for(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.time() + timeout_s
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture(params=["sqlite", "redis"])
def event_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "events.sqlite")
    return request.getfixturevalue("redis_url")


def test_impressions_and_labels_become_samples_with_the_features_as_served(
    live_server, model_dir, feature_db, bodies, event_url, tmp_path
):
    server = live_server(model=str(model_dir), store=feature_db, event_log=event_url)
    answers = [post(server.url, "/v1/rank", b).json() for b in bodies]
    candidates = sum(len(b["candidates"]) for b in bodies)
    wait_for(lambda: server.state.impressions.written == candidates)
    log = open_event_log(event_url)
    entries = log.read(IMPRESSIONS, "check", 1000)
    imps = [decode(e.payload) for e in entries]
    assert len(imps) == candidates
    # position = the rank in the response; the inputs are the request log's, row by row
    wait_for(lambda: len(list(read_request_log(tmp_path / "requests-0.sqlite"))) == len(bodies))
    logged = {r.request_id: r for r in read_request_log(tmp_path / "requests-0.sqlite")}
    for answer in answers:
        mine = [i for i in imps if i.request_id == answer["request_id"]]
        ranked = [str(i["id"]) for i in answer["items"]]
        assert [i.item_id for i in sorted(mine, key=lambda i: i.position)] == ranked
        record = logged[answer["request_id"]]
        for imp in mine:
            row = [str(c) for c in record.candidates].index(imp.item_id)
            np.testing.assert_array_equal(imp.categorical, record.categorical[row])
            np.testing.assert_array_equal(imp.seq_ids, record.seq_ids)
            np.testing.assert_array_equal(imp.seq_gap, record.seq_gap)
            assert imp.model_version == answer["model_version"] and imp.arm == "default"

    first = answers[0]
    clicked = str(first["items"][0]["id"])
    callback = {
        "request_id": first["request_id"],
        "item_id": clicked,
        "task": "is_click",
        "value": 1,
        "event_ms": imps[0].event_ms + 2_000,
    }
    r = post(server.url, "/v1/events", {"events": [callback, callback | {"task": "is_like"}]})
    assert r.status_code == 200 and r.json() == {"accepted": 2}
    assert log.length(LABELS) == 2

    schema = Schema.load(model_dir / "schema.json")
    matcher = LabelMatcher(log, tmp_path / "matcher.sqlite", schema)
    matcher.run_until_idle(drain=True)
    samples = {(s["request_id"], s["item_id"]): s for _, s in read_samples(matcher.path)}
    keys = {i.key for i in imps}  # a request may list an item twice: one impression
    assert set(samples) == keys
    assert matcher.counts["duplicate_impression"] == candidates - len(keys)
    assert samples[first["request_id"], clicked]["labels"] == [1.0, 1.0, 0.0]
    others = [s["labels"] for k, s in samples.items() if k != (first["request_id"], clicked)]
    assert all(labels == [0.0, 0.0, 0.0] for labels in others)
    imp = next(i for i in imps if i.key == (first["request_id"], clicked))
    assert samples[imp.key]["categorical"] == imp.categorical.tolist()
    matcher.close()
    log.close()
    metrics = httpx.get(f"{server.url}/metrics").text
    assert f'infnet_impressions{{result="written"}} {float(candidates)}' in metrics
    assert "infnet_label_events_total 2.0" in metrics


GOOD = {"request_id": "r1", "item_id": "v1", "task": "is_click", "value": 1, "event_ms": 5}


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{nope", 400, "body"),
        ({"labels": []}, 422, "body"),
        ({"events": []}, 422, "events"),
        ({"events": [GOOD, 3]}, 422, "events[1]"),
        ({"events": [GOOD | {"task": "is_share"}]}, 422, "events[0].task"),
        ({"events": [GOOD | {"value": 0.5}]}, 422, "events[0].value"),
        ({"events": [GOOD | {"value": "1"}]}, 422, "events[0].value"),
        ({"events": [GOOD | {"event_ms": -1}]}, 422, "events[0].event_ms"),
        ({"events": [GOOD | {"event_ms": 2**63}]}, 422, "events[0].event_ms"),
        ({"events": [GOOD | {"request_id": ""}]}, 422, "events[0].request_id"),
        ({"events": [GOOD | {"colour": "red"}]}, 422, "events[0].colour"),
        ({"events": [{k: v for k, v in GOOD.items() if k != "item_id"}]}, 422, "events[0].item_id"),
        ({"events": [GOOD] * 11}, 422, "events"),
    ],
)
def test_a_bad_label_event_gets_4xx_naming_the_field_and_nothing_is_appended(
    live_server, model_dir, feature_db, tmp_path, body, status, field
):
    events = str(tmp_path / "events.sqlite")
    server = live_server(
        model=str(model_dir), store=feature_db, event_log=events, max_label_events=10
    )
    r = post(server.url, "/v1/events", {"events": [GOOD, GOOD | {"item_id": 7}]})
    assert r.status_code == 200, r.text
    r = post(server.url, "/v1/events", body)
    assert r.status_code == status and r.json()["field"] == field, r.text
    assert open_event_log(events).length(LABELS) == 2
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'reason="events"' in metrics or field == "body"


def test_without_an_event_log_labels_are_refused(live_server, model_dir, feature_db):
    server = live_server(model=str(model_dir), store=feature_db)
    r = post(server.url, "/v1/events", {"events": [GOOD]})
    assert r.status_code == 404 and "event_log" in r.json()["error"]


def test_a_redis_outage_refuses_labels_and_keeps_impressions_until_it_returns(
    live_server, model_dir, feature_db, bodies, own_redis
):
    server = live_server(model=str(model_dir), store=feature_db, event_log=own_redis.url)
    assert post(server.url, "/v1/rank", bodies[0]).status_code == 200
    wait_for(lambda: server.state.impressions.written == len(bodies[0]["candidates"]))
    own_redis.stop()
    assert post(server.url, "/v1/rank", bodies[1]).status_code == 200  # served all the same
    r = post(server.url, "/v1/events", {"events": [GOOD]})
    assert r.status_code == 503 and "retry" in r.json()["error"]
    wait_for(lambda: server.state.impressions.retries > 0)
    own_redis.start()  # empty: this redis keeps nothing on disk
    total = len(bodies[0]["candidates"]) + len(bodies[1]["candidates"])
    wait_for(lambda: server.state.impressions.written == total, timeout_s=20)
    log = open_event_log(own_redis.url)
    got = [decode(e.payload).request_id for e in log.read(IMPRESSIONS, "check", 100)]
    assert got == [bodies[1]["request_id"]] * len(bodies[1]["candidates"])
    assert post(server.url, "/v1/events", {"events": [GOOD]}).status_code == 200
    log.close()


def test_only_the_shown_top_becomes_impressions():
    from infnet.serving.impressions import impressions
    from infnet.serving.requests import RequestError, parse_rank_request

    from .test_request_log import record

    base = record("r1")
    ranked = replace(base, candidates=[7, 8, 9], ranking=np.array([0.1, 0.9, 0.5]),
                     item_known=np.ones(3, bool),
                     categorical=np.zeros((3, 3), np.int64), shown=2)  # fmt: skip
    assert [(i.item_id, i.position) for i in impressions(ranked)] == [("8", 0), ("9", 1)]
    assert len(impressions(replace(ranked, shown=None))) == 3
    body = {"request_id": "r", "user_id": 1, "context": {"timestamp": 5}, "candidates": [1, 2]}
    assert parse_rank_request(orjson.dumps(body | {"shown": 1}), 10).shown == 1
    for bad in (0, 3, "2", True, 1.5):
        with pytest.raises(RequestError, match="shown: must be an integer from 1 to the 2"):
            parse_rank_request(orjson.dumps(body | {"shown": bad}), 10)
