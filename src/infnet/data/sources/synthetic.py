"""`infnet prepare synthetic`: the simulator's world (simulator.py) as a dataset source, its
fields, tasks, oracles and behaviours, simulated into Parquet parts and prepared.

Two platforms share the world: `feed` (simulator.py: one impression per active user per
round, KuaiRand's three tasks and play_time) and `ads` (ad_platform.py: daily sessions of
8-item slates shown in a random order, with ads, bids, revenue and next-day retention).
The tasks `revenue` (bid x click, regression) and `retention` (the user returns the next
day) exist on the ad platform only, so asking for them selects it; `click` and
`watch_time` name `is_click` and `play_time`, the ad system's words for them."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from infnet.data.prepare import prepare
from infnet.data.sources.ad_platform import Platform, ad_items_frame, random_ranker, simulate_days
from infnet.data.sources.simulator import (
    DEFAULT_TASKS,
    TASKS,
    World,
    items_frame,
    simulate,
    users_frame,
)
from infnet.data.spec import BehaviourSpec, FieldSpec, RawDataset, TaskSpec
from infnet.data.stats import unseen_rows
from infnet.fsutil import temporary_beside

FIELDS = [
    FieldSpec("video_id", "item"),
    FieldSpec("author_id", "item"),
    FieldSpec("tag", "item"),
    FieldSpec("video_type", "item"),
    FieldSpec("video_duration", "item", kind="quantile"),
    FieldSpec("user_id", "user"),
    FieldSpec("user_active_degree", "user"),
    FieldSpec("gender", "user"),
    FieldSpec("age_range", "user"),
    FieldSpec("is_lowactive_period", "user"),
    FieldSpec("is_video_author", "user"),
    FieldSpec("follow_user_num", "user", kind="log"),
    FieldSpec("fans_user_num", "user", kind="log"),
    FieldSpec("register_days", "user", kind="quantile"),
    FieldSpec("onehot_feat0", "user"),
    FieldSpec("onehot_feat1", "user"),
    FieldSpec("onehot_feat2", "user"),
    FieldSpec("tab", "context"),
    FieldSpec("hour", "context"),
    FieldSpec("weekday", "context"),
]
AD_FIELDS = [FieldSpec("ad_bid", "item", kind="quantile")]
TASK_SPECS = {
    "is_click": TaskSpec("is_click", "is_click"),
    "is_like": TaskSpec("is_like", "is_like"),
    "long_view": TaskSpec("long_view", "long_view"),
    "play_time": TaskSpec("play_time", "play_time_ms", kind="regression", transform="log1p"),
    "revenue": TaskSpec("revenue", "revenue", kind="regression"),
    "retention": TaskSpec("retention", "retention"),
}
ALIASES = {"click": "is_click", "watch_time": "play_time"}
ORACLE = {
    "is_click": "p_click",
    "is_like": "p_like",
    "long_view": "p_long_view",
    "play_time": "e_play_time",
    "revenue": "e_revenue",
    "retention": "p_return",
}
PLATFORMS = ("auto", "feed", "ads")
SLATE = 8  # items per session on the ad platform's logged sessions
BEHAVIOURS = [
    BehaviourSpec("click", pl.col("is_click") == 1),
    BehaviourSpec("like", pl.col("is_like") == 1),
    BehaviourSpec("long_view", pl.col("long_view") == 1),
]


def resolve_tasks(tasks: Sequence[str], platform: str = "auto") -> tuple[list[str], str]:
    """Task names (aliases resolved) and the platform they are simulated on."""
    names = [ALIASES.get(t, t) for t in tasks]
    unknown = [t for t in tasks if ALIASES.get(t, t) not in TASK_SPECS]
    if unknown or not names:
        raise ValueError(
            f"synthetic: unknown tasks {unknown or list(tasks)} (choose from "
            f"{list(TASK_SPECS)}; {', '.join(f'{a} = {t}' for a, t in ALIASES.items())})"
        )
    if platform not in PLATFORMS:
        raise ValueError(
            f"synthetic: unknown platform {platform!r} (choose from {list(PLATFORMS)})"
        )
    ads = [t for t in names if t not in TASKS]  # the feed simulates simulator.TASKS
    if platform == "auto":
        platform = "ads" if ads else "feed"
    if platform == "feed" and ads:
        raise ValueError(f"synthetic: tasks {ads} exist on the ad platform only (platform ads)")
    return names, platform


def draw_world(users: int, items: int, seed: int) -> tuple[World, list[np.random.Generator]]:
    """The world of `seed` and the generators of the users' features, the feed's log and
    the ad platform (a fourth child of the seed, so the feed's draws stay as they were)."""
    world_rng, *rngs = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    return World.draw(users, items, world_rng), rngs


def ad_log(platform: Platform, rows: int) -> Iterator[pl.DataFrame]:
    """`rows` impressions of the ad platform under the random logging policy, a day a
    frame (the days run until the rows are reached, every row's retention known)."""
    done = 0
    for frame in simulate_days(platform, 1 << 30, random_ranker(platform.rng)):
        yield frame.head(rows - done)
        done += min(len(frame), rows - done)
        if done >= rows:
            return


def raw_dataset(
    world: World,
    log: pl.DataFrame | pl.LazyFrame,
    users: pl.DataFrame,
    tasks: Sequence[str],
    max_len: int,
    stats: dict,
    ads: Platform | None = None,
) -> RawDataset:
    """The simulated log with its fields, tasks, oracles and behaviours (with an ad
    platform, its items' bids too)."""
    items = items_frame(world)
    fields = list(FIELDS)
    if ads is not None:
        items = ad_items_frame(items, ads)
        fields += AD_FIELDS
    return RawDataset(
        name="synthetic",
        log=log,
        fields=fields,
        tasks=[TASK_SPECS[t] for t in tasks],
        users=users,
        items=items,
        behaviours=list(BEHAVIOURS),
        side_fields=["video_id", "author_id", "tag"],
        max_len=max_len,
        oracle={t: ORACLE[t] for t in tasks},
        stats={"simulator": stats},
    )


def build_raw(
    rows: int,
    users: int,
    items: int,
    seed: int,
    *,
    max_len: int = 50,
    workdir: str | Path | None = None,
    chunk_rows: int = 1_000_000,
    tasks: Sequence[str] = DEFAULT_TASKS,
    platform: str = "auto",
) -> RawDataset:
    """Simulate `rows` impressions of `users` users over `items` items.

    With a `workdir` the log is written there in Parquet parts of about `chunk_rows` rows
    and handed on as a lazy scan (memory stays O(users + chunk_rows)); without one it is
    kept in memory."""
    for name, value in (
        ("rows", rows),
        ("users", users),
        ("items", items),
        ("chunk_rows", chunk_rows),
        ("max_len", max_len),
    ):
        if value < 1:
            raise ValueError(f"synthetic: {name} must be at least 1, got {value}")
    tasks, platform = resolve_tasks(tasks, platform)
    world, (user_rng, sim_rng, ad_rng) = draw_world(users, items, seed)
    if workdir is not None:
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        if any(workdir.glob("part-*.parquet")):
            raise FileExistsError(f"synthetic: work directory {workdir} already holds part files")
    chunk: list[pl.DataFrame] = []
    parts = 0

    def flush() -> None:
        nonlocal chunk, parts
        pl.concat(chunk).write_parquet(workdir / f"part-{parts:05d}.parquet")
        chunk, parts = [], parts + 1

    buffered = 0
    ads = Platform(world, ad_rng, candidates=SLATE, slate=SLATE) if platform == "ads" else None
    frames = simulate(world, rows, sim_rng) if ads is None else ad_log(ads, rows)
    for frame in frames:
        chunk.append(frame)
        buffered += len(frame)
        if workdir is not None and buffered >= chunk_rows:
            flush()
            buffered = 0
    if workdir is not None and chunk:
        flush()
    log = pl.scan_parquet(workdir / "part-*.parquet") if workdir is not None else pl.concat(chunk)
    stats = {
        "seed": seed,
        "platform": platform,
        "rows": rows,
        "users": users,
        "items": items,
        "tags": len(world.tag_emb),
        "authors": len(world.author_appeal),
    }
    return raw_dataset(world, log, users_frame(world, user_rng), tasks, max_len, stats, ads)


def prepare_synthetic(
    out: str | Path,
    *,
    rows: int = 200_000,
    users: int = 5_000,
    items: int = 2_000,
    seed: int = 0,
    max_len: int = 50,
    tasks: Sequence[str] = DEFAULT_TASKS,
    platform: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Simulate into Parquet parts beside `out`, prepare them into `out`; returns stats."""
    out = Path(out)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"{out} exists and is not empty; pass overwrite=True (--overwrite) to replace it"
        )
    workdir = temporary_beside(out, "synthetic")
    try:
        raw = build_raw(rows, users, items, seed, max_len=max_len, workdir=workdir, tasks=tasks,
                        platform=platform)  # fmt: skip
        return prepare(raw, out, overwrite=overwrite, progress=progress)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def summary_table(stats: dict) -> Table:
    """Per split: rows, users, items, label rates (means for regression), oracle AUCs."""
    splits = list(stats["rows"])
    table = Table(title=f"{stats['dataset']}: prepared")
    table.add_column("")
    for s in splits:
        table.add_column(s, justify="right")
    table.add_row("rows", *[f"{stats['rows'][s]:,}" for s in splits])
    table.add_row("users", *[f"{stats['users'][s]:,}" for s in splits])
    table.add_row("items", *[f"{stats['items'][s]:,}" for s in splits])
    for key, what in (("label_rate", "rate"), ("label_mean", "mean"), ("oracle_auc", "oracle AUC")):
        for task in stats.get(key, {}).get(splits[0], {}):
            values = [stats[key][s][task] for s in splits]
            table.add_row(f"{task} {what}", *["-" if v is None else f"{v:.4f}" for v in values])
    for name, values in unseen_rows(stats):
        table.add_row(name, *values)
    return table


def command(
    out: Path = typer.Option(..., "--out", help="Prepared dataset directory to write."),
    rows: int = typer.Option(200_000, "--rows", help="Impressions to simulate."),
    users: int = typer.Option(5_000, "--users", help="Number of users."),
    items: int = typer.Option(2_000, "--items", help="Number of items (videos)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same data."),
    max_len: int = typer.Option(50, "--max-len", help="Behaviour sequence length n."),
    tasks: str = typer.Option(
        ",".join(DEFAULT_TASKS),
        "--tasks",
        help=f"Comma-separated tasks among {', '.join(TASK_SPECS)} (click = is_click, "
        "watch_time = play_time); revenue and retention select the ad platform.",
    ),
    platform: str = typer.Option(
        "auto",
        "--platform",
        help="feed (one impression a round), ads (daily sessions of 8-item slates with ads, "
        "bids and next-day retention) or auto (ads when the tasks need it).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
) -> None:
    """Simulate KuaiRand-shaped exposures whose true label probabilities are known, and
    prepare them (the latent model is documented in infnet.data.sources.synthetic)."""
    console = Console()
    try:
        stats = prepare_synthetic(
            out,
            rows=rows,
            users=users,
            items=items,
            seed=seed,
            max_len=max_len,
            tasks=[t.strip() for t in tasks.split(",") if t.strip()],
            platform=platform,
            overwrite=overwrite,
        )
    except (ValueError, FileExistsError) as err:
        Console(stderr=True).print(f"[red]error:[/red] {err}")
        raise typer.Exit(1) from None
    console.print(summary_table(stats))
    console.print(
        f"users {stats['users']['all']:,}, items {stats['items']['all']:,}; written to {out}"
    )
