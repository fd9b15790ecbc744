"""FeatureEmbedding's distinct sequence positions: the rows deduplicated exactly (also where
the packed key would overflow), each distinct (behaviour, side ids) embedded as sequence()
embeds its positions, bad ids refused."""

from __future__ import annotations

import pytest
import torch
from tests.helpers import make_batch, make_schema

from infnet.data.batch import Batch
from infnet.data.schema import CategoricalField, Schema, SequenceSpec, Task
from infnet.models.embedding import FeatureEmbedding, distinct_rows


def _check(columns: list[torch.Tensor], sizes: list[int]) -> int:
    rows = torch.stack([c.reshape(-1) for c in columns], 1)  # [N, J]
    inverse, first = distinct_rows(columns, sizes)
    assert torch.equal(rows[first][inverse], rows)  # every row is its distinct row
    assert len(first) == len(torch.unique(rows, dim=0))  # and distinct rows differ
    return len(first)


def test_distinct_rows_are_exact() -> None:
    g = torch.Generator().manual_seed(0)
    cols = [torch.randint(0, s, (40, 30), generator=g) for s in (3, 4, 5)]
    assert _check(cols, [3, 4, 5]) <= 60


def test_distinct_rows_rerank_where_the_key_would_overflow() -> None:
    g = torch.Generator().manual_seed(0)
    big = 2**40  # two such columns overflow int64 packed together
    base = torch.randint(0, big, (8,), generator=g)
    cols = [base[torch.randint(0, 8, (500,), generator=g)] for _ in range(2)]
    cols.append(torch.randint(0, 3, (500,), generator=g))
    assert _check(cols, [big, big, 3]) <= 8 * 8 * 3


def test_distinct_rows_refuse_values_outside_their_size() -> None:
    with pytest.raises(ValueError, match=r"column 1 has values outside \[0, 4\): 0..4"):
        distinct_rows([torch.zeros(3, dtype=torch.long), torch.tensor([0, 4, 1])], [2, 4])


def _bag_schema() -> Schema:
    genre = [
        CategoricalField(name=f"genre_{k}", group="item", vocab_size=9, bag="genre") for k in (1, 2)
    ]
    return Schema(
        dataset="bags",
        fields=[
            CategoricalField(name="video_id", group="item", vocab_size=12),
            *genre,
            CategoricalField(name="user_id", group="user", vocab_size=5),
        ],
        sequences=SequenceSpec(
            behaviours=["click", "like"], side_fields=["video_id", "genre_1", "genre_2"], max_len=6
        ),
        tasks=[Task(name="click", kind="binary")],
    )


@pytest.mark.parametrize("schema", [make_schema(), _bag_schema()], ids=["fields", "bag"])
def test_distinct_sequence_embeds_each_position_as_sequence_does(schema: Schema) -> None:
    torch.manual_seed(0)
    embedding = FeatureEmbedding(schema, 8, std=0.1)
    batch = make_batch(schema, batch_size=10)
    # few items, so positions repeat within and across rows and behaviours
    ids = batch.seq_ids % 3 + (batch.seq_ids > 0)
    batch = Batch(**{**batch.__dict__, "seq_ids": ids * batch.seq_mask.unsqueeze(-1)})
    e, behaviour, index = embedding.distinct_sequence(batch)  # [P, K_tok, d], [P], [B, F, n]
    assert len(e) < batch.seq_mask.numel() / 2
    torch.testing.assert_close(e[index], embedding.sequence(batch), rtol=0, atol=0)
    F = batch.seq_mask.shape[1]
    assert torch.equal(behaviour[index], torch.arange(F).view(1, F, 1).expand_as(index))


def test_distinct_sequence_refuses_time_aware_tokens() -> None:
    embedding = FeatureEmbedding(make_schema(), 8, time_aware=True, std=0.1)
    with pytest.raises(ValueError, match="time-aware"):
        embedding.distinct_sequence(make_batch(make_schema()))
