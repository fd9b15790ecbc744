"""Per-sample cost of a model as the number of categorical fields M grows, one JSON line per M:

    python benchmarks/field_cost.py [--model infnet] [--fields 92 250 500 1000]
        [--batch 1024] [--candidates 100] [--vocab 1000] [--threads 1]

The inputs of docs/scaling.md's estimate for an industrial job (1,000+ fields against
KuaiRand's 92). Each M is KuaiRand's shape otherwise: 3 behaviours of 50 positions (every
position a real event, the worst case), 3 side fields, 3 binary tasks, d = 16; the fields
beyond video / author / tag / user are split over the user, item and context groups, each
with `--vocab` values. Per M, in this process, one thread, best of at least 3 repetitions:

- train: one optimiser step of `--batch` rows (forward, loss, backward, Adam over every
  table, as the trainer does): ms, samples/s, MFLOP per sample (torch.utils.flop_counter,
  forward + backward; elementwise work is not counted);
- serve: one ranking request, `--candidates` rows sharing one history, scored by the
  server's graph (ScoringModule exported to ONNX, run by ONNX Runtime with the server's
  session options) and, beside it, eagerly: ms, and MFLOP per candidate (eager forward);
- parameters: embedding rows and dense parameters, and fp32 bytes of each.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from infnet.data.batch import Batch
from infnet.data.schema import CategoricalField, Schema, SequenceSpec, Task
from infnet.experiments.measure import forward_flops
from infnet.models import build_model
from infnet.serving.export import ScoringModule, export_onnx, input_names
from infnet.serving.runtime import _onnx_runner
from infnet.training.config import TrainConfig
from infnet.training.losses import TaskLoss
from infnet.training.optim import make_optimizer
from infnet.training.step import train_step

BEHAVIOURS, LENGTH, TASKS = ["click", "like", "long_view"], 50, ["click", "like", "long_view"]
SIDE = {"video_id": 10_000, "author_id": 2_000, "tag": 50}


def schema_with(fields: int, vocab: int) -> Schema:
    groups = ("user", "item", "context")
    named = [
        *(CategoricalField(name=n, group="item", vocab_size=v) for n, v in SIDE.items()),
        CategoricalField(name="user_id", group="user", vocab_size=5_000),
    ]
    extra = [
        CategoricalField(name=f"f{i}", group=groups[i % 3], vocab_size=vocab)
        for i in range(fields - len(named))
    ]
    return Schema(
        dataset=f"fields-{fields}",
        fields=named + extra,
        sequences=SequenceSpec(behaviours=BEHAVIOURS, side_fields=list(SIDE), max_len=LENGTH),
        tasks=[Task(name=t, kind="binary") for t in TASKS],
    )


def batch_of(schema: Schema, rows: int) -> Batch:
    side = torch.tensor(list(SIDE.values()))
    shape = (rows, len(BEHAVIOURS), LENGTH)
    return Batch(
        categorical=torch.stack(
            [torch.randint(1, f.vocab_size, (rows,)) for f in schema.fields], 1
        ),
        seq_ids=(torch.rand(*shape, len(SIDE)) * (side - 1)).long() + 1,
        seq_mask=torch.ones(shape, dtype=torch.bool),
        seq_gap=torch.randint(1, 20, shape),
        labels=torch.randint(0, 2, (rows, len(TASKS))).float(),
        label_mask=torch.ones(rows, len(TASKS), dtype=torch.bool),
        user=torch.zeros(rows, dtype=torch.long),
    )


def best_ms(call, seconds: float = 2.0) -> float:
    call()  # warm-up
    times: list[float] = []
    while (sum(times) < seconds and len(times) < 10) or len(times) < 3:
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return 1e3 * min(times)


def flops(call) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        call()
    return counter.get_total_flops()


def measure(model_name: str, fields: int, args) -> dict:
    torch.manual_seed(0)
    schema = schema_with(fields, args.vocab)
    model = build_model(model_name, schema)
    config = TrainConfig()
    loss = TaskLoss(schema, config)
    optimizer = make_optimizer(model, config, loss.parameters())
    train_batch, serve_batch = batch_of(schema, args.batch), batch_of(schema, args.candidates)

    def train() -> None:
        train_step(model, train_batch, loss, optimizer)

    scoring = ScoringModule(model).eval()
    history = torch.zeros(args.candidates, dtype=torch.long)  # every candidate, one user

    def serve() -> None:
        with torch.inference_mode():
            scoring(
                serve_batch.categorical,
                serve_batch.seq_ids[:1],
                serve_batch.seq_mask[:1],
                history,
                serve_batch.seq_gap[:1],
            )

    train_ms, train_flops = best_ms(train), flops(train)
    model.eval()
    serve_ms = best_ms(serve)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(scoring, serve_batch, path, "torchscript")
        run = _onnx_runner(path, threads=torch.get_num_threads())
        names = input_names(scoring)
        feed = {
            "categorical": serve_batch.categorical.numpy(),
            "seq_ids": serve_batch.seq_ids[:1].numpy(),
            "seq_mask": serve_batch.seq_mask[:1].numpy(),
            "seq_index": history.numpy(),
            "seq_gap": serve_batch.seq_gap[:1].numpy(),
        }
        onnx_ms = best_ms(lambda: run({k: v for k, v in feed.items() if k in names}))
    serve_flops = forward_flops(model, serve_batch) * args.candidates
    embedding_rows = sum(
        m.num_embeddings for m in model.modules() if isinstance(m, torch.nn.Embedding)
    )
    embedding_params = embedding_rows * model_dim(model)
    return {
        "benchmark": "field_cost",
        "model": model_name,
        "fields": fields,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "train_ms": round(train_ms, 1),
        "train_samples_per_s": round(args.batch / train_ms * 1e3),
        "train_mflop_per_sample": round(train_flops / args.batch / 1e6, 2),
        "candidates": args.candidates,
        "serve_onnx_ms": round(onnx_ms, 2),
        "serve_eager_ms": round(serve_ms, 2),
        "serve_mflop_per_sample": round(serve_flops / args.candidates / 1e6, 3),
        "embedding_rows": embedding_rows,
        "embedding_mb": round(embedding_params * 4 / 2**20, 1),
        "dense_params": model.num_parameters() - embedding_params,
        "load_1m": round(os.getloadavg()[0], 2),
    }


def model_dim(model: torch.nn.Module) -> int:
    return next(m.embedding_dim for m in model.modules() if isinstance(m, torch.nn.Embedding))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="infnet")
    parser.add_argument("--fields", type=int, nargs="+", default=[92, 250, 500, 1000])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    for fields in args.fields:
        print(json.dumps(measure(args.model, fields, args)), flush=True)


if __name__ == "__main__":
    main()
