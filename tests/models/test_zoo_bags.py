"""Pooled multi-valued fields (schema `bag`): one table and one token per bag, the masked
mean of its present values; every registered model runs on a schema with a bag."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.helpers import make_batch

from infnet.data.batch import Batch
from infnet.data.schema import PAD, CategoricalField, Schema, SequenceSpec, Task
from infnet.models import available_models, build_model
from infnet.models.embedding import FeatureEmbedding

GENRES = 37  # vocab sizes no other parameter has, so the tables are found by their shape
USERS = 31


def bag_schema(
    num_behaviours: int = 2, side_fields: tuple[str, ...] = ("video_id", "author_id")
) -> Schema:
    genre = [
        CategoricalField(name=f"genre_{k}", group="item", vocab_size=GENRES, bag="genre")
        for k in (1, 2, 3)
    ]
    fields = [
        CategoricalField(name="video_id", group="item", vocab_size=50),
        *genre,
        CategoricalField(name="author_id", group="item", vocab_size=20),
        CategoricalField(name="user_id", group="user", vocab_size=USERS),
        CategoricalField(name="hour", group="context", vocab_size=26),
    ]
    seq = None
    if num_behaviours:
        behaviours = ["click", "like"][:num_behaviours]
        seq = SequenceSpec(behaviours=behaviours, side_fields=list(side_fields), max_len=6)
    return Schema(
        dataset="bags",
        fields=fields,
        sequences=seq,
        tasks=[Task(name="click", kind="binary"), Task(name="watch", kind="regression")],
    )


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/models/conftest.py


def test_schema_counts_columns_and_tokens():
    s = bag_schema()
    assert s.num_fields == 7 and s.num_categorical_tokens == 5
    assert s.token_columns == [[0], [1, 2, 3], [4], [5], [6]]
    assert s.token_names == ["video_id", "genre", "author_id", "user_id", "hour"]
    # A schema written before bags existed reads as one token per field.
    old = Schema.from_json(s.to_json().replace('"bag": "genre"', '"bag": null'))
    assert old.num_categorical_tokens == old.num_fields == 7


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: f.insert(2, f.pop(0)), "not adjacent"),
        (lambda f: setattr(f[2], "vocab_size", 9), "differ in vocab_size or group"),
        (lambda f: setattr(f[6], "name", "genre"), "duplicate categorical token names"),
    ],
)
def test_bad_bags_are_named(edit, message):
    raw = bag_schema().model_dump()
    fields = [CategoricalField(**f) for f in raw["fields"]]
    edit(fields)
    with pytest.raises(ValueError, match=message):
        Schema(**{**raw, "fields": fields})


def with_genres(schema: Schema, slots: list[list[int]]) -> Batch:
    batch = make_batch(schema, batch_size=len(slots))
    batch.categorical[:, 1:4] = torch.tensor(slots)
    return batch


def test_bag_token_is_the_mean_of_present_values_in_any_order():
    torch.manual_seed(0)
    schema = bag_schema(side_fields=("video_id", "genre_1"))
    emb = FeatureEmbedding(schema, 8, std=0.01)
    table = emb.tables[1].weight
    assert len(emb.tables) == 5 and table.shape == (GENRES, 8)
    slots = [[4, 7, 9], [9, 4, 7], [7, 9, 4], [4, 7, PAD], [PAD, 7, 4], [5, 0, 0]]
    batch = with_genres(schema, slots)
    tok = emb.categorical(batch)[:, 1]
    torch.testing.assert_close(tok[0], (table[4] + table[7] + table[9]) / 3)
    torch.testing.assert_close(tok[1], tok[0])  # permutation invariant
    torch.testing.assert_close(tok[2], tok[0])
    torch.testing.assert_close(tok[3], (table[4] + table[7]) / 2)  # PAD slots are not values
    torch.testing.assert_close(tok[4], tok[3])
    torch.testing.assert_close(tok[5], table[5])
    # A bag slot as a sequence side field is looked up in the bag's table, on its own.
    target = emb.target(batch)  # [B, K, d]
    torch.testing.assert_close(target[:, 1], table[batch.categorical[:, 1]])
    seq = emb.sequence(batch)  # [B, F, n, K, d]
    torch.testing.assert_close(seq[..., 1, :], table[batch.seq_ids[..., 1]])


def test_single_field_tokens_keep_their_place_beside_a_bag_and_pad_rows_learn_nothing():
    """The single-field tokens are one lookup in the tables' concatenation (embedding.py):
    each must still read its own table, in token order around the bag, and a PAD id must
    leave its table's PAD row without a gradient."""
    torch.manual_seed(0)
    schema = bag_schema()
    emb = FeatureEmbedding(schema, 8, std=0.01)
    batch = with_genres(schema, [[4, 7, 9], [PAD, 7, 4], [5, 0, 0], [1, 2, 3]])
    batch.categorical[1, [0, 4, 5, 6]] = PAD  # a row with every single field missing
    tok = emb.categorical(batch)  # [B, 5 tokens, d]
    assert [bag for _, bag in emb.tokens] == [False, True, False, False, False]
    for t, (cols, bag) in enumerate(emb.tokens):
        if not bag:
            torch.testing.assert_close(
                tok[:, t], emb.tables[t].weight[batch.categorical[:, cols[0]]]
            )
    assert (tok[1, [0, 2, 3, 4]] == 0).all()
    (tok * torch.randn_like(tok)).sum().backward()
    for t, table in enumerate(emb.tables):
        assert (table.weight.grad[PAD] == 0).all(), f"token {t}: the PAD row got a gradient"
    used = batch.categorical[0, 0]
    assert (emb.tables[0].weight.grad[used] != 0).all()


def loss(model, batch: Batch) -> torch.Tensor:
    output = model(batch)
    out = output.logits
    assert out.shape == (len(batch), 2) and torch.isfinite(out).all()
    y, value = batch.labels[:, 0], batch.labels[:, 1]
    total = F.binary_cross_entropy_with_logits(out[:, 0], y) + F.mse_loss(out[:, 1], value)
    return total + (output.auxiliary_loss if output.auxiliary_loss is not None else 0.0)


@pytest.mark.parametrize("num_behaviours", [2, 0])
# the reference models read the item and user keys only (models/popularity.py, mean.py)
@pytest.mark.parametrize("name", sorted(set(available_models()) - {"popularity", "mean"}))
def test_every_model_trains_on_a_bag(name, num_behaviours):
    schema = bag_schema(num_behaviours)
    torch.manual_seed(0)
    model = build_model(name, schema, {"embedding_dim": 8, "dropout": 0.0})
    batch = make_batch(schema, batch_size=16)
    batch.categorical[::2, 3] = PAD  # some items have two genres
    batch.categorical[::3, 2] = PAD  # and some one
    loss(model, batch).backward()
    bag_tables = [p for p in model.parameters() if p.shape[0] == GENRES]
    assert bag_tables and all(p.grad is not None and p.grad.abs().sum() > 0 for p in bag_tables)
    # One table per bag, not one per slot: as many genre tables as user_id tables.
    assert len(bag_tables) == sum(p.shape[0] == USERS for p in model.parameters())
    # The model reads the bag as a set: reordering its slots changes nothing.
    model.eval()
    swapped = Batch(
        **{**batch.__dict__, "categorical": batch.categorical[:, [0, 3, 1, 2, 4, 5, 6]]}
    )
    torch.testing.assert_close(model(swapped).logits, model(batch).logits)
