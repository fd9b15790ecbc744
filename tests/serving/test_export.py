"""Export: the model directory, ONNX Runtime vs eager PyTorch on real batches, eager-only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tests.helpers import make_batch, make_schema

from infnet.data.loader import PreparedDataset
from infnet.models import available_models, build_model
from infnet.serving.export import (
    INPUTS,
    ScoringModule,
    _export_checked,
    export_onnx,
    export_run,
    input_names,
    onnx_parity,
    shared_histories,
)
from infnet.serving.runtime import ModelLoadError, _onnx_runner, load_model_dir


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
    import onnxruntime as ort

    graph = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    # INFNet's graph reads each history once: seq_ids [U, F, n, K] and seq_index [B]; the
    # served model is time-aware, so the histories' gaps come too
    assert [i.name for i in graph.get_inputs()] == [
        "categorical",
        "seq_ids",
        "seq_mask",
        "seq_index",
        "seq_gap",
    ]
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
            # 7 histories read by all rows (a request's candidates share theirs): the
            # compact graph against eager PyTorch on each row's history repeated
            index = np.arange(len(batch)) % 7
            shared = onnx.predict(inputs[0], inputs[1][:7], inputs[2][:7], index)
            np.testing.assert_allclose(
                shared, eager.predict(inputs[0], inputs[1][index], inputs[2][index]), atol=1e-5
            )


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


# Untrained at the default init (tables N(0, 1e-4^2)) a model scores every row 0.5 +- 1e-5,
# where a parity bound of 1e-5 says nothing: tables N(0, 0.01^2) spread the scores.
SPREAD = {"embedding_std": 0.01}


def test_a_model_that_gathers_histories_per_row_reads_shared_ones(tmp_path):
    # DIN gathers each row's history (Batch.per_row_histories) inside its graph: the graph
    # takes a request's history once, with the same scores as repeating it per row.
    schema = make_schema()
    batch = make_batch(schema, batch_size=12, empty_rows=2)
    torch.manual_seed(0)
    module = ScoringModule(build_model("din", schema, SPREAD).eval()).eval()
    assert input_names(module) == list(INPUTS[:4])  # no seq_gap: DIN is not time-aware here
    compact, index = shared_histories(batch, 3)
    export_onnx(module, batch, tmp_path / "din.onnx", "torchscript")
    assert onnx_parity(module, tmp_path / "din.onnx", [(compact, index)]) <= 1e-5
    feed = {
        "categorical": compact.categorical.numpy(),
        "seq_ids": compact.seq_ids.numpy(),
        "seq_mask": compact.seq_mask.numpy(),
        "seq_index": index.numpy(),
    }
    got = _onnx_runner(tmp_path / "din.onnx", threads=1)(feed)
    with torch.inference_mode():
        repeated = module(batch.categorical, batch.seq_ids[index], batch.seq_mask[index]).numpy()
        gathered = module(batch.categorical, compact.seq_ids, compact.seq_mask, index).numpy()
        own = module(batch.categorical, batch.seq_ids, batch.seq_mask).numpy()
    np.testing.assert_allclose(got, repeated, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(gathered, repeated)
    assert np.abs(repeated - own).max() > 1e-4  # the shared histories are not the rows' own


@pytest.mark.parametrize("model", ["infnet", "din"])
def test_a_time_aware_graph_reads_the_time_gaps_of_shared_histories(tmp_path, model):
    schema = make_schema()
    batch = make_batch(schema, batch_size=12, empty_rows=2)
    torch.manual_seed(0)
    module = ScoringModule(build_model(model, schema, {"time_aware": True, **SPREAD}).eval()).eval()
    assert input_names(module) == list(INPUTS)
    compact, index = shared_histories(batch, 3)
    export_onnx(module, batch, tmp_path / "m.onnx", "torchscript")
    assert onnx_parity(module, tmp_path / "m.onnx", [batch, (compact, index)]) <= 1e-5
    run = _onnx_runner(tmp_path / "m.onnx", threads=1)
    feed = {
        "categorical": compact.categorical.numpy(),
        "seq_ids": compact.seq_ids.numpy(),
        "seq_mask": compact.seq_mask.numpy(),
        "seq_index": index.numpy(),
        "seq_gap": compact.seq_gap.numpy(),
    }
    older = {**feed, "seq_gap": np.minimum(feed["seq_gap"] + 4, 23) * feed["seq_mask"]}
    assert np.abs(run(feed) - run(older)).max() > 1e-6  # the gaps are read


V2_BEST = {"preset": "v2", "time_aware": True, "candidate_hub": True, "wide_heads": True}


@pytest.mark.parametrize(
    ("model", "options"),
    [(m, {}) for m in available_models()] + [("infnet", V2_BEST), ("infnet", {"preset": "v2"})],
    ids=[*available_models(), "infnet-v2-best", "infnet-v2"],
)
def test_every_model_exports_a_graph_of_any_batch_size(tmp_path, model, options):
    # export traces 16 rows and checks 40, one, and rows sharing histories: a size baked
    # into the graph (len(batch), a Python int of a shape) fails there
    schema = make_schema()
    torch.manual_seed(0)
    module = ScoringModule(build_model(model, schema, {**options, **SPREAD}).eval()).eval()
    check = make_batch(schema, batch_size=40, empty_rows=3)
    done = _export_checked(module, check, tmp_path / "m.onnx", "auto", 1e-5)
    assert done["max_abs_diff"] <= 1e-5 and done["rows"] > 40
    # the tracer's graph, not the dynamo fallback's (slower to export and to run): an
    # operator the tracer cannot export (Tensor.mT, say) would otherwise pass unnoticed;
    # the reference floors (mean, popularity) have always taken the fallback
    assert done["exporter"] == ("dynamo" if model in {"mean", "popularity"} else "torchscript")
