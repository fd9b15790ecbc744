"""KuaiRand-Pure (Gao et al., CIKM 2022) -> RawDataset, and `infnet prepare kuairand`.

Reads the official files unchanged: the standard (and optionally random) logs of the
complete release, or the 04-25..05-08 subset; user_features_pure.csv;
video_features_basic_pure.csv; the video statistic file (the official
video_features_statistic_pure.csv, else the reconstructed one).

Features (M fields):
- item: video_id, author_id, tag (the FIRST tag of the comma list: one token per video),
  music_type, video_type, upload_type, video_duration (quantile buckets), and the 51
  video statistic columns as `stat_<column>` (quantile buckets; the statistics are the
  release's aggregates over its whole period, as in every published use of the file);
- user: every column of user_features_pure.csv: user_id, the flags, the *_range columns
  and onehot_feat0..17 as categories (-124, the release's "missing", stays a category of
  its own there), and the counts follow/fans/friend_user_num and register_days as quantile
  buckets (-124 becomes null there, so OOV, instead of the lowest bucket);
- context: tab, hour of day (hourmin // 100) and day of week, both from the official
  `date` / `hourmin` columns.

Exact duplicate log rows are removed by default (the subset holds 5,460). The subset is
split by the official `date` column: time_ms and date do not agree on one time zone (date
changes near 23:00-24:00 UTC+8, a few hundred rows per day), so a time_ms cut could not
reproduce the dates; point-in-time sequences still use time_ms.

Warm start: history_before_0425.parquet holds per-user lists (watch_seq -> click, like_seq
-> like, long_watch_seq -> long_view), oldest first. Their events are given times just
before the user's first possible log row: min(last_time_ms, log start - 1) - (L - 1 - i)
for the i-th of L items, so the list order is the recency order. They are used only when
the logs start on or after 2022-04-25 (with the complete release they would repeat events).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from infnet.data.prepare import PrepareError, prepare
from infnet.data.sources.kuairand_files import (
    HISTORY_END,
    HISTORY_FILE,
    RANDOM_LOG,
    SUBSET_LOG,
    USER_FILE,
    VARIANTS,
    VIDEO_BASIC_FILE,
    VIDEO_STAT_FILES,
    data_file,
    file_parts,
    history_events,
    log_files,
    read_logs,
)
from infnet.data.spec import BehaviourSpec, FieldSpec, RawDataset, SplitSpec, TaskSpec
from infnet.data.stats import unseen_rows
from infnet.fsutil import refuse_overlap

SUBSET_SPLIT = "2022-04-25:2022-05-04,2022-05-05:2022-05-06,2022-05-07:2022-05-08"

TASKS = {
    **{
        c: TaskSpec(c, c)
        for c in (
            "is_click",
            "is_like",
            "long_view",
            "is_follow",
            "is_comment",
            "is_forward",
            "is_profile_enter",
        )
    },
    "play_time": TaskSpec("play_time", "play_time_ms", kind="regression", transform="log1p"),
}
DEFAULT_TASKS = ("is_click", "is_like", "long_view")
BEHAVIOURS = {"click": "is_click", "like": "is_like", "long_view": "long_view"}
DEFAULT_BEHAVIOURS = ("click", "like", "long_view")
SIDE_FIELDS = ["video_id", "author_id", "tag"]
USER_COUNTS = ("follow_user_num", "fans_user_num", "friend_user_num", "register_days")
MISSING = -124  # the release's marker of a missing user feature


def parse_split(text: str) -> SplitSpec:
    """`A:B,C:D,E:F` (inclusive yyyy-mm-dd dates of train, valid, test) -> bounds on `date`."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or any(p.count(":") != 1 for p in parts):
        raise PrepareError(
            f"--split {text!r}: expected three inclusive date ranges START:END,START:END,START:END"
        )
    bounds = {}
    for name, part in zip(("train", "valid", "test"), parts, strict=True):
        try:
            lo, hi = (date.fromisoformat(d.strip()) for d in part.split(":"))
        except ValueError as err:
            raise PrepareError(
                f"--split {text!r}: {part!r} is not START:END in yyyy-mm-dd ({err})"
            ) from None

        def ymd(d: date) -> int:
            return d.year * 10000 + d.month * 100 + d.day

        bounds[name] = (ymd(lo), ymd(hi + timedelta(days=1)))  # [start, end) on date
    return SplitSpec(bounds=bounds, column="date")


def _fields(stat_columns: list[str], user_columns: list[str]) -> list[FieldSpec]:
    item = [
        FieldSpec("video_id", "item"),
        FieldSpec("author_id", "item"),
        FieldSpec("tag", "item"),
        FieldSpec("music_type", "item"),
        FieldSpec("video_type", "item"),
        FieldSpec("upload_type", "item"),
        FieldSpec("video_duration", "item", kind="quantile"),
        *[FieldSpec(f"stat_{c}", "item", column=c, kind="quantile") for c in stat_columns],
    ]
    user = [
        FieldSpec(c, "user", kind="quantile" if c in USER_COUNTS else "categorical")
        for c in user_columns
    ]
    context = [
        FieldSpec("tab", "context"),
        FieldSpec("hour", "context"),
        FieldSpec("weekday", "context"),
    ]
    return item + user + context


def build_raw(
    data_dir: str | Path,
    *,
    logs: Sequence[str] | None = None,
    with_random: bool = False,
    tasks: Sequence[str] = DEFAULT_TASKS,
    behaviours: Sequence[str] = DEFAULT_BEHAVIOURS,
    max_len: int = 50,
    warm_start: bool = True,
    keep_duplicates: bool = False,
    split: str | None = None,
    min_count: int = 1,
    variant: str = "pure",
    raw_targets: bool = False,
) -> RawDataset:
    """The KuaiRand-Pure files in `data_dir` as a RawDataset (see the module docstring)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"KuaiRand data directory not found: {data_dir}")
    unknown = [t for t in tasks if t not in TASKS] + [b for b in behaviours if b not in BEHAVIOURS]
    if unknown:
        raise PrepareError(
            f"unknown task or behaviour {unknown[0]!r} (tasks: {sorted(TASKS)}; behaviours: {sorted(BEHAVIOURS)})"
        )
    if variant not in VARIANTS:
        raise PrepareError(f"unknown KuaiRand variant {variant!r} (variants: {list(VARIANTS)})")
    files = log_files(data_dir, logs, with_random, variant)
    log = read_logs(files)
    rows_read = len(log)
    if not keep_duplicates:
        log = log.unique(maintain_order=True)
    log = log.with_columns(
        hour=pl.col("hourmin") // 100,
        weekday=pl.col("date").cast(pl.String).str.to_date("%Y%m%d").dt.weekday(),
    )

    users = pl.read_csv(
        data_file(data_dir, USER_FILE.replace("_pure", f"_{variant}")), infer_schema_length=None
    )
    users = users.with_columns(
        pl.when(pl.col(c) != MISSING).then(pl.col(c)).alias(c) for c in USER_COUNTS
    )
    basic = pl.read_csv(
        data_file(data_dir, VIDEO_BASIC_FILE.replace("_pure", f"_{variant}")),
        infer_schema_length=None,
    )
    basic = basic.with_columns(pl.col("tag").cast(pl.String).str.split(",").list.first())
    stat_path = next((data_dir / n for n in VIDEO_STAT_FILES if (data_dir / n).is_file()), None)
    if stat_path is None and variant == "pure":
        raise FileNotFoundError(
            f"KuaiRand video statistic file not found in {data_dir}: one of {list(VIDEO_STAT_FILES)}"
        )
    if variant != "pure":
        stat_files = file_parts(data_dir, f"video_features_statistic_{variant}")
        stat = pl.concat(
            [pl.read_csv(p, infer_schema_length=None) for p in stat_files], how="vertical_relaxed"
        )
    else:
        stat = pl.read_csv(stat_path, infer_schema_length=None)
    items = basic.join(stat, on="video_id", how="left", maintain_order="left")
    stat_columns = [c for c in stat.columns if c != "video_id"]

    if split is None:
        split = SUBSET_SPLIT if [f.name for f in files] == [SUBSET_LOG] else None
    split_spec = parse_split(split) if split else SplitSpec()

    stats: dict = {
        "logs": [f.name for f in files],
        "rows_read": rows_read,
        "duplicates_removed": rows_read - len(log),
    }
    ws = None
    history = data_dir / HISTORY_FILE
    if not warm_start:
        stats["warm_start"] = "off"
    elif not history.is_file():
        stats["warm_start"] = f"off: {HISTORY_FILE} not found"
    elif log["date"].min() < HISTORY_END:
        stats["warm_start"] = f"off: the logs start before {HISTORY_END}, which the histories cover"
    else:
        ws = history_events(history, behaviours, log_start=log["time_ms"].min())
        stats["warm_start"] = {b: int((ws["behaviour"] == b).sum()) for b in behaviours}

    return RawDataset(
        name=f"kuairand-{variant}",
        log=log,
        fields=[
            f
            if f.kind != "categorical"
            else FieldSpec(f.name, f.group, f.column, min_count=min_count)
            for f in _fields(stat_columns, users.columns)
        ],
        tasks=[replace(TASKS[t], standardise=not raw_targets) for t in tasks],
        users=users,
        items=items,
        behaviours=[BehaviourSpec(b, pl.col(BEHAVIOURS[b]) == 1) for b in behaviours],
        side_fields=SIDE_FIELDS if behaviours else [],
        max_len=max_len,
        split=split_spec,
        warm_start=ws,
        stats=stats,
    )


def prepare_kuairand(
    data_dir: str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    **options,
) -> dict:
    """build_raw(data_dir, **options) prepared into `out`; returns stats.json's content."""
    data_dir = Path(data_dir)
    inputs = sorted(data_dir.iterdir()) if data_dir.is_dir() else []
    refuse_overlap(Path(out), inputs)
    return prepare(
        build_raw(data_dir, **options),
        Path(out),
        overwrite=overwrite,
        progress=progress,
        inputs=inputs,
    )


def summary_table(stats: dict) -> Table:
    """Rows, users, items and label rates per split, as printed by `infnet prepare`."""
    splits = list(stats["rows"])
    table = Table(title=f"{stats['dataset']}: prepared")
    table.add_column("")
    for s in splits:
        table.add_column(s, justify="right")
    table.add_row("rows", *(f"{stats['rows'][s]:,}" for s in splits))
    table.add_row("users", *(f"{stats['users'][s]:,}" for s in splits))
    table.add_row("items", *(f"{stats['items'][s]:,}" for s in splits))
    for kind, key in (("rate", "label_rate"), ("mean", "label_mean")):
        for task in stats[key][splits[0]]:
            table.add_row(f"{task} {kind}", *(_fmt(stats[key][s][task]) for s in splits))
    for b, seq in stats.get("sequences", {}).items():
        table.add_row(f"{b} history (mean len)", *(f"{seq['mean_len'][s]:.1f}" for s in splits))
    for name, values in unseen_rows(stats):
        table.add_row(name, *values)
    return table


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def command(
    data_dir: Path = typer.Option(
        ..., "--data-dir", help="Folder with the official KuaiRand-Pure files."
    ),
    out: Path = typer.Option(..., "--out", help="Prepared dataset directory to write."),
    logs: list[str] | None = typer.Option(
        None,
        "--logs",
        help="Log file name or glob (repeatable). Default: the 04-25..05-08 subset if present, else the official standard logs.",
    ),
    with_random: bool = typer.Option(False, "--with-random", help=f"Add {RANDOM_LOG}."),
    tasks: str = typer.Option(
        ",".join(DEFAULT_TASKS), "--tasks", help=f"Comma list of {', '.join(TASKS)}."
    ),
    behaviours: str = typer.Option(
        ",".join(DEFAULT_BEHAVIOURS), "--behaviours", help=f"Comma list of {', '.join(BEHAVIOURS)}."
    ),
    max_len: int = typer.Option(
        50, "--max-len", min=1, help="Most recent events per behaviour sequence."
    ),
    warm_start: bool = typer.Option(
        True, "--warm-start/--no-warm-start", help=f"Prepend the histories of {HISTORY_FILE}."
    ),
    keep_duplicates: bool = typer.Option(
        False, "--keep-duplicates", help="Keep exact duplicate log rows."
    ),
    split: str | None = typer.Option(
        None,
        "--split",
        help=f"Inclusive dates train,valid,test, e.g. {SUBSET_SPLIT} (the subset's default); default for other logs: 70/15/15 by time.",
    ),
    min_count: int = typer.Option(
        1, "--min-count", min=1, help="Train occurrences a category needs; rarer ones map to OOV."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
    variant: str = typer.Option(
        "pure",
        "--variant",
        help="pure, 1k or 27k: which release's file names (*_pure.csv, *_1k.csv, *_27k[_partN].csv).",
    ),
    raw_targets: bool = typer.Option(
        False,
        "--raw-targets",
        help="Learn regression tasks (play_time) on their raw scale, not standardised with the train split's mean and std (to compare).",
    ),
) -> None:
    """Prepare KuaiRand-Pure (official files, or the 04-25..05-08 subset) into OUT."""
    console = Console()
    try:
        stats = prepare_kuairand(
            data_dir,
            out,
            overwrite=overwrite,
            logs=logs,
            with_random=with_random,
            tasks=[t.strip() for t in tasks.split(",") if t.strip()],
            behaviours=[b.strip() for b in behaviours.split(",") if b.strip()],
            max_len=max_len,
            warm_start=warm_start,
            keep_duplicates=keep_duplicates,
            split=split,
            min_count=min_count,
            variant=variant,
            raw_targets=raw_targets,
        )
    except (PrepareError, FileNotFoundError, FileExistsError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    console.print(summary_table(stats))
    src = stats["source"]
    console.print(
        f"logs: {', '.join(src['logs'])}; rows read {src['rows_read']:,}; duplicates removed {src['duplicates_removed']:,}"
    )
    unjoined = ", ".join(
        f"{k} {v['rows']:,} rows ({v['ids']:,} ids)" for k, v in stats["unjoined"].items()
    )
    warm = src["warm_start"]
    if isinstance(warm, dict):  # events per behaviour
        warm = ", ".join(f"{b} {n:,} events" for b, n in warm.items())
    console.print(
        f"unjoined ids: {unjoined or 'none'}; warm start: {warm}; written to {out} in "
        f"{stats['seconds']:.1f}s"
    )
