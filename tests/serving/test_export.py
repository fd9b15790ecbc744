"""Export: the model directory, ONNX Runtime vs eager PyTorch on real batches, eager-only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from infnet.data.loader import PreparedDataset
from infnet.serving.export import export_run
from infnet.serving.runtime import ModelLoadError, load_model_dir


def test_model_dir_holds_what_serving_needs(model_dir, small_prepared):
    info = json.loads((model_dir / "version.json").read_text())
    for name in (
        "model.onnx",
        "weights.pt",
        "schema.json",
        "config.json",
        "vocab/video_id.parquet",
    ):
        assert (model_dir / name).is_file(), name
    assert info["model"] == "infnet"
    assert info["version"].startswith(f"infnet-{info['weights_sha256'][:12]}-")
    assert info["parity"]["max_abs_diff"] <= 1e-5
    assert (model_dir / "schema.json").read_text() == (small_prepared / "schema.json").read_text()


def test_onnx_runtime_matches_eager_on_real_batches(model_dir, small_prepared):
    onnx = load_model_dir(model_dir)
    eager = load_model_dir(model_dir, eager=True)
    assert onnx.version == eager.version and not onnx.eager and eager.eager
    data = PreparedDataset(small_prepared)
    tasks = data.schema.tasks
    for split, size in (("valid", 700), ("test", 333)):
        for batch in data.batches(split, size):
            inputs = (batch.categorical.numpy(), batch.seq_ids.numpy(), batch.seq_mask.numpy())
            a, b = onnx.predict(*inputs), eager.predict(*inputs)
            assert a.shape == (len(batch), len(tasks))
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
            binary = [i for i, t in enumerate(tasks) if t.kind == "binary"]
            assert ((a[:, binary] > 0) & (a[:, binary] < 1)).all()  # probabilities, not logits


def test_eager_only_export_is_served_with_eager(model_b_dir):
    assert not (model_b_dir / "model.onnx").exists()
    with pytest.raises(ModelLoadError, match="--eager"):
        load_model_dir(model_b_dir)
    assert load_model_dir(model_b_dir, eager=True).version.startswith("infnet-")


def test_export_refuses_to_overwrite_and_names_a_bad_run(model_dir, served_run, tmp_path):
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_run(served_run, model_dir, onnx=False)
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        export_run(tmp_path, tmp_path / "out", onnx=False)
    assert not (tmp_path / "out").exists()


def test_a_broken_model_dir_is_refused_with_its_name(model_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelLoadError, match="broken"):
        load_model_dir(broken)
