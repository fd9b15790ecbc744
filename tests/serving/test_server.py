"""The live server on 127.0.0.1: offline parity, bad input, metrics, the request log,
micro-batching, hot swap under load, A/B arms, and a feature store that goes away."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import threading
import time

import httpx
import numpy as np
import orjson
import pytest
import redis

from infnet.serving.request_log import read_request_log
from infnet.serving.runtime import load_model_dir
from infnet.serving.snapshot import snapshot_from_prepared
from infnet.serving.stores import open_store

from .helpers import expected_request, first_test_rows, vocab_values

TOKEN = "test-token"


@pytest.fixture(scope="module")
def cases(small_prepared, served_run, test_as_of):
    """(body, expected scores by candidate) of five users' first test rows."""
    video = vocab_values(small_prepared, "video_id")
    extra = [video[i] for i in (2, 3, 5)]
    return [
        expected_request(small_prepared, served_run, r, extra)
        for r in first_test_rows(small_prepared, test_as_of, 5)
    ]


def rank(url: str, body: dict | bytes, **kwargs) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(
        f"{url}/v1/rank",
        content=content,
        headers={"content-type": "application/json"},
        timeout=30,
        **kwargs,
    )


def check_scores(answer: dict, expected: dict[str, np.ndarray], tasks: list[str]) -> None:
    got = {str(item["id"]): [item["scores"][t] for t in tasks] for item in answer["items"]}
    assert got.keys() == expected.keys()
    for key, scores in expected.items():
        np.testing.assert_allclose(got[key], scores, atol=1e-5, rtol=0)


def test_rank_matches_the_offline_model(live_server, model_dir, feature_db, cases):
    server = live_server(model=str(model_dir), store=feature_db)
    tasks = server.state.arms[0].model.schema.task_names
    version = server.state.arms[0].model.version
    for body, expected in cases:
        r = rank(server.url, body)
        assert r.status_code == 200, r.text
        answer = r.json()
        check_scores(answer, expected, tasks)
        assert answer["request_id"] == body["request_id"] and answer["model_version"] == version
        assert answer["arm"] == "default" and not answer["unknown_user"]
        assert answer["unknown_items"] == ["unknown-video"]
        assert [i["known"] for i in answer["items"] if i["id"] == "unknown-video"] == [False]
        assert answer["cold_items"] == [i["id"] for i in answer["items"] if i["cold"]]
        assert all(i["known"] for i in answer["items"] if i["cold"])
        scores = [i["score"] for i in answer["items"]]
        assert scores == sorted(scores, reverse=True)  # ranked by the click probability
        click = next(t for t in tasks if "click" in t)
        assert all(i["score"] == i["scores"][click] for i in answer["items"])
    # an unknown user is scored (OOV user fields, no history) and flagged
    stranger = rank(server.url, {**cases[0][0], "user_id": "nobody"}).json()
    assert stranger["unknown_user"] and len(stranger["items"]) == len(cases[0][0]["candidates"])


BAD = [
    (
        {
            "request_id": "x",
            "user_id": 1,
            "context": {"tab": 1, "tba": 2, "timestamp": 1},
            "candidates": [1],
        },
        422,
        "context.tba",
        "unknown",
    ),
    (b'{"request_id": "x", ', 400, "body", "malformed JSON"),
    (b"[1, 2]", 422, "body", "JSON object"),
    ({"user_id": 1, "context": {"timestamp": 1}, "candidates": [1]}, 422, "request_id", "missing"),
    (
        {"request_id": "x", "context": {"timestamp": 1}, "candidates": [1]},
        422,
        "user_id",
        "missing",
    ),
    (
        {"request_id": "x", "user_id": 1.5, "context": {"timestamp": 1}, "candidates": [1]},
        422,
        "user_id",
        "integer or a string",
    ),
    (
        {"request_id": "x", "user_id": 1, "context": {"tab": 1}, "candidates": [1]},
        422,
        "context.timestamp",
        "missing",
    ),
    (
        {
            "request_id": "x",
            "user_id": 1,
            "context": {"tab": 1, "timestamp": "now"},
            "candidates": [1],
        },
        422,
        "context.timestamp",
        "integer",
    ),
    (
        {"request_id": "x", "user_id": 1, "context": {"timestamp": 1}, "candidates": [1]},
        422,
        "context.tab",
        "missing",
    ),
    (
        {
            "request_id": "x",
            "user_id": 1,
            "context": {"tab": [1], "timestamp": 1},
            "candidates": [1],
        },
        422,
        "context.tab",
        "number or a string",
    ),
    (
        {"request_id": "x", "user_id": 1, "context": {"tab": 1, "timestamp": 1}, "candidates": []},
        422,
        "candidates",
        "empty",
    ),
    (
        {
            "request_id": "x",
            "user_id": 1,
            "context": {"tab": 1, "timestamp": 1},
            "candidates": list(range(51)),
        },
        422,
        "candidates",
        "the limit is 50",
    ),
    (
        {
            "request_id": "x",
            "user_id": 1,
            "context": {"tab": 1, "timestamp": 1},
            "candidates": [1, None],
        },
        422,
        "candidates[1]",
        "integer or a string",
    ),
    (
        {
            "request_id": "x",
            "user_id": 1,
            "context": {"tab": 1, "timestamp": 1},
            "candidates": "1,2",
        },
        422,
        "candidates",
        "list",
    ),
    (
        {
            "request_id": "x",
            "user_id": 1,
            "context": {"tab": 1, "timestamp": 1},
            "candidates": [1],
            "bid": -1,
        },
        422,
        "bid",
        "non-negative",
    ),
    (
        {
            "request_id": "x",
            "user_id": 1,
            "context": {"tab": 1, "timestamp": 1},
            "candidates": [1, 2],
            "bid": [1],
        },
        422,
        "bid",
        "1 values for 2 candidates",
    ),
    (
        {"request_id": "x", "user_id": 1, "context": {"tab": 1, "timestamp": 1}, "candidate": [1]},
        422,
        "candidate",
        "unknown field",
    ),
    (b'{"request_id": "' + b"x" * 5000 + b'"}', 413, "body", "the limit is 4096 bytes"),
]


def test_bad_input_gets_4xx_naming_the_field_and_the_server_keeps_serving(
    live_server, model_dir, feature_db, cases
):
    server = live_server(
        model=str(model_dir), store=feature_db, max_candidates=50, max_body_bytes=4096
    )
    for body, status, field, message in BAD:
        r = rank(server.url, body)
        assert r.status_code == status, (body, r.text)
        error = r.json()
        assert error["field"] == field and message in error["error"], (body, error)
        if "limit" in message:
            assert error["limit"] in (50, 4096)
    assert rank(server.url, cases[0][0]).status_code == 200
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'infnet_requests_total{arm="none",status="422"} 16.0' in metrics
    assert 'infnet_errors_total{reason="candidates",status="422"} 4.0' in metrics


def test_bid_formula_and_metrics(live_server, model_dir, feature_db, cases):
    tasks = load_model_dir(model_dir, warm_up=False).schema.task_names
    server = live_server(
        model=str(model_dir), store=feature_db, ranking={"formula": f"{tasks[0]} + {tasks[1]}"}
    )
    body, expected = cases[1]
    bids = [0.5 + i for i in range(len(body["candidates"]))]
    answer = rank(server.url, {**body, "bid": bids}).json()
    bid_of = {str(c): b for c, b in zip(body["candidates"], bids, strict=True)}
    for item in answer["items"]:
        e = expected[str(item["id"])]
        assert item["score"] == pytest.approx((e[0] + e[1]) * bid_of[str(item["id"])], abs=1e-5)
    assert [i["score"] for i in answer["items"]] == sorted(
        (i["score"] for i in answer["items"]), reverse=True
    )
    plain = rank(server.url, body).json()
    assert all(
        i["score"] == pytest.approx(i["scores"][tasks[0]] + i["scores"][tasks[1]])
        for i in plain["items"]
    )

    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz").json()
    version = server.state.arms[0].model.version
    assert ready["ready"] and ready["arms"] == {"default": version}
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'infnet_requests_total{arm="default",status="200"} 2.0' in metrics
    assert 'infnet_request_latency_seconds_count{arm="default"} 2.0' in metrics
    assert "infnet_batch_rows_count" in metrics and "infnet_batch_requests_bucket" in metrics
    assert f'infnet_model_info{{arm="default",version="{version}"}} 1.0' in metrics
    assert f'infnet_feature_version_info{{version="{ready["feature_version"]}"}} 1.0' in metrics
    assert "process_resident_memory_bytes" in metrics


def test_request_log_holds_the_exact_features(live_server, model_dir, feature_db, cases, tmp_path):
    log = tmp_path / "log.sqlite"
    server = live_server(model=str(model_dir), store=feature_db, request_log=str(log))
    answers = {body["request_id"]: rank(server.url, body).json() for body, _ in cases}
    server.stop()  # flushes the log
    model = load_model_dir(model_dir, eager=True)
    records = list(read_request_log(log))
    assert sorted(r.request_id for r in records) == sorted(answers)
    for record in records:
        answer = answers[record.request_id]
        assert record.model_version == answer["model_version"] and record.arm == "default"
        assert record.feature_version == answer["feature_version"]
        K = len(record.candidates)
        rescored = model.predict(
            record.categorical,
            np.broadcast_to(record.seq_ids, (K, *record.seq_ids.shape)).copy(),
            np.broadcast_to(record.seq_mask, (K, *record.seq_mask.shape)).copy(),
            seq_gap=np.broadcast_to(record.seq_gap, (K, *record.seq_gap.shape)).copy(),
        )
        assert (record.seq_gap[record.seq_mask] > 0).all()  # the gaps the model read
        served = {str(i["id"]): i["scores"] for i in answer["items"]}
        for k, c in enumerate(record.candidates):
            np.testing.assert_allclose(
                rescored[k], [served[str(c)][t] for t in model.schema.task_names], atol=1e-5
            )
            t = model.schema.task_names[0]
            assert record.scores[t][k] == pytest.approx(served[str(c)][t])


async def _burst(url: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await asyncio.gather(
            *(client.post("/v1/rank", content=orjson.dumps(b)) for b in bodies)
        )


def test_concurrent_requests_share_model_calls(live_server, model_dir, feature_db, cases):
    server = live_server(model=str(model_dir), store=feature_db, max_wait_ms=20)
    bodies = [{**cases[i % len(cases)][0], "request_id": f"c{i}"} for i in range(24)]
    responses = asyncio.run(_burst(server.url, bodies))
    assert all(r.status_code == 200 for r in responses)
    for r in responses:  # each gets its own rows back
        i = int(r.json()["request_id"][1:])
        check_scores(
            r.json(), cases[i % len(cases)][1], server.state.arms[0].model.schema.task_names
        )
    hist = server.state.metrics.batch_requests.collect()[0].samples
    calls = next(s.value for s in hist if s.name.endswith("_count"))
    served = next(s.value for s in hist if s.name.endswith("_sum"))
    assert served == 24 and calls < 24  # some model calls scored several requests


def test_hot_swap_under_load_loses_nothing(
    live_server, model_dir, model_b_dir, feature_db, cases, tmp_path
):
    server = live_server(model=str(model_dir), store=feature_db, admin_token=TOKEN)
    url = server.url
    a = server.state.arms[0].model.version
    reference = {b["request_id"]: {a: rank(url, b).json()} for b, _ in cases}

    refused = [
        httpx.post(f"{url}/admin/reload", json={"model": str(model_b_dir)}),
        httpx.post(
            f"{url}/admin/reload",
            json={"model": str(model_b_dir)},
            headers={"authorization": "Bearer wrong"},
        ),
    ]
    assert [r.status_code for r in refused] == [401, 401]
    auth = {"authorization": f"Bearer {TOKEN}"}
    bad = httpx.post(
        f"{url}/admin/reload", json={"model": str(tmp_path / "nope")}, headers=auth, timeout=60
    )
    assert (
        bad.status_code == 422
        and "reload refused" in bad.json()["error"]
        and a in bad.json()["error"]
    )
    not_onnx = httpx.post(
        f"{url}/admin/reload", json={"model": str(model_b_dir)}, headers=auth, timeout=60
    )
    assert not_onnx.status_code == 422 and "--eager" in not_onnx.json()["error"]
    assert rank(url, cases[0][0]).json()["model_version"] == a  # the old model keeps serving

    results: list[httpx.Response] = []
    clients: list[int] = []  # the client of each result
    stop, appending = threading.Event(), threading.Lock()

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                body = cases[i % len(cases)][0]
                r = c.post("/v1/rank", content=orjson.dumps(body))
                with appending:
                    clients.append(i)
                    results.append(r)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    while len(results) < 10:
        threading.Event().wait(0.01)
    swap = httpx.post(
        f"{url}/admin/reload",
        json={"model": str(model_b_dir), "eager": True},
        headers=auth,
        timeout=60,
    )
    with appending:
        after_swap = len(results)
    while len(results) < after_swap + 10:
        threading.Event().wait(0.01)
    stop.set()
    for t in threads:
        t.join()
    assert swap.status_code == 200, swap.text
    b = swap.json()["version"]
    assert swap.json()["previous"] == a and b != a
    for body, _ in cases:
        reference[body["request_id"]][b] = rank(url, body).json()
    assert all(r.status_code == 200 for r in results)
    versions = [r.json()["model_version"] for r in results]
    assert set(versions) == {a, b}
    for i in range(4):  # once swapped, only the new model answers: each client's one request
        # in flight during the swap may finish on the old model, none after it
        mine = [v for v, c in zip(versions, clients, strict=True) if c == i]
        late = [
            v for v, c in zip(versions[after_swap:], clients[after_swap:], strict=True) if c == i
        ]
        assert mine == sorted(mine, key=lambda v: v == b) and late[1:].count(a) == 0
    tasks = server.state.arms[0].model.schema.task_names
    for body, _ in cases:  # the two versions score apart, far beyond the tolerance
        ref = reference[body["request_id"]]
        far = [
            abs(i["score"] - j["score"])
            for i in ref[a]["items"]
            for j in ref[b]["items"]
            if i["id"] == j["id"]
        ]
        assert min(far) > 1e-4
    for (
        r
    ) in results:  # every answer is entirely the named version's (batching moves floats by ~1e-7)
        answer = r.json()
        expected = reference[answer["request_id"]][answer["model_version"]]
        check_scores(
            answer,
            {str(i["id"]): [i["scores"][t] for t in tasks] for i in expected["items"]},
            tasks,
        )
    metrics = httpx.get(f"{url}/metrics").text
    assert f'version="{b}"' in metrics and f'version="{a}"' not in metrics
    assert 'infnet_reloads_total{result="swapped"} 1.0' in metrics


def test_reload_is_disabled_without_a_token(live_server, model_dir, feature_db, monkeypatch):
    monkeypatch.delenv("INFNET_ADMIN_TOKEN", raising=False)
    server = live_server(model=str(model_dir), store=feature_db)
    r = httpx.post(
        f"{server.url}/admin/reload",
        json={"model": str(model_dir)},
        headers={"authorization": "Bearer x"},
    )
    assert r.status_code == 403 and "no admin token" in r.json()["error"]


def test_ab_arms_route_users_by_hash_bucket(
    live_server, model_dir, model_b_dir, feature_db, cases, tmp_path
):
    log = tmp_path / "ab.sqlite"
    arms = [
        {"name": "control", "model": str(model_dir), "buckets": [0, 50]},
        {"name": "treatment", "model": str(model_b_dir), "buckets": [50, 100], "eager": True},
    ]
    server = live_server(arms=arms, store=feature_db, request_log=str(log))
    config = server.state.config
    version = {a.name: a.model.version for a in server.state.arms}
    body = cases[0][0]
    seen = set()
    for user in range(40):
        answer = rank(server.url, {**body, "user_id": user, "request_id": f"u{user}"}).json()
        arm = "control" if config.bucket(str(user)) < 50 else "treatment"
        assert answer["arm"] == arm and answer["model_version"] == version[arm]
        seen.add(arm)
    assert seen == {"control", "treatment"}
    metrics = httpx.get(f"{server.url}/metrics").text
    for arm in ("control", "treatment"):
        assert f'infnet_model_info{{arm="{arm}",version="{version[arm]}"}} 1.0' in metrics
        assert f'infnet_requests_total{{arm="{arm}",status="200"}}' in metrics
    server.stop()
    logged = {r.request_id: r.arm for r in read_request_log(log)}
    assert logged == {
        f"u{u}": "control" if config.bucket(str(u)) < 50 else "treatment" for u in range(40)
    }


def test_redis_store_down_gives_503_and_recovers(
    live_server, model_dir, own_redis, small_prepared, test_as_of, cases
):
    open_store(own_redis.url).write(snapshot_from_prepared(small_prepared, as_of=test_as_of))
    server = live_server(model=str(model_dir), store=own_redis.url)
    tasks = server.state.arms[0].model.schema.task_names
    body, expected = cases[2]
    ok = rank(server.url, body)
    assert ok.status_code == 200
    check_scores(ok.json(), expected, tasks)  # the Redis store serves the same features

    redis.Redis.from_url(own_redis.url).save()  # so the restarted server has the data back
    own_redis.stop()
    down = rank(server.url, body)
    assert down.status_code == 503 and "feature store unavailable" in down.json()["error"]
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 503 and "unreachable" in ready.json()["error"]
    assert httpx.get(f"{server.url}/healthz").status_code == 200

    own_redis.start()
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    back = rank(server.url, body)
    assert back.status_code == 200
    check_scores(back.json(), expected, tasks)
    assert (
        'infnet_errors_total{reason="store",status="503"} 1.0'
        in httpx.get(f"{server.url}/metrics").text
    )


def test_an_overloaded_server_sheds_load_with_503(live_server, model_dir, feature_db, cases):
    body = cases[0][0]  # 5 candidates
    server = live_server(model=str(model_dir), store=feature_db, max_queued_rows=4)
    r = rank(server.url, body)
    assert (
        r.status_code == 503
        and "overloaded" in r.json()["error"]
        and r.headers["retry-after"] == "1"
    )
    roomy = live_server(model=str(model_dir), store=feature_db, max_queued_rows=5)
    assert rank(roomy.url, body).status_code == 200


def test_client_keys_never_become_metric_labels(live_server, model_dir, feature_db, cases):
    server = live_server(model=str(model_dir), store=feature_db)
    body = cases[0][0]
    for i in range(200):
        r = rank(server.url, {**body, f"unknown_{i}": 1})
        assert r.status_code == 422 and r.json()["field"] == f"unknown_{i}"
    metrics = httpx.get(f"{server.url}/metrics").text
    reasons = set(re.findall(r'infnet_errors_total\{reason="([^"]*)"', metrics))
    assert reasons == {"other"} and "unknown_1" not in metrics
    assert 'infnet_errors_total{reason="other",status="422"} 200.0' in metrics


def test_a_timestamp_past_the_int64_range_is_refused_at_the_edge(
    live_server, model_dir, feature_db, cases, tmp_path
):
    server = live_server(
        model=str(model_dir), store=feature_db, request_log=str(tmp_path / "log.sqlite")
    )
    body = cases[0][0]
    for ts in (2**63 + 5, 2**64 - 1, 10**20):
        bad = {**body, "context": {**body["context"], "timestamp": ts}}
        r = rank(server.url, json.dumps(bad).encode())  # orjson cannot write past int64
        assert r.status_code == 422 and r.json()["field"] == "context.timestamp", r.text
    assert rank(server.url, body).status_code == 200
    assert httpx.get(f"{server.url}/readyz").status_code == 200


@pytest.mark.parametrize("code", [10**6, -3])
def test_a_corrupt_store_record_fails_only_its_own_request(
    live_server, model_dir, small_prepared, test_as_of, cases, tmp_path, code
):
    snapshot = snapshot_from_prepared(small_prepared, as_of=test_as_of)
    good_body, expected = cases[0]
    bad_item = str(cases[1][0]["candidates"][0])
    assert bad_item not in [str(c) for c in good_body["candidates"]]
    snapshot.item_records[snapshot.item_ids.index(bad_item), -1] = code
    store = str(tmp_path / "corrupt.sqlite")
    open_store(store).write(snapshot)
    server = live_server(model=str(model_dir), store=store)
    bad_body = {**cases[1][0], "request_id": "bad"}

    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await asyncio.gather(
                *(client.post("/v1/rank", json=b) for b in [good_body, bad_body, good_body])
            )

    good, bad, again = asyncio.run(both())
    assert good.status_code == 200 and again.status_code == 200
    check_scores(good.json(), expected, server.state.arms[0].model.schema.task_names)
    assert bad.status_code == 500
    field = snapshot.meta.item_fields[-1]
    assert (
        f"field {field!r}" in bad.json()["error"]
        and "outside its vocabulary" in bad.json()["error"]
    )
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'infnet_errors_total{reason="store_record",status="500"} 1.0' in metrics


def slow_store(server, seconds: float) -> None:
    """Every lookup of the live server's store waits `seconds` first (a held lock)."""
    store = server.state.store
    fetch = store.fetch

    def slow_fetch(user, items):
        time.sleep(seconds)
        return fetch(user, items)

    store.fetch = slow_fetch


def test_admission_counts_requests_still_fetching_features(
    live_server, model_dir, feature_db, cases
):
    server = live_server(model=str(model_dir), store=feature_db, max_queued_rows=12)
    slow_store(server, 0.3)
    bodies = [{**cases[0][0], "request_id": f"slow{i}"} for i in range(10)]  # 5 rows each
    statuses = sorted(r.status_code for r in asyncio.run(_burst(server.url, bodies)))
    assert statuses.count(200) <= 2 and statuses.count(503) >= 8, statuses
    assert server.state.admitted_rows == 0  # every admitted row was released


def test_a_store_file_moved_over_the_served_one_is_read(
    live_server, model_dir, small_prepared, test_as_of, cases, tmp_path
):
    served = tmp_path / "features.sqlite"
    open_store(served).write(snapshot_from_prepared(small_prepared, as_of=test_as_of))
    server = live_server(model=str(model_dir), store=str(served))
    first = rank(server.url, cases[0][0]).json()["feature_version"]
    newer = snapshot_from_prepared(small_prepared, as_of=test_as_of + 1)
    open_store(tmp_path / "next.sqlite").write(newer)
    os.replace(tmp_path / "next.sqlite", served)
    assert newer.meta.version != first
    assert rank(server.url, cases[0][0]).json()["feature_version"] == newer.meta.version
    assert httpx.get(f"{server.url}/readyz").json()["feature_version"] == newer.meta.version


def test_a_slow_store_does_not_stall_the_event_loop(live_server, model_dir, feature_db, cases):
    # a lookup waiting on a lock (SQLite's busy timeout, a slow Redis) runs on a worker
    # thread: /healthz answers meanwhile
    server = live_server(model=str(model_dir), store=feature_db)
    slow_store(server, 1.5)
    result = {}
    sender = threading.Thread(target=lambda: result.update(r=rank(server.url, cases[0][0])))
    sender.start()
    time.sleep(0.2)
    started = time.perf_counter()
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
    assert time.perf_counter() - started < 0.5
    sender.join(timeout=30)
    assert result["r"].status_code == 200


def _raw(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def test_slow_clients_are_cut_off_and_a_vanished_one_is_not_a_500(
    live_server, model_dir, feature_db, cases
):
    server = live_server(
        model=str(model_dir), store=feature_db, header_timeout_s=0.5, body_timeout_s=0.5
    )
    stalled = [_raw(server.url) for _ in range(50)]
    for s in stalled:  # half a request, then nothing
        s.sendall(b"POST /v1/rank HTTP/1.1\r\nHost: x\r\nContent-")
    time.sleep(1.5)
    assert all(s.recv(100) == b"" for s in stalled)  # every one was closed by the server
    body = orjson.dumps(cases[0][0])
    trickle = _raw(server.url)
    trickle.sendall(b"POST /v1/rank HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
    trickle.sendall(body[:10])
    assert trickle.recv(100).startswith(b"HTTP/1.1 408")
    gone = _raw(server.url)
    gone.sendall(b"POST /v1/rank HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
    gone.sendall(body[:10])
    gone.close()
    time.sleep(0.3)
    assert rank(server.url, cases[0][0]).status_code == 200
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'status="500"' not in metrics
    assert 'infnet_errors_total{reason="disconnect",status="499"} 1.0' in metrics


def test_reload_takes_only_model_directories_under_the_root(
    live_server, model_dir, model_b_dir, feature_db, tmp_path
):
    outside = tmp_path / "elsewhere" / "model_b"
    shutil.copytree(model_b_dir, outside)
    auth = {"authorization": f"Bearer {TOKEN}"}
    server = live_server(model=str(model_dir), store=feature_db, admin_token=TOKEN)
    r = httpx.post(f"{server.url}/admin/reload", json={"model": str(outside), "eager": True},
                   headers=auth, timeout=60)  # fmt: skip
    assert r.status_code == 422 and "not under the reload root" in r.json()["error"]
    rooted = live_server(
        model=str(model_dir), store=feature_db, admin_token=TOKEN, reload_root=str(tmp_path)
    )
    r = httpx.post(f"{rooted.url}/admin/reload", json={"model": str(outside), "eager": True},
                   headers=auth, timeout=60)  # fmt: skip
    assert r.status_code == 200, r.text


def test_a_reference_model_exports_and_serves_like_any_model(
    live_server, small_prepared, feature_db, test_as_of, tmp_path
):
    # the `mean` reference: its train-split counts are buffers, constants of the ONNX graph
    from infnet.serving.export import export_run
    from infnet.training.config import RunConfig, TrainConfig
    from infnet.training.trainer import Trainer

    run = RunConfig(
        data=str(small_prepared), model="mean", train=TrainConfig(epochs=1, batch_size=1024)
    )
    Trainer.from_config(run, tmp_path / "run", progress=False).fit()
    export_run(tmp_path / "run", tmp_path / "model")  # ONNX, checked against eager on real rows
    server = live_server(model=str(tmp_path / "model"), store=feature_db)
    tasks = server.state.arms[0].model.schema.task_names
    video = vocab_values(small_prepared, "video_id")
    for row in first_test_rows(small_prepared, test_as_of, 3):
        body, expected = expected_request(
            small_prepared, tmp_path / "run", row, [video[2], video[3]]
        )
        r = rank(server.url, body)
        assert r.status_code == 200, r.text
        check_scores(r.json(), expected, tasks)
