"""ONNX Runtime's Softmax over INFNet's score shape, rows with and without masked (-inf) keys,
with the server's session options and with the denormal entry left out; JSON lines.

    python benchmarks/ort_softmax.py [--shape 100,18,150] [--repeats 200]

Why the server's sessions treat denormals as zero (serving/runtime.session_options). Each
setting runs in a fresh process: ONNX Runtime applies the entry of the first session a
process creates to every later one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from infnet.serving.runtime import session_options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="100,18,150")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--flush", choices=["0", "1"], help=argparse.SUPPRESS)  # one setting
    args = parser.parse_args()
    if args.flush is None:
        for flush in ("0", "1"):
            argv = [sys.executable, __file__, "--shape", args.shape, "--repeats", str(args.repeats)]
            subprocess.run([*argv, "--flush", flush], check=True)
        return
    shape = [int(x) for x in args.shape.split(",")]
    node = helper.make_node("Softmax", ["x"], ["y"], axis=-1)
    spec = [None, *shape[1:]]
    graph = helper.make_graph(
        [node],
        "softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, spec)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, spec)],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)]
    ).SerializeToString()
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    keys = np.arange(shape[-1])
    inputs = {
        "unmasked": x,
        "half the keys masked": np.where(keys < shape[-1] // 2, x, -np.inf).astype(np.float32),
    }
    flush = args.flush == "1"
    options = session_options(threads=1)
    if not flush:
        options.add_session_config_entry("session.set_denormal_as_zero", "0")
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    for label, v in inputs.items():
        for _ in range(10):
            session.run(None, {"x": v})
        t = time.perf_counter()
        for _ in range(args.repeats):
            session.run(None, {"x": v})
        ms = (time.perf_counter() - t) / args.repeats * 1e3
        record = {"benchmark": "ort_softmax", "shape": shape, "denormals_as_zero": flush}
        print(json.dumps({**record, "input": label, "ms": round(ms, 3)}), flush=True)


if __name__ == "__main__":
    main()
