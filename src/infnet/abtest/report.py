"""The A/B test's report: business lifts with intervals, p-values and the truth, the weekly
trend with stability (source document 4.3.2), system metrics per arm, the guards.

Metrics are ratios of per-user sums over the test's users (stats.py), each beside its
truth: the same ratio with every drawn outcome replaced by its true expectation (the
simulator's p_click, expected watch time and revenue, p_return, expected survey answer) on
the very sessions the arms served. The truth is free of the outcome noise, not of which
users came and what was retrieved, so it is the lift a perfect measurement of this
traffic would give.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from infnet.abtest import stats
from infnet.experiments import figures
from infnet.experiments.report import Report, fmt, fmt_p

# name, outcome, denominator (None: per user), truth of the outcome, source document's lift
METRICS: list[tuple[str, str, str | None, str, float | None]] = [
    ("CTR", "clicks", "impressions", "e_clicks", 0.0123),
    ("watch time per user (s)", "watch_s", None, "e_watch_s", 0.0263),
    ("revenue per user", "revenue", None, "e_revenue", 0.0159),
    ("next-day retention", "returned", "has_next", "e_returned", 0.0085),
    ("satisfaction (1-5)", "survey", "surveyed", "e_survey", 0.0238),
]
WEEKLY = ("CTR", "revenue per user", "next-day retention")


def per_user(sessions: pl.DataFrame) -> pl.DataFrame:
    """One row per (user, arm): the sums the metrics are ratios of."""
    has_next = pl.col("returned").is_not_nan()
    surveyed = pl.col("survey").is_not_nan()
    return (
        sessions.with_columns(
            has_next=has_next.cast(pl.Float64),
            surveyed=surveyed.cast(pl.Float64),
            returned=pl.when(has_next).then(pl.col("returned")).otherwise(0.0),
            e_returned=pl.when(has_next).then(pl.col("p_return")).otherwise(0.0),
            survey=pl.when(surveyed).then(pl.col("survey")).otherwise(0.0),
            e_survey=pl.when(surveyed).then(pl.col("e_survey")).otherwise(0.0),
        )
        .group_by("user", "arm")
        .agg(
            pl.col(c).sum()
            for c in (
                "impressions",
                "clicks",
                "e_clicks",
                "watch_s",
                "e_watch_s",
                "revenue",
                "e_revenue",
                "returned",
                "e_returned",
                "has_next",
                "survey",
                "e_survey",
                "surveyed",
            )
        )  # fmt: skip
        .sort("user")
    )


def _estimate(users: pl.DataFrame, x: str, y: str | None) -> stats.Estimate:
    num = users[x].to_numpy()
    return stats.ratio(num, np.ones_like(num) if y is None else users[y].to_numpy())


def lifts(sessions: pl.DataFrame, arms: tuple[str, str] = ("control", "treatment")) -> dict:
    """metric -> the measured lift, the true lift and the MDE."""
    users = per_user(sessions)
    by_arm = {a: users.filter(pl.col("arm") == a) for a in arms}
    out = {}
    for name, x, y, truth, _ in METRICS:
        c, t = (_estimate(by_arm[a], x, y) for a in arms)
        tc, tt = (_estimate(by_arm[a], truth, y) for a in arms)
        out[name] = {
            "lift": stats.lift(t, c),
            "truth": tt.value / tc.value - 1 if tc.value else float("nan"),
            "mde": stats.minimum_detectable_effect(c, t.units),
            "users": (c.units, t.units),
        }
    return out


def _pct(v: float, digits: int = 2) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{100 * v:+.{digits}f}%"


def _ci(ci: tuple[float, float]) -> str:
    return f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]%"


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """A quantile of a Prometheus histogram (cumulative counts by upper bound), linear
    within its bucket, as histogram_quantile does; in ms."""
    buckets = sorted(buckets)
    total = buckets[-1][1]
    if total <= 0:
        return float("nan")
    rank, lo_bound, lo_count = q * total, 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if not np.isfinite(bound):
                return 1000 * lo_bound
            width = count - lo_count
            return 1000 * (
                lo_bound + (bound - lo_bound) * ((rank - lo_count) / width if width else 1)
            )
        lo_bound, lo_count = bound, count
    return float("nan")


def write_report(test: Any) -> None:
    """The report of an `run.ABTest` (what it measured so far, when it stopped early)."""
    c = test.config
    sessions = test.frame()
    days_run = int(sessions["day"].max()) + 1
    arms = ("control", "treatment")
    models = {a: m for a, (m, _) in c.arms().items()}
    title = "A/A test" if c.aa else f"A/B test: {models['treatment']} against {models['control']}"
    report = Report(f"infnet abtest: {title} on the simulated ad platform")
    measured = lifts(sessions)
    results: dict[str, Any] = {"config": c.model_dump(), "days_run": days_run,
                               "stopped": test.stopped, "timings": test.timings}  # fmt: skip

    s = report.section("Settings and evidence")
    stop = (f"**Stopped early after {days_run} of {c.days} days: {test.stopped}.** The figures "
            "below are what was measured until then." if test.stopped else
            f"All {c.days} days ran.")  # fmt: skip
    n_users = {a: measured["CTR"]["users"][i] for i, a in enumerate(arms)}
    offline = "; ".join(
        f"{a} MTL-AUC {fmt(test.offline[a].get('mtl_auc'))} (click AUC "
        f"{fmt(test.offline[a].get('is_click', {}).get('auc'))})"
        for a in arms
    )
    updates = (
        "none (A/A)"
        if c.aa
        else "nightly, each arm's from its own traffic"
        if c.updates
        else "none"
    )
    s.text(
        f"{stop}\n\n"
        f"- Platform: {c.users:,} users, {c.items:,} items (15% ads, bids per click"
        f"{' with conversions' if c.conversion else ''}), `data/sources/ad_platform.py`; seed {c.seed}.\n"
        f"- Warm-up: {c.warmup_days} days of random slates ({test.data.num_rows('train'):,} train rows), "
        f"each arm's model trained for up to {c.epochs} epoch(s) on it (batch 1024).\n"
        f"- Arms by user-hash bucket: control = `{models['control']}` buckets "
        f"{c.arms()['control'][1]}, treatment = `{models['treatment']}` buckets {c.arms()['treatment'][1]} "
        f"of {c.num_buckets}; users seen: {n_users['control']:,} / {n_users['treatment']:,}.\n"
        f"- Each session: {c.candidates} retrieved candidates ranked by `{c.formula}`, the top "
        f"{c.slate} shown; {len(sessions):,} sessions over {days_run} days; labels called back after "
        f"{c.label_delay_s:g} s on average.\n"
        f"- Model updates: {updates}; "
        "features refreshed nightly.\n"
        f"- Offline, on the warm-up's test split (its last days): {offline}.\n"
        "- Intervals: 95%, delta method with users as units; p: two-sided z-test of the difference."
    )

    s = report.section("Business metrics (source document 4.3.1)")
    rows = []
    for name, *_, source in METRICS:
        m = measured[name]
        lift: stats.Lift = m["lift"]
        rows.append([name, fmt(lift.control), fmt(lift.treatment), fmt(lift.absolute),
                     _pct(lift.relative), _ci(lift.relative_ci), fmt_p(lift.p),
                     _pct(m["truth"]), _pct(m["mde"]), _pct(source)])  # fmt: skip
    s.table(["metric", "control", "treatment", "absolute lift", "relative lift", "95% CI",
             "p", "true lift", "MDE", "source document"], rows,
            caption="Treatment against control over the whole test")  # fmt: skip
    s.text(
        "The true lift is the same ratio computed from the simulator's true expectations on "
        "the served sessions: a measured lift whose interval holds it is right. The MDE is "
        "the relative lift these arm sizes detect with power 0.8 at alpha 0.05. The source "
        "document's lifts are INFNet against Kuaishou's production model on live traffic; "
        "this platform, its models and its users are simulated, so only the method compares."
    )
    results["lifts"] = measured

    s = report.section("30-day trend (source document 4.3.2)")
    weekly, week_rows = [], []
    for w in range(-(-days_run // 7)):
        part = sessions.filter((pl.col("day") // 7) == w)
        m = lifts(part)
        stability = {
            a: float((part.filter(pl.col("arm") == a)["status"] == 200).mean()) for a in arms
        }
        week_rows.append([f"week {w + 1} (days {7 * w + 1}-{min(7 * w + 7, days_run)})",
                          *[f"{_pct(m[k]['lift'].relative)} (p {fmt_p(m[k]['lift'].p)}; true {_pct(m[k]['truth'])})"
                            for k in WEEKLY],
                          *[f"{100 * stability[a]:.2f}%" for a in arms]])  # fmt: skip
        weekly.append({"week": w + 1, "lifts": m, "stability": stability})
    s.table(["period", *WEEKLY, "stability control", "stability treatment"], week_rows,
            caption="Relative lift per week; stability: the share of ranking requests served "
            "without error")  # fmt: skip
    results["weekly"] = weekly
    daily = [lifts(sessions.filter(pl.col("day") == d)) for d in range(days_run)]
    path = figures.bands(
        list(range(1, days_run + 1)),
        {name: ([100 * d[name]["lift"].relative for d in daily],
                [100 * d[name]["lift"].relative_ci[0] for d in daily],
                [100 * d[name]["lift"].relative_ci[1] for d in daily],
                [100 * d[name]["truth"] for d in daily]) for name, *_ in METRICS},
        "day", "relative lift (%)", test.out / "figures" / "trend.png",
    )  # fmt: skip
    s.figure(
        path, "Daily relative lift per metric, its 95% interval (band) and the true lift (dashed)"
    )

    s = report.section("System metrics per arm")
    system = _system(test, sessions)
    s.table(["arm", "model", "requests", "errors", "QPS (offered)", "client p50 / p99 ms",
             "server p50 / p99 ms", "server busy", "model file MB"],
            [[a, models[a], *system[a]["row"]] for a in arms],
            caption="From the server's /metrics (its latency histogram per arm, bucketed) and "
            "the client's own timings")  # fmt: skip
    shared = system["process"]
    s.text(
        f"Both arms share one server process: resident memory {shared['rss_mb']:.0f} MB at the "
        f"end, CPU {100 * shared['cpu_share']:.0f}% of one core over the test "
        f"({shared['cpu_s']:.0f} s). QPS is the rate this sequential client offered, not the "
        "server's capacity (benchmarks/serving.py measures that). Server busy: the sum of the "
        "arm's request latencies over the test's ranking time."
    )
    results["system"] = system

    if test.updates is not None:
        s = report.section("Model updates (streaming, each arm from its own traffic)")
        counts = {a: {} for a in arms}
        for d in test.days:
            for a in arms:
                result = d.get("updates", {}).get(a, {}).get("result")
                if result:
                    counts[a][result] = counts[a].get(result, 0) + 1
        s.table(["arm", "published", "refused", "not judged"],
                [[a, str(counts[a].get("published", 0)), str(counts[a].get("refused", 0)),
                  str(counts[a].get("not_judged", 0))] for a in arms])  # fmt: skip
        results["updates"] = counts

    s = report.section("Guards")
    shares = [b - a for _, (a, b) in (c.arms()[x] for x in arms)]
    srm = stats.sample_ratio_mismatch([n_users[a] for a in arms], shares)
    s.text(
        f"- Sample-ratio mismatch: {n_users['control']:,} against {n_users['treatment']:,} users "
        f"for bucket shares {shares[0]}:{shares[1]}, chi-square p = {fmt_p(srm)}"
        f"{' (**the split is broken: do not trust the lifts**)' if srm < 0.001 else ' (no mismatch)'}."
    )
    results["srm_p"] = srm
    if c.aa:
        users = per_user(sessions)
        keys = users["user"].cast(pl.String).to_list()
        fpr = {}
        for name, x, y, _, _ in METRICS:
            num = users[x].to_numpy()
            den = np.ones_like(num) if y is None else users[y].to_numpy()
            fpr[name] = stats.aa_false_positive_rate(keys, num, den)[0]
        s.table(["metric", "false-positive rate at p < 0.05"],
                [[k, f"{100 * v:.1f}%"] for k, v in fpr.items()],
                caption="A/A: the test's users split again by 200 seeded hashes")  # fmt: skip
        s.text("Both arms served the same model, so every split is an A/A test: a calibrated "
               "test rejects about 5% of them.")  # fmt: skip
        results["aa_false_positive_rate"] = fpr
    report.write(test.out, results)


def _system(test: Any, sessions: pl.DataFrame) -> dict[str, Any]:
    scrapes = [d["server"] for d in test.days if d.get("server")]
    last = scrapes[-1] if scrapes else {}
    rank_s = sum(d["rank_s"] for d in test.days) or float("nan")
    out: dict[str, Any] = {}
    for arm in ("control", "treatment"):
        part = sessions.filter(pl.col("arm") == arm)
        latency = part.filter(pl.col("status") == 200)["latency_ms"].to_numpy()
        buckets = last.get("latency_buckets", {}).get(arm, [])
        served = sum(v for k, v in last.get("requests", {}).items() if k.startswith(f"{arm}:"))
        onnx = test.model_dirs[arm] / "model.onnx"
        p50, p99 = (np.percentile(latency, q) if len(latency) else float("nan") for q in (50, 99))
        out[arm] = {
            "requests": len(part),
            "errors": int((part["status"] != 200).sum()),
            "qps": len(part) / rank_s,
            "client_p50_ms": p50,
            "client_p99_ms": p99,
            "server_p50_ms": _quantile(buckets, 0.5) if buckets else float("nan"),
            "server_p99_ms": _quantile(buckets, 0.99) if buckets else float("nan"),
            "server_requests": served,
            "busy": last.get("latency_sum_s", {}).get(arm, float("nan")) / rank_s,
            "model_mb": onnx.stat().st_size / 2**20 if onnx.is_file() else float("nan"),
        }
        o = out[arm]
        o["row"] = [f"{o['requests']:,}", str(o["errors"]), f"{o['qps']:.1f}",
                    f"{p50:.1f} / {p99:.1f}", f"{o['server_p50_ms']:.1f} / {o['server_p99_ms']:.1f}",
                    f"{100 * o['busy']:.0f}%", f"{o['model_mb']:.2f}"]  # fmt: skip
    cpu = [x["process_cpu_seconds_total"] for x in scrapes if "process_cpu_seconds_total" in x]
    at = [x["at"] for x in scrapes if "process_cpu_seconds_total" in x]
    out["process"] = {
        "rss_mb": last.get("process_resident_memory_bytes", float("nan")) / 2**20,
        "cpu_s": cpu[-1] if cpu else float("nan"),
        "cpu_share": (cpu[-1] - cpu[0]) / (at[-1] - at[0]) if len(cpu) > 1 else float("nan"),
    }
    return out
