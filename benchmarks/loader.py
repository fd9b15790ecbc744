"""Loader speed: one pass over the KuaiRand subset's train split; prints one JSON line.

    python benchmarks/loader.py [--data PREPARED] [--data-dir KUAIRAND] [--batch-size 4096]

Without --data the subset is prepared into a temporary directory first (not timed).
The split's first load (parquet -> numpy) is timed separately from the pass. The pass's
process CPU time is reported too: on a shared machine it is the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from infnet.data.loader import PreparedDataset
from infnet.data.sources.kuairand import prepare_kuairand

DEFAULT_DATA_DIR = Path(
    os.environ.get(
        "INFNET_DATA_DIR", Path(__file__).resolve().parents[2] / "shared/data/kuairand-pure"
    )
)


def run(path: Path, batch_size: int, split: str) -> dict:
    ds = PreparedDataset(path)
    t0 = time.perf_counter()
    ds.batch_at(split, np.arange(1))  # loads the split and the event tables
    load_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    rows = sum(len(b) for b in ds.batches(split, batch_size, shuffle=True, seed=0))
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    return {
        "benchmark": "loader",
        "dataset": ds.schema.dataset,
        "split": split,
        "batch_size": batch_size,
        "rows": rows,
        "fields": ds.schema.num_fields,
        "seq_shape": [
            ds.schema.num_behaviours,
            ds.schema.sequences.max_len if ds.schema.sequences else 0,
        ],
        "load_seconds": round(load_s, 3),
        "seconds": round(seconds, 3),
        "samples_per_s": round(rows / seconds),
        "cpu_seconds": round(cpu_seconds, 3),
        "samples_per_cpu_s": round(rows / cpu_seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a prepared dataset directory")
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="KuaiRand-Pure files"
    )
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--split", default="train")
    args = parser.parse_args()
    if args.data is not None:
        print(json.dumps(run(args.data, args.batch_size, args.split)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        prepare_kuairand(args.data_dir, Path(tmp) / "kr", progress=False)
        print(json.dumps(run(Path(tmp) / "kr", args.batch_size, args.split)))


if __name__ == "__main__":
    main()
