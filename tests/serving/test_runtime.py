"""The ONNX Runtime session the server scores with: denormals flushed to zero."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, save

from infnet.serving.runtime import _onnx_runner


def _doubled(path: Path) -> Path:
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])  # x 1 would be optimised away
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["scores"])],
        "doubled",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None])],
        initializer=[two],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_the_server_session_flushes_denormals_to_zero(tmp_path: Path) -> None:
    # what keeps Softmax over masked (-inf) scores at full speed (runtime._onnx_runner)
    path = _doubled(tmp_path / "m.onnx")
    x = np.array([1e-40, 1.0], np.float32)  # 1e-40 and 2e-40 are below float32's smallest normal
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert plain.run(None, {"x": x})[0][0] > 0  # the control: an unflushed session keeps it
    scores = _onnx_runner(path, threads=1)({"x": x})
    assert scores.tolist() == [0.0, 2.0]
