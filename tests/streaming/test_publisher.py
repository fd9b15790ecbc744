"""The publisher against a live server: judged, exported, swapped in, pruned, rolled back,
and a worse model refused while the serving one goes on."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import torch
from prometheus_client import CollectorRegistry, generate_latest

from infnet.data.loader import PreparedDataset
from infnet.models.checkpoint import load_checkpoint, save_checkpoint
from infnet.serving.export import export_run
from infnet.serving.snapshot import snapshot_from_prepared
from infnet.serving.stores import open_store
from infnet.streaming.metrics import PublisherMetrics
from infnet.streaming.online_trainer import STATE, OnlineTrainer
from infnet.streaming.publisher import RECORD, Publisher, PublisherConfig
from infnet.streaming.samples import SampleParts

TOKEN = "publish-token"


@pytest.fixture(scope="module")
def models(start_run, small_prepared, tmp_path_factory) -> tuple[Path, str]:
    """(the served base model, its feature store)."""
    root = tmp_path_factory.mktemp("models")
    export_run(start_run, root / "base")
    store = root / "features.sqlite"
    as_of = PreparedDataset(small_prepared).schema.split("test").time_min
    open_store(store).write(snapshot_from_prepared(small_prepared, as_of=as_of))
    return root / "base", str(store)


def served_version(url: str) -> str:
    return httpx.get(f"{url}/readyz").json()["arms"]["default"]


def test_publish_swap_prune_rollback_and_refuse(live_server, models, start_run, streamed, tmp_path):
    base, store = models
    samples, _ = streamed
    server = live_server(model=str(base), store=store, admin_token=TOKEN)
    base_version = served_version(server.url)
    trainer = OnlineTrainer(start_run, samples, tmp_path / "trainer", batch_size=32)
    trainer.run()
    versions = base.parent / "versions"
    config = PublisherConfig(every_samples=500, margin=1.0, keep=2, window=100)
    pub = Publisher(tmp_path / "trainer", samples, versions, serving=base, server=server.url,
                    token=TOKEN, config=config)  # fmt: skip
    assert pub.due()
    first = pub.publish()
    assert first["result"] == "published" and first["version"] == "v000001", first
    assert served_version(server.url) == first["served_version"] != base_version
    assert first["window"] == SampleParts(samples).num_rows("valid") == 48  # 5% of 900, by id
    assert 0 <= first["mtl_auc"] <= 1
    assert not pub.due()  # nothing trained since
    for _ in range(2):
        pub.publish()
    kept = sorted(p.name for p in versions.glob("v*"))
    assert kept == ["v000002", "v000003"]  # keep = 2
    record = json.loads((versions / RECORD).read_text())
    assert record["serving"].endswith("v000003") and len(record["decisions"]) == 3

    back = pub.rollback("v000002")
    v2 = json.loads((versions / "v000002" / "version.json").read_text())["version"]
    assert back["result"] == "published" and served_version(server.url) == v2
    with pytest.raises(ValueError, match="'v000001' is not in"):
        pub.rollback("v000001")

    # a candidate far worse than the serving version is refused, nothing written or swapped
    state = load_checkpoint(tmp_path / "trainer" / STATE)
    g = torch.Generator().manual_seed(0)
    state["model"] = {
        k: torch.randn(v.shape, generator=g) * 3 if v.is_floating_point() else v
        for k, v in state["model"].items()
    }
    save_checkpoint(tmp_path / "trainer" / STATE,
                    {k: v for k, v in state.items() if k not in ("format", "config", "schema")},
                    config=state["config"], schema=state["schema"])  # fmt: skip
    strict = Publisher(tmp_path / "trainer", samples, versions,
                       config=config.model_copy(update={"margin": 0.0}), server=server.url, token=TOKEN)  # fmt: skip
    refused = strict.publish()
    assert refused["result"] == "refused" and "below the serving version's" in refused["why"]
    assert refused["mtl_auc"] < refused["serving_mtl_auc"]
    assert sorted(p.name for p in versions.glob("v*")) == ["v000002", "v000003"]
    assert served_version(server.url) == v2

    registry = CollectorRegistry()
    gauges = PublisherMetrics(strict, registry)
    gauges.update()
    text = generate_latest(registry).decode()
    assert 'infnet_published_version_info{version="v000002"} 1.0' in text
    assert 'infnet_publish_decisions{result="published"} 4.0' in text  # 3 and the rollback
    assert 'infnet_publish_decisions{result="refused"} 1.0' in text
    assert "infnet_model_staleness_seconds" in text


def test_a_publisher_needs_the_serving_version_to_start(streamed, tmp_path):
    samples, _ = streamed
    with pytest.raises(ValueError, match="give --serving MODEL_DIR"):
        Publisher(tmp_path / "trainer", samples, tmp_path / "versions")
