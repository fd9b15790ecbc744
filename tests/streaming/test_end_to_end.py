"""The deployment loop end to end: a weak model served, later traffic replayed through the
server with its labels (resent, reordered, dropped), matched, trained on, published and
served; the streamed model beats the model it started from on traffic after it."""

from __future__ import annotations

import json
import sqlite3
import time

import httpx
import pytest
from typer.testing import CliRunner

from infnet.cli import app
from infnet.data.loader import PreparedDataset
from infnet.models.checkpoint import load_model
from infnet.serving.export import export_run
from infnet.serving.snapshot import snapshot_from_prepared
from infnet.serving.stores import open_store
from infnet.streaming.label_matcher import read_samples
from infnet.streaming.replay import replay
from infnet.streaming.samples import SampleParts
from infnet.training.evaluation import evaluate_split

TOKEN = "loop-token"


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    """The simulator with enough later traffic (4,500 valid rows) for a model to learn from."""
    from infnet.data.sources.synthetic import prepare_synthetic

    out = tmp_path_factory.mktemp("traffic") / "prepared"
    prepare_synthetic(out, rows=30_000, users=600, items=300, seed=2, max_len=8)
    return out


@pytest.fixture(scope="module")
def weak_start(traffic, tmp_path_factory):
    """A model trained for 3 steps (so later traffic has much to teach it), exported."""
    from infnet.training.config import RunConfig, TrainConfig
    from infnet.training.trainer import Trainer

    root = tmp_path_factory.mktemp("loop")
    config = RunConfig(
        data=str(traffic), model="infnet",
        model_options={"preset": "v2", "embedding_dim": 8, "num_blocks": 1, "time_aware": True},
        train=TrainConfig(epochs=1, batch_size=256, max_steps=3, device="cpu"),
    )  # fmt: skip
    Trainer.from_config(config, root / "run", progress=False).fit()
    export_run(root / "run", root / "models" / "base")
    return root


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_the_loop_from_served_traffic_to_a_better_served_model(
    traffic, weak_start, live_server, tmp_path, backend, request
):
    data = PreparedDataset(traffic)
    valid, test = data.schema.split("valid"), data.schema.split("test")
    store = tmp_path / "features.sqlite"
    open_store(store).write(snapshot_from_prepared(traffic, as_of=valid.time_min))
    events = (
        str(tmp_path / "events.sqlite")
        if backend == "sqlite"
        else request.getfixturevalue("redis_url")
    )
    base = weak_start / "models" / "base"
    out = tmp_path / "loop"
    server = live_server(model=str(base), store=str(store), event_log=events, admin_token=TOKEN,
                         reload_root=str(out))  # fmt: skip

    stats = replay(traffic, server.url, since_ms=valid.time_min, until_ms=test.time_min,
                   delay_mean_s=20, duplicate=0.05, reorder=0.1, drop=0.02, seed=1, progress=False)  # fmt: skip
    assert stats.errors == {} and stats.impressions == valid.rows
    assert stats.duplicated > 0 and stats.reordered > 0 and stats.dropped > 0
    deadline = time.time() + 30
    while server.state.impressions.written < stats.impressions and time.time() < deadline:
        time.sleep(0.05)

    (tmp_path / "publisher.yaml").write_text("margin: 1.0\nwindow: 1000\n")
    result = CliRunner(env={"INFNET_ADMIN_TOKEN": TOKEN}).invoke(app, [
        "stream", "run", "--events", events, "--start", str(weak_start / "run"), "--serving", str(base),
        "--out", str(out), "--server", server.url, "--publisher-config", str(tmp_path / "publisher.yaml"),
        "--batch-size", "64", "--lr", "0.003", "--part-rows", "1024", "--drain",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output

    # every impression: exactly one sample, or a counted duplicate, or a dead letter
    db = sqlite3.connect(out / "matcher.sqlite")
    counts = json.loads(db.execute("SELECT value FROM state WHERE key = 'counts'").fetchone()[0])
    db.close()
    dead_impressions = sum(
        v for k, v in counts.items() if k in ("dead:malformed", "dead:late_impression")
    )
    assert counts["impressions"] == stats.impressions
    assert (
        counts["samples"] + counts.get("duplicate_impression", 0) + dead_impressions
        == stats.impressions
    )
    parts = SampleParts(out / "samples")
    ids = parts.frame["__sample_id"].to_list()
    assert len(ids) == len(set(ids)) == counts["samples"]
    assert read_samples(out / "matcher.sqlite") == []  # all in parts now
    assert counts["labels"] == stats.callbacks and counts.get("duplicate_label", 0) > 0

    # the published version is the one served
    record = json.loads((out / "versions" / "published.json").read_text())
    last = record["decisions"][-1]
    assert last["result"] == "published", last
    assert httpx.get(f"{server.url}/readyz").json()["arms"]["default"] == last["served_version"]

    # and it is better than where it started, on the traffic after the replay
    streamed, _ = load_model(out / "trainer" / "state.pt", data.schema)
    start, _ = load_model(weak_start / "run" / "best.pt", data.schema)
    after, before = evaluate_split(streamed, data, "test"), evaluate_split(start, data, "test")
    assert after["mtl_auc"] > before["mtl_auc"] + 0.01, (after["mtl_auc"], before["mtl_auc"])
