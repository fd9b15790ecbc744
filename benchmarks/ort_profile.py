"""Where ONNX Runtime's time goes in one request of the serving benchmark: its profiler over
repeated scoring of the same 100 candidates, by operator type and by node; JSON lines.

    python benchmarks/serving.py --rates 50 --duration 5 --workdir W   # data, run, model, store
    python benchmarks/ort_profile.py --workdir W [--repeats 200] [--top 15]

One thread, the server's session options (serving/runtime.session_options) with ONNX
Runtime's profiling on; the inputs are those of `serving.in_process_ms`. A "graph" line
gives the nodes the optimised graph runs, its kernel time per request and the median wall
time per request under the profiler (slower than benchmarks/serving.py's in-process time); an "op" line each operator type (nodes, kernel microseconds per request,
share); a "node" line the largest nodes with their output shapes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort

from infnet.serving.runtime import load_model_dir, session_options

sys.path.insert(0, str(Path(__file__).parent))
from serving import request_inputs  # noqa: E402  (the serving benchmark's request)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True, help="a serving.py --workdir")
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()

    model_dir = args.workdir / "model"
    model = load_model_dir(model_dir, threads=1)
    feed = request_inputs(
        model, str(args.workdir / "features.sqlite"), args.workdir / "data", args.candidates
    )
    options = session_options(1)
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(str(model_dir / "model.onnx"), options)
    feed = {i.name: feed[i.name] for i in session.get_inputs()}
    warm = 20
    for _ in range(warm):
        session.run(None, feed)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    events = json.loads(Path(session.end_profiling()).read_text())

    runs = warm + args.repeats
    by_op, nodes_by_op, by_node, seen = Counter(), Counter(), Counter(), set()
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        op = e["args"]["op_name"]
        node = e["name"].removesuffix("_kernel_time")
        if node not in seen:
            seen.add(node)
            nodes_by_op[op] += 1
        by_op[op] += e["dur"]
        by_node[node, op, str(e["args"].get("output_type_shape", ""))] += e["dur"]
    total = sum(by_op.values())
    head = {"benchmark": "ort_profile", "candidates": args.candidates}
    graph = {
        "nodes": sum(nodes_by_op.values()),
        "kernel_us_per_request": round(total / runs, 1),
        "wall_ms_per_request_profiled": round(1000 * float(np.median(times)), 3),
    }
    print(json.dumps({**head, "line": "graph", **graph}))
    for op, us in by_op.most_common():
        record = {"op": op, "nodes": nodes_by_op[op], "us_per_request": round(us / runs, 1)}
        print(json.dumps({**head, "line": "op", **record, "share": round(us / total, 3)}))
    for (node, op, shape), us in by_node.most_common(args.top):
        record = {"node": node, "op": op, "output": shape, "us_per_request": round(us / runs, 1)}
        print(json.dumps({**head, "line": "node", **record, "share": round(us / total, 3)}))


if __name__ == "__main__":
    main()
