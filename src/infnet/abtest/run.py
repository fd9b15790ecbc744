"""`infnet abtest`: an online A/B test of two rankers on the simulated ad platform, through
the real server and its A/B arms, judged on business metrics against the known truth.

    1. warm-up: `warmup_days` of the platform (data/sources/ad_platform.py) under a random
       logging policy, prepared as a dataset; each arm's model trained on it and exported;
       the feature store loaded; `infnet serve` started in its own process with two arms
       over user-hash buckets, an event log, and the ranking formula.
    2. each test day: the returning users' sessions in time order; per session the platform
       retrieves candidates, the server ranks them (POST /v1/rank with the ads' bids and
       `shown`), the user sees the top `slate` and responds from the ground truth; positives
       come back as label callbacks (POST /v1/events) after an exponential delay; a request
       the server fails is served the retrieval order (a fallback) and counted against the
       arm's stability.
    3. each night: the streaming loop (one label matcher; per arm an online trainer and a
       publisher that read that arm's samples only) updates and swaps each arm's model, the
       feature store gets the day's histories, the server's /metrics are read.

Everything lands in OUT: `sessions.parquet` (one row per session: arm, outcomes and their
truths, status, latency), `days.jsonl` (per day and arm: the server's metrics, model
updates), and the report. A server that fails mid-test (dead, or every request failing)
stops the test with what was measured so far, the reason in the report. In A/A mode both
arms serve the control model and no model is updated, so any measured lift is noise.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import polars as pl
import yaml
from rich.console import Console

from infnet.abtest.config import OPTIONS, ABConfig
from infnet.abtest.features import DailyFeatures
from infnet.abtest.updates import ArmUpdates
from infnet.data.loader import PreparedDataset
from infnet.data.prepare import prepare
from infnet.data.sources.ad_platform import DAY_MS, Platform, random_ranker, simulate_days
from infnet.data.sources.simulator import users_frame
from infnet.data.sources.synthetic import draw_world, raw_dataset
from infnet.serving.config import load_server_config
from infnet.serving.process import start_server
from infnet.streaming.events import open_event_log

TASKS = ("is_click", "is_like", "long_view")
BEHAVIOUR_LABEL = {"click": "is_click", "like": "is_like", "long_view": "long_view"}
CHUNK = 100  # sessions ranked between two deliveries of due callbacks
MAX_FAILURES = 20  # calls in a row that fail before the test stops


class ServerFailed(RuntimeError):
    pass


class ABTest:
    def __init__(self, config: ABConfig, out: str | Path, console: Console | None = None) -> None:
        self.config, self.out = config, Path(out)
        self.console = console or Console(stderr=True)
        self.sessions: list[pl.DataFrame] = []
        self.days: list[dict[str, Any]] = []
        self.server: subprocess.Popen | None = None
        self.url = ""
        self.token = secrets.token_hex(16)
        self.stopped: str | None = None  # why the test ended early
        self.failures = 0  # calls to the server that failed in a row
        self.timings: dict[str, float] = {}

    # --- warm-up ----------------------------------------------------------------------------
    def setup(self) -> None:
        c, out = self.config, self.out
        out.mkdir(parents=True, exist_ok=True)
        started = time.time()
        world, (user_rng, _, ad_rng) = draw_world(c.users, c.items, c.seed)
        self.platform = Platform(world, ad_rng, conversion=c.conversion, candidates=c.candidates,
                                 slate=c.slate)  # fmt: skip
        self.log(f"warm-up: {c.warmup_days} days of the ad platform, random slates")
        frames = list(simulate_days(self.platform, c.warmup_days, random_ranker(ad_rng)))
        raw = raw_dataset(world, pl.concat(frames), users_frame(world, user_rng), TASKS, c.max_len,
                          {"seed": c.seed, "platform": "ads", "users": c.users, "items": c.items},
                          self.platform)  # fmt: skip
        prepare(raw, out / "data", overwrite=True, progress=False)
        self.data = PreparedDataset(out / "data")
        self.timings["warmup_s"] = time.time() - started
        self._train()
        self._serve()

    def _train(self) -> None:
        from infnet.experiments.runner import Runner, RunSpec, ok
        from infnet.serving.export import export_run

        c, started = self.config, time.time()
        models = {arm: model for arm, (model, _) in self.config.arms().items()}
        train = {"epochs": c.epochs, "batch_size": 1024, "patience": 3,
                 "eval_every": max(1, self.data.num_rows("train") // 1024 // 4)}  # fmt: skip
        specs = {model: RunSpec(label=model, model=model, options=OPTIONS.get(model, {}),
                                train=train, seed=c.seed) for model in dict.fromkeys(models.values())}  # fmt: skip
        self.log(f"training {', '.join(specs)} on {self.data.num_rows('train'):,} warm-up rows")
        runner = Runner(self.data, self.out / "runs", console=self.console,
                        workers=min(2, len(specs)), threads=1)  # fmt: skip
        try:
            records = dict(zip(specs, runner.run_all(list(specs.values()), "abtest"), strict=True))
        finally:
            runner.close()
        failed = [f"{m}: {r.get('error')}" for m, r in records.items() if not ok(r)]
        if failed:
            raise RuntimeError("abtest: training failed, " + "; ".join(failed))
        self.runs = {arm: Path(records[m]["run_dir"]) for arm, m in models.items()}
        self.offline = {arm: records[m]["test"] for arm, m in models.items()}
        self.model_dirs = {}
        for arm, run in self.runs.items():
            target = self.out / "models" / arm / "v0"
            shutil.rmtree(target, ignore_errors=True)
            export_run(run, target)
            self.model_dirs[arm] = target
        self.timings["train_s"] = time.time() - started

    def _serve(self) -> None:
        from infnet.serving.snapshot import snapshot_from_prepared
        from infnet.serving.stores import open_store

        c, out = self.config, self.out
        for stale in ("features.sqlite", "events.sqlite", "stream"):
            path = out / stale
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        store = open_store(out / "features.sqlite")
        self.features = DailyFeatures(store, snapshot_from_prepared(self.data.path))
        self.features.publish(as_of=self.day_start(0))
        organic = " + ".join(t for t in c.formula.split(" + ") if "bid" not in t) or "is_click"
        server = {
            "arms": [{"name": arm, "model": str(self.model_dirs[arm].resolve()),
                      "buckets": list(buckets)}
                     for arm, (_, buckets) in c.arms().items()],
            "num_buckets": c.num_buckets,
            "store": str((out / "features.sqlite").resolve()),
            "event_log": str((out / "events.sqlite").resolve()),
            "request_log": None,
            "reload_root": str(out.resolve()),
            "ranking": {"formula": organic, "bid_formula": c.formula},
            "max_candidates": max(1000, c.candidates),
        }  # fmt: skip
        (out / "server.yaml").write_text(yaml.safe_dump(server, sort_keys=False))
        self.server_config = load_server_config(out / "server.yaml")
        self.server, self.url = start_server(out / "server.yaml", out / "server.log",
                                             {"INFNET_ADMIN_TOKEN": self.token})  # fmt: skip
        self.client = httpx.Client(timeout=30, headers={"content-type": "application/json"})
        self.updates = None
        if c.updates and not c.aa:
            self.updates = ArmUpdates(open_event_log(out / "events.sqlite"), out / "stream",
                                      self.runs, self.model_dirs, self.url, self.token,
                                      c.online_lr)  # fmt: skip
        self.log(f"server ready at {self.url}: arms {', '.join(c.arms())}")

    def day_start(self, day: int) -> int:
        from infnet.data.sources.simulator import START_MS

        return START_MS + (self.config.warmup_days + day) * DAY_MS

    def log(self, text: str) -> None:
        self.console.print(f"[dim]abtest[/dim] {text}")

    # --- the test ---------------------------------------------------------------------------
    def run(self) -> None:
        """Every day, or until the server fails; the results so far are written each night."""
        started = time.time()
        try:
            for day in range(self.config.days):
                self.run_day(day)
                self.save()
                s = self.sessions[-1]
                self.log(
                    f"day {day + 1}/{self.config.days}: {len(s):,} sessions, "
                    f"{(s['status'] != 200).sum()} failed, {time.time() - started:.0f} s"
                )
        except ServerFailed as err:
            self.stopped = str(err)
            self.log(f"[red]stopped[/red]: {err}")
        except BaseException as err:  # the report says so, then the traceback follows
            self.stopped = f"{type(err).__name__}: {err}"
            raise
        finally:
            self.timings["test_s"] = time.time() - started
            self.save()
            if self.server is not None and self.server.poll() is None:
                self.server.terminate()
                self.server.wait(30)

    def run_day(self, day: int) -> None:
        c, p = self.config, self.platform
        users, t, tab = p.arrivals()
        cands = p.retrieve(users)
        pending: list[tuple[int, int, dict]] = []  # (event_ms, tie, callback)
        tie = itertools.count()
        rng = np.random.default_rng([c.seed, day])
        rows: list[dict[str, Any]] = []
        day_started = time.time()
        for lo in range(0, len(users), CHUNK):
            hi = min(lo + CHUNK, len(users))
            self._deliver(pending, int(t[lo]))
            ranked = [
                self._rank(day, int(users[i]), int(t[i]), int(tab[i]), cands[i])
                for i in range(lo, hi)
            ]
            shown = np.stack([r["shown"] for r in ranked])
            imp, ses = p.session(users[lo:hi], t[lo:hi], tab[lo:hi], shown)
            for j, r in enumerate(ranked):
                i = lo + j
                rows.append(self._session_row(day, int(users[i]), r, imp, ses, j))
                if r["status"] != 200:
                    continue
                for task in TASKS:
                    for slot in np.flatnonzero(imp[task][j]):
                        at = int(t[i] + rng.exponential(c.label_delay_s) * 1000)
                        cb = {"request_id": r["request_id"], "item_id": str(shown[j, slot]),
                              "task": task, "value": 1.0, "event_ms": at}  # fmt: skip
                        heapq.heappush(pending, (at, next(tie), cb))
            for behaviour, task in BEHAVIOUR_LABEL.items():
                jj, slot = np.nonzero(imp[task])
                self.features.add(behaviour, [str(u) for u in users[lo:hi][jj]],
                                  [str(x) for x in shown[jj, slot]], t[lo:hi][jj])  # fmt: skip
        self._deliver(pending, None)
        rank_s = time.time() - day_started
        p.end_day(users)
        frame = pl.DataFrame(rows)
        if self.sessions:  # yesterday's sessions learn whether their user came back today
            came = np.isin(self.sessions[-1]["user"].to_numpy(), users)
            self.sessions[-1] = self.sessions[-1].with_columns(
                returned=pl.Series(came.astype(np.float64))
            )
        self.sessions.append(frame.with_columns(returned=pl.lit(float("nan"))))
        record: dict[str, Any] = {"day": day, "sessions": len(frame), "rank_s": rank_s}
        night = time.time()
        record["feature_version"] = self.features.publish(as_of=self.day_start(day + 1))
        record["features_s"] = time.time() - night
        if self.updates is not None:
            record["updates"] = self.updates.nightly(drain=day == c.days - 1)
        record["night_s"] = time.time() - night
        record["server"] = self._scrape()
        self.days.append(record)

    def _rank(self, day: int, user: int, ts: int, tab: int, cands: np.ndarray) -> dict[str, Any]:
        c = self.config
        request_id = f"d{day}-u{user}"
        body = {"request_id": request_id, "user_id": user,
                "context": {"timestamp": ts, "tab": tab}, "candidates": cands.tolist(),
                "bid": self.platform.ads.bid[cands].round(4).tolist(), "shown": c.slate}  # fmt: skip
        started = time.perf_counter()
        try:
            r = self.client.post(f"{self.url}/v1/rank", content=orjson.dumps(body))
            status, answer = r.status_code, (r.json() if r.status_code == 200 else None)
        except httpx.HTTPError as err:
            status, answer = 599, None
            self._check_server(err)
        if status == 200:
            self.failures = 0
        elif status != 599:
            self._check_server(f"HTTP {status} from /v1/rank")
        latency = (time.perf_counter() - started) * 1000
        if answer is not None:
            order = np.array([int(x["id"]) for x in answer["items"]], np.int64)
            arm = answer["arm"]
        else:  # the fallback a platform serves when ranking fails: the retrieval order
            order, arm = cands, self._arm_of(user)
        return {"request_id": request_id, "status": status, "latency_ms": latency, "arm": arm,
                "shown": order[: c.slate]}  # fmt: skip

    def _arm_of(self, user: int) -> str:
        """The arm the server routes `user` to (its own bucket hash)."""
        bucket = self.server_config.bucket(str(user))
        return next(a for a, (_, (lo, hi)) in self.config.arms().items() if lo <= bucket < hi)

    def _check_server(self, err: Exception | str) -> None:
        """After a failed call: stop when the server has died, or when MAX_FAILURES calls in
        a row failed (a server that answers nothing but errors); transient errors only
        count against the arm's stability."""
        self.failures += 1
        if self.server is not None and self.server.poll() is not None:
            raise ServerFailed(f"the server exited with status {self.server.returncode} ({err})")
        if self.failures >= MAX_FAILURES:
            raise ServerFailed(f"{MAX_FAILURES} calls in a row failed (last: {err})")

    def _deliver(self, pending: list, upto: int | None) -> None:
        due = []
        while pending and (upto is None or pending[0][0] <= upto):
            due.append(heapq.heappop(pending)[2])
        for lo in range(0, len(due), 500):
            try:
                self.client.post(f"{self.url}/v1/events",
                                 content=orjson.dumps({"events": due[lo : lo + 500]}))  # fmt: skip
            except httpx.HTTPError as err:
                self._check_server(err)

    def _session_row(self, day, user, r, imp, ses, j) -> dict[str, Any]:
        return {
            "day": day, "user": user, "arm": r["arm"], "status": r["status"],
            "latency_ms": r["latency_ms"], "impressions": int(imp["is_click"].shape[1]),
            "clicks": float(imp["is_click"][j].sum()), "e_clicks": float(imp["p_click"][j].sum()),
            "watch_s": float(imp["play_time_ms"][j].sum()) / 1000.0,
            "e_watch_s": float(imp["e_play_s"][j].sum()),
            "revenue": float(imp["revenue"][j].sum()), "e_revenue": float(imp["e_revenue"][j].sum()),
            "ads": float(imp["is_ad"][j].sum()), "survey": float(ses["survey"][j]),
            "e_survey": float(ses["e_survey"][j]), "p_return": float(ses["p_return"][j]),
            "satisfaction": float(ses["satisfaction"][j]),
        }  # fmt: skip

    def _scrape(self) -> dict[str, Any]:
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = self.client.get(f"{self.url}/metrics", timeout=10).text
        except httpx.HTTPError as err:
            self._check_server(err)
            return {}
        out: dict[str, Any] = {"latency_buckets": {}, "requests": {}}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "infnet_request_latency_seconds_bucket":
                    out["latency_buckets"].setdefault(s.labels["arm"], []).append(
                        (float(s.labels["le"]), s.value)
                    )
                elif s.name == "infnet_request_latency_seconds_sum":
                    out.setdefault("latency_sum_s", {})[s.labels["arm"]] = s.value
                elif s.name == "infnet_requests_total":
                    key = f"{s.labels['arm']}:{s.labels['status']}"
                    out["requests"][key] = s.value
                elif s.name in ("process_resident_memory_bytes", "process_cpu_seconds_total"):
                    out[s.name] = s.value
        out["at"] = time.time()
        return out

    # --- results ----------------------------------------------------------------------------
    def frame(self) -> pl.DataFrame:
        return pl.concat(self.sessions) if self.sessions else pl.DataFrame()

    def save(self) -> None:
        """sessions.parquet and days.jsonl, each written whole under a temporary name and
        renamed, so a test stopped at any point leaves the last complete night."""
        from infnet.abtest.report import write_report

        frame = self.frame()
        for name, write in (
            ("sessions.parquet", lambda p: frame.write_parquet(p)),
            (
                "days.jsonl",
                lambda p: p.write_text("".join(json.dumps(d) + "\n" for d in self.days)),
            ),
        ):
            path = self.out / name
            tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
            write(tmp)
            os.replace(tmp, path)
        if len(frame):
            write_report(self)
