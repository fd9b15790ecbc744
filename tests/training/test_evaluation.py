"""Predictions of a split, or of some of its rows: the same numbers either way."""

from __future__ import annotations

import numpy as np

from infnet.data.loader import PreparedDataset
from infnet.models import build_model
from infnet.training.evaluation import predict


def test_predictions_of_some_rows_are_those_rows_of_the_whole_split(small_prepared):
    data = PreparedDataset(small_prepared)
    model = build_model("infnet", data.schema, {"embedding_dim": 8, "num_blocks": 1})
    whole = predict(model, data, "test", batch_size=64)
    rows = np.array([5, 0, 299, 77, 78, 150])
    some = predict(model, data, "test", batch_size=4, rows=rows)
    np.testing.assert_allclose(some.outputs, whole.outputs[rows], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(some.labels, whole.labels[rows])
    np.testing.assert_array_equal(some.label_mask, whole.label_mask[rows])
    np.testing.assert_array_equal(some.users, whole.users[rows])
