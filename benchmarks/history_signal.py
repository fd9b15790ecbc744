"""How much each behaviour history's *length* alone says about each task: AUC and gAUC of
the score "number of events in the history", per split. One JSON line per split, task and
behaviour.

    python benchmarks/history_signal.py --data PREPARED

A length with high AUC but gAUC below 0.5 ranks users well and each user's own rows
backwards in time (the history grows after the positives): read a model's gAUC with it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from infnet.data.loader import PreparedDataset
from infnet.metrics import auc, gauc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--splits", default="train,valid,test")
    args = parser.parse_args()
    data = PreparedDataset(args.data)
    if data.schema.sequences is None:
        raise SystemExit(f"{args.data}: the dataset has no behaviour sequences")
    for split in args.splits.split(","):
        batches = list(data.batches(split, 65536))
        length = np.concatenate([b.seq_mask.sum(-1).numpy() for b in batches])  # [N, F]
        labels = np.concatenate([b.labels.numpy() for b in batches])
        present = np.concatenate([b.label_mask.numpy() for b in batches])
        users = np.concatenate([b.user.numpy() for b in batches])
        for t, task in enumerate(data.schema.tasks):
            if task.kind != "binary":
                continue
            rows = present[:, t]
            for f, behaviour in enumerate(data.schema.sequences.behaviours):
                y, s, u = labels[rows, t], length[rows, f], users[rows]
                print(
                    json.dumps(
                        {
                            "benchmark": "history_signal",
                            "split": split,
                            "task": task.name,
                            "history": behaviour,
                            "auc": round(auc(y, s), 4),
                            "gauc": round(gauc(y, s, u), 4),
                        }
                    )
                )


if __name__ == "__main__":
    main()
