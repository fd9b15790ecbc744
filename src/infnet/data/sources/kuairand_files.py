"""The official KuaiRand files: their names per variant, the logs (standard, random, the
04-25..05-08 subset) read and stacked, and the warm-start histories as dated events."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from infnet.data.prepare import PrepareError

SUBSET_LOG = "log_standard_0425_to_0508_pure.subset.csv"


STANDARD_LOGS = ("log_standard_4_08_to_4_21_pure.csv", "log_standard_4_22_to_5_08_pure.csv")


RANDOM_LOG = "log_random_4_22_to_5_08_pure.csv"


USER_FILE = "user_features_pure.csv"


VIDEO_BASIC_FILE = "video_features_basic_pure.csv"


VIDEO_STAT_FILES = (
    "video_features_statistic_pure.csv",
    "video_features_statistic_pure.reconstructed.csv",
)


# KuaiRand-1K / -27K: the same columns under *_1k.csv / *_27k.csv names; 27K's standard
# logs and statistic file come in parts (*_27k_part1.csv, ...), read as one table each.
VARIANTS = ("pure", "1k", "27k")


HISTORY_FILE = "history_before_0425.parquet"


HISTORY_END = 20220425  # the warm-start histories hold the days before this date


LOG_COLUMNS = (
    "user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like", "is_follow",
    "is_comment", "is_forward", "is_hate", "long_view", "play_time_ms", "duration_ms",
    "profile_stay_time", "comment_stay_time", "is_profile_enter", "is_rand", "tab",
)  # fmt: skip


WARM_START_LISTS = {"click": "watch_seq", "like": "like_seq", "long_view": "long_watch_seq"}


def data_file(data_dir: Path, name: str) -> Path:
    path = data_dir / name
    if not path.is_file():
        raise FileNotFoundError(f"KuaiRand file not found: {path}")
    return path


def file_parts(data_dir: Path, stem: str) -> list[Path]:
    """<stem>.csv, or its parts <stem>_part*.csv (KuaiRand-27K)."""
    files = sorted(data_dir.glob(f"{stem}.csv")) or sorted(data_dir.glob(f"{stem}_part*.csv"))
    if not files:
        raise FileNotFoundError(
            f"KuaiRand file not found: {data_dir / stem}.csv (or {stem}_part*.csv)"
        )
    return files


def log_files(
    data_dir: Path, logs: Sequence[str] | None, with_random: bool, variant: str = "pure"
) -> list[Path]:
    if variant != "pure" and not logs:
        files = [
            p
            for n in STANDARD_LOGS
            for p in file_parts(data_dir, n.replace("_pure.csv", f"_{variant}"))
        ]
        if with_random:
            files.append(data_file(data_dir, RANDOM_LOG.replace("_pure", f"_{variant}")))
        return files
    if logs:
        files = []
        for pattern in logs:
            full = pattern if Path(pattern).is_absolute() else str(data_dir / pattern)
            found = sorted(Path(p) for p in glob.glob(full))
            if not found:
                raise FileNotFoundError(f"--logs {pattern!r}: no file matches {full}")
            files += found
    elif (data_dir / SUBSET_LOG).is_file():
        files = [data_dir / SUBSET_LOG]
    else:
        files = [data_file(data_dir, n) for n in STANDARD_LOGS]
    if with_random:
        files.append(data_file(data_dir, RANDOM_LOG))
    return list(dict.fromkeys(files))


def read_logs(files: list[Path]) -> pl.DataFrame:
    frames = []
    for path in files:
        header = pl.scan_csv(path, n_rows=0).collect_schema().names()
        missing = [c for c in LOG_COLUMNS if c not in header]
        if missing:
            raise PrepareError(
                f"{path}: column {missing[0]!r} not found (a KuaiRand log has {list(LOG_COLUMNS)})"
            )
        frames.append(
            pl.scan_csv(path, schema_overrides={c: pl.Int64 for c in LOG_COLUMNS}).select(
                LOG_COLUMNS
            )
        )
    return pl.concat(frames).collect()


def history_events(path: Path, behaviours: Sequence[str], log_start: int) -> pl.DataFrame:
    """user_id, behaviour, video_id, time_ms of the histories' events (see module docstring)."""
    h = pl.read_parquet(path)
    missing = [
        c
        for c in ["user_id", "last_time_ms", *(WARM_START_LISTS[b] for b in behaviours)]
        if c not in h.columns
    ]
    if missing:
        raise PrepareError(f"{path}: column {missing[0]!r} not found")
    last = pl.min_horizontal(pl.col("last_time_ms").fill_null(log_start - 1), pl.lit(log_start - 1))
    frames = []
    for b in behaviours:
        lists = pl.col(WARM_START_LISTS[b])
        frames.append(
            h.select(
                "user_id",
                pl.lit(b).alias("behaviour"),
                lists.alias("video_id"),
                pl.int_ranges(lists.list.len().cast(pl.Int64) - 1, -1, -1).alias(
                    "age"
                ),  # L-1-i: 0 = newest
                last.alias("last"),
            )
            .explode(["video_id", "age"])
            .drop_nulls("video_id")
            .select(
                "user_id",
                "behaviour",
                "video_id",
                (pl.col("last") - pl.col("age")).alias("time_ms"),
            )
        )
    return pl.concat(frames)
