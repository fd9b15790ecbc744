"""The ONNX Runtime session options the server scores with."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from infnet.serving.runtime import session_options


def test_server_sessions_treat_denormals_as_zero_and_keep_masked_softmax_exact() -> None:
    # the entry that keeps Softmax over masked (-inf) scores at full speed, and its output
    # under it: exact probabilities over the real keys, exact zeros at the masked ones
    options = session_options(threads=1)
    assert options.get_session_config_entry("session.set_denormal_as_zero") == "1"
    assert options.intra_op_num_threads == 1
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], axis=-1)],
        "softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 6])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    x = np.array([[0.5, -np.inf, 1.5, -np.inf, -np.inf, -2.0]] * 3, np.float32)
    real = np.exp(np.array([0.5, 1.5, -2.0])) / np.exp(np.array([0.5, 1.5, -2.0])).sum()
    y = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(y[:, [0, 2, 5]], np.tile(real, (3, 1)), rtol=1e-6)
    assert (y[:, [1, 3, 4]] == 0).all()
