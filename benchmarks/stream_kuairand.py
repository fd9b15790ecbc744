"""The streaming loop on KuaiRand, judged day by day on traffic it has not seen; JSON lines.

    python benchmarks/stream_kuairand.py [--work /tmp/infnet-stream-kuairand]
        [--data data/kuairand] [--from 2022-05-05] [--to 2022-05-09] [--lr LR]   (about 20 minutes)

A model trained on the train split (04-25..05-04) is exported and served with a feature
store as of 05-05 00:00 and an event log. Then, for each day from `--from` to the day
before `--to` (local time, UTC+8):
1. the day's logged rows are scored by the frozen model and by the streamed model as it
   stands (the online trainer's state; the frozen one before the first day): each row is
   predicted by a model that has not trained on it (prequential evaluation);
2. the day is replayed through the server (`infnet stream replay`'s defaults: labels after
   an exponential 60 s delay, 1% resent, 5% reordered, 1% dropped);
3. the embedded loop (`StreamLoop`, what `infnet stream run` runs: 30-minute windows, parts
   of 4,096, batches of 1,024, a version judged every 10,000 samples) reads the log up;
   after the last day it drains it.
One line a day with both models' AUCs and DeLong's p of streamed = frozen per task; then
a summary: the mean daily difference over the days after the first (on the first the two
are the same model), the days pooled (a weaker test for a model that changes: pooled AUC
also ranks rows of different days against each other, so it charges the streamed model for
its scores' day-to-day shifts), the replay's and the matcher's counts and the publisher's
decisions. One seed (the start model's, seed 0). `--lr` sets the online learning rate
(default: the run's, 1e-3).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import fields
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from infnet.data.loader import PreparedDataset
from infnet.experiments.stats import delong
from infnet.models.checkpoint import load_model
from infnet.streaming.events import IMPRESSIONS, open_event_log
from infnet.streaming.loop import StreamLoop
from infnet.streaming.publisher import PublisherConfig
from infnet.streaming.replay import replay
from infnet.training.evaluation import Predictions, predict, score

sys.path.insert(0, str(Path(__file__).parent))
from serving import start_server  # noqa: E402  (the serving benchmark's server start)

TOKEN = "stream-bench"
DAY_MS = 86_400_000
LOCAL = timezone(timedelta(hours=8))  # KuaiRand's clock


def _cli(*args: str) -> None:
    # its output on stderr: stdout is the JSON lines
    subprocess.run(
        [str(Path(sys.executable).with_name("infnet")), *args], check=True, stdout=sys.stderr
    )


def _day_ms(day: str) -> int:
    return int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=LOCAL).timestamp() * 1000)


def _predict(path: Path, data: PreparedDataset, since: int, until: int) -> Predictions:
    """The model's predictions on the rows of every split in [since, until)."""
    model, _ = load_model(path, data.schema)
    days = []
    for split in ("train", "valid", "test"):
        t = data.times(split)
        rows = np.flatnonzero((t >= since) & (t < until))
        if len(rows):
            days.append(predict(model, data, split, rows=rows))
    return _concat(days)


def _concat(ps: list[Predictions]) -> Predictions:
    return Predictions(
        *(np.concatenate([getattr(p, f.name) for p in ps]) for f in fields(Predictions))
    )


def _scores(data: PreparedDataset, p: Predictions) -> dict[str, float]:
    r = score(data, p)
    binary = [t.name for t in data.schema.tasks if t.kind == "binary"]
    return {"mtl_auc": round(r["mtl_auc"], 4)} | {t: round(r[t]["auc"], 4) for t in binary}


def _delong(data: PreparedDataset, a: Predictions, b: Predictions) -> dict:
    """Per binary task: AUC(a) - AUC(b) on the same rows and DeLong's two-sided p."""
    out = {}
    for j, task in enumerate(data.schema.tasks):
        if task.kind == "binary":
            m = b.label_mask[:, j]
            r = delong(b.labels[m, j], a.outputs[m, j], b.outputs[m, j])
            out[task.name] = {
                "delta": round(r["auc_a"] - r["auc_b"], 4),
                "p": float(f"{r['p']:.3g}"),
            }
    return out


def _serve(work: Path, base: Path) -> tuple[subprocess.Popen, str]:
    (work / "server.yaml").write_text(
        f"model: {base}\nstore: {work / 'features.sqlite'}\nrequest_log: null\n"
        f"event_log: {work / 'events.sqlite'}\nreload_root: {work}\n"
    )
    return start_server(work / "server.yaml", work / "serve.log", {"INFNET_ADMIN_TOKEN": TOKEN})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, default=Path("/tmp/infnet-stream-kuairand"))
    p.add_argument("--data", type=Path, default=Path("data/kuairand"))
    p.add_argument("--from", dest="since", default="2022-05-05")
    p.add_argument("--to", dest="until", default="2022-05-09")
    p.add_argument("--lr", type=float, default=None)
    args = p.parse_args()
    work, d = args.work, args.data
    work.mkdir(parents=True, exist_ok=True)
    if not (d / "schema.json").is_file():
        raw = os.environ.get("INFNET_DATA_DIR", "../shared/data/kuairand-pure")
        _cli("prepare", "kuairand", "--data-dir", raw, "--out", str(d))
    if not (work / "run" / "best.pt").is_file():
        _cli("train", "--data", str(d), "--model", "infnet", "--out", str(work / "run"),
             "--set", "epochs=1", "--set", "batch_size=1024")  # fmt: skip
    base = work / "models" / "base"
    if not base.is_dir():
        _cli("export", "--run", str(work / "run"), "--out", str(base))
    from infnet.serving.snapshot import snapshot_from_prepared
    from infnet.serving.stores import open_store

    first, end = _day_ms(args.since), _day_ms(args.until)
    for stale in ("loop", "features.sqlite", "events.sqlite", "events.sqlite-wal"):
        path = work / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    open_store(work / "features.sqlite").write(snapshot_from_prepared(d, as_of=first))
    data = PreparedDataset(d)
    server, url = _serve(work, base)
    frozen_path, streamed_path = work / "run" / "best.pt", work / "loop" / "trainer" / "state.pt"
    pooled: dict[str, list] = {"frozen": [], "streamed": []}
    loop = StreamLoop(
        open_event_log(work / "events.sqlite"), work / "run", base, work / "loop", server=url,
        token=TOKEN, publisher=PublisherConfig(every_samples=10_000), batch_size=1024, lr=args.lr,
    )  # fmt: skip
    log = open_event_log(work / "events.sqlite")
    totals: dict[str, int] = {}
    try:
        for day in range(first, end, DAY_MS):
            name = datetime.fromtimestamp(day / 1000, LOCAL).date().isoformat()
            frozen = _predict(frozen_path, data, day, day + DAY_MS)
            streamed = _predict(streamed_path if streamed_path.is_file() else frozen_path,
                                data, day, day + DAY_MS)  # fmt: skip
            pooled["frozen"].append(frozen)
            pooled["streamed"].append(streamed)
            t0 = time.time()
            print(f"{name}: replaying", file=sys.stderr, flush=True)
            stats = replay(d, url, since_ms=day, until_ms=day + DAY_MS, duplicate=0.01,
                           reorder=0.05, drop=0.01, seed=day // DAY_MS, progress=False)  # fmt: skip
            for k, v in stats.__dict__.items():
                if isinstance(v, int):
                    totals[k] = totals.get(k, 0) + v
            while log.length(IMPRESSIONS) < totals["impressions"]:  # the server's writer
                time.sleep(0.2)
            replayed = time.time() - t0
            last = day + DAY_MS >= end
            print(f"{name}: {stats.impressions:,} impressions in {replayed:.0f} s; streaming",
                  file=sys.stderr, flush=True)  # fmt: skip
            while True:
                tick = loop.tick(drain=last)
                if tick.decision is not None:
                    print(json.dumps({"day": name, "decision": tick.decision}), flush=True)
                if tick.read == 0:
                    break
            print(json.dumps({
                "benchmark": "stream_kuairand_day", "day": name, "rows": len(frozen.users),
                "frozen": _scores(data, frozen), "streamed_before_the_day": _scores(data, streamed),
                "streamed_vs_frozen_delong": _delong(data, streamed, frozen),
                "replay": stats.__dict__, "replay_s": round(replayed, 1),
                "loop_s": round(time.time() - t0 - replayed, 1),
            }), flush=True)  # fmt: skip
        counts = dict(loop.matcher.counts)
        decisions = loop.publisher.record["decisions"] if loop.publisher else []
    finally:
        loop.close()
        server.terminate()
        server.wait(timeout=30)
    # the days the streamed model differs from the frozen one (the first day it is the same)
    later = range(1, len(pooled["frozen"]))
    daily = {
        name: [_scores(data, pooled[name][i]) for i in later] for name in ("frozen", "streamed")
    }
    mean_delta = {
        k: round(float(np.mean([s[k] - f[k] for s, f in zip(daily["streamed"], daily["frozen"],
                                                             strict=True)])), 4)
        for k in daily["frozen"][0]
    } if later else {}  # fmt: skip
    both = {k: _concat(v) for k, v in pooled.items()}
    print(json.dumps({
        "benchmark": "stream_kuairand", "days": [args.since, args.until], "seeds": 1,
        "rows": len(both["frozen"].users),
        "mean_daily_delta_after_the_first_day": mean_delta,
        "pooled": {"frozen": _scores(data, both["frozen"]), "streamed": _scores(data, both["streamed"]),
                   "streamed_vs_frozen_delong": _delong(data, both["streamed"], both["frozen"])},
        "replay": totals,
        "matcher": {k: v for k, v in counts.items() if k in ("impressions", "labels", "samples")
                    or k.startswith(("dead:", "duplicate"))},
        "published": sum(x.get("result") == "published" for x in decisions),
        "refused": sum(x.get("result") == "refused" for x in decisions),
        "cpu": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
    }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
