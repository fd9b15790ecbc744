"""The reference models `popularity` and `mean`: their untrained outputs are the shrunk
train-split means (checked against numpy), training calibrates them, and nothing after the
train split is read."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.helpers import make_schema

from infnet.data.loader import PreparedDataset
from infnet.models import build_model
from infnet.training.config import RunConfig, TrainConfig
from infnet.training.evaluation import predict
from infnet.training.trainer import Trainer


def _train_arrays(data: PreparedDataset, field: str):
    codes, labels, mask = [], [], []
    for b in data.batches("train", 4096):
        codes.append(b.categorical[:, data.schema.field_index(field)].numpy())
        labels.append(b.labels.numpy())
        mask.append(b.label_mask.numpy())
    return np.concatenate(codes), np.concatenate(labels), np.concatenate(mask)


def _shrunk(codes, labels, mask, vocab, m):
    y = np.where(mask, labels, 0.0)
    s, n = np.zeros((vocab, y.shape[1])), np.zeros((vocab, y.shape[1]))
    np.add.at(s, codes, y)
    np.add.at(n, codes, mask)
    prior = s.sum(0) / n.sum(0)
    return (s + m * prior) / (n + m), prior


def _fitted(name, data, **options):
    model = build_model(name, data.schema, options)
    model.fit_statistics(data.batches("train", 1024))
    return model.eval()


def test_untrained_popularity_is_the_items_shrunk_positive_rate(small_prepared):
    data = PreparedDataset(small_prepared)
    model = _fitted("popularity", data, prior_strength=7.0)
    rates, _ = _shrunk(
        *_train_arrays(data, "video_id"), data.schema.field("video_id").vocab_size, 7.0
    )
    p = predict(model, data, "test")
    item = np.concatenate(
        [
            b.categorical[:, data.schema.field_index("video_id")].numpy()
            for b in data.batches("test", 4096)
        ]
    )
    np.testing.assert_allclose(p.outputs, rates[item], rtol=1e-4, atol=1e-6)


def test_untrained_mean_adds_the_users_log_odds_to_the_items(small_prepared):
    data = PreparedDataset(small_prepared)
    model = _fitted("mean", data, item_strength=5.0, user_strength=9.0)
    s = data.schema
    items, prior = _shrunk(*_train_arrays(data, "video_id"), s.field("video_id").vocab_size, 5.0)
    users, _ = _shrunk(*_train_arrays(data, "user_id"), s.field("user_id").vocab_size, 9.0)
    logit = lambda p: np.log(p) - np.log1p(-p)  # noqa: E731
    batch = next(data.batches("test", 512))
    i = batch.categorical[:, s.field_index("video_id")].numpy()
    u = batch.categorical[:, s.field_index("user_id")].numpy()
    expected = 1 / (1 + np.exp(-(logit(items[i]) + logit(users[u]) - logit(prior))))
    with torch.no_grad():
        got = torch.sigmoid(model(batch).logits).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_mean_on_a_regression_task_predicts_standardised_means():
    schema = make_schema()
    schema = schema.model_copy(
        update={
            "tasks": [
                t if t.kind == "binary" else t.model_copy(update={"mean": 10.0, "std": 2.0})
                for t in schema.tasks
            ]
        }
    )
    from tests.helpers import make_batch

    batch = make_batch(schema, batch_size=64)
    batch.labels[:, 2] = 10 + 2 * torch.randn(64)
    model = build_model("popularity", schema, {"prior_strength": 1.0})
    model.fit_statistics([batch])
    model.eval()
    item = batch.categorical[:, schema.field_index("video_id")]
    y = batch.labels[:, 2].double()
    v = int(item[0])
    rows = item == v
    shrunk = (y[rows].sum() + y.mean()) / (rows.sum() + 1.0)
    with torch.no_grad():
        z = model(batch).logits[0, 2].double()
    assert float(z) == pytest.approx(float((shrunk - 10.0) / 2.0), rel=1e-4)


def test_reference_models_train_and_beat_chance_on_the_simulator(small_prepared, tmp_path):
    for name in ("popularity", "mean"):
        run = RunConfig(
            data=str(small_prepared), model=name, train=TrainConfig(epochs=1, batch_size=512)
        )
        trainer = Trainer.from_config(run, tmp_path / name, progress=False)
        result = trainer.fit()
        assert 0.55 < result["test"]["mtl_auc"] < 0.8, name
        moved = [
            p
            for n, p in trainer.model.named_parameters()
            if not torch.equal(p, torch.ones_like(p)) and not torch.equal(p, torch.zeros_like(p))
        ]
        assert moved, f"{name}: the calibration did not train"
        counts = trainer.model.items.count.sum().item()
        assert counts == pytest.approx(PreparedDataset(small_prepared).num_rows("train") * 3)


def test_a_schema_without_the_key_field_is_refused():
    schema = make_schema()
    schema = schema.model_copy(update={"item_key": "sku"})
    with pytest.raises(ValueError, match="needs the key 'sku' as a field"):
        build_model("popularity", schema, {})
    assert "every field but" in build_model("mean", make_schema(), {}).ignored_inputs()[0]
