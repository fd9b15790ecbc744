"""The declarative source: a dataset described in one YAML file, prepared without code.

    name: my-shop
    inputs:   {log: {path: "logs/*.csv"}, users: {path: users.parquet}, items: {...}}
    user_key: user_id          item_key: item_id
    time:     {column: ts, unit: auto}             # s / ms / us / ns / datetime / auto
    columns:  {item_id: {type: categorical, min_count: 2},
               price:   {type: numeric, buckets: log},
               genres:  {type: multi_categorical, separator: "|", max_values: 3}}
    sequences: {side_fields: [item_id], max_len: 50,
                behaviours: {bought: {condition: "buy == 1"},             # from the log
                             viewed: {column: hist_items, separator: "|"}}} # pre-built
    tasks:    {buy: {kind: binary, column: buy}, spend: {kind: regression, column: amount, transform: log1p}}
    split:    {ratios: [0.7, 0.15, 0.15]}          # or {valid_start:, test_start:} or {column:}

The YAML is checked by strict pydantic models (an unknown key, column type or task kind
is an error naming it), then `build_raw` turns the files into a `RawDataset` and
`prepare` does the rest, so a YAML dataset gets the same point-in-time sequences, time
split and vocabularies as the built-in ones. Text files are read as strings; numeric
columns and labels are parsed here, and values that do not parse are counted per column
in stats.json and mapped to OOV (a missing label) or dropped, as `on_unparseable` says.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import typer

from infnet.config import ConfigError
from infnet.data.prepare import PrepareError, prepare
from infnet.data.sources.condition import parse_condition
from infnet.data.sources.table_config import (
    SPLIT_CODE,
    TIME_MS,
    Binary,
    Categorical,
    Input,
    MultiCategorical,
    Numeric,
    Policy,
    TableConfig,
    input_files,
    load_config,
    ms,
    read_inputs,
)
from infnet.data.sources.table_values import first_values, history, is_numeric_text, number, time_ms
from infnet.data.spec import BehaviourSpec, FieldSpec, RawDataset, SplitSpec, TaskSpec
from infnet.data.stats import unseen_line
from infnet.fsutil import refuse_overlap


# --- RawDataset ------------------------------------------------------------------------------
def build_raw(cfg: TableConfig, frames: dict[str, pl.DataFrame]) -> RawDataset:
    """The frames read from the YAML's inputs (`read_inputs`) as a RawDataset."""
    log = frames["log"]
    stats: dict = {"rows_read": len(log), "unparseable": {}, "on_unparseable": cfg.on_unparseable}
    if cfg.dedupe:
        log = log.unique(maintain_order=True)
        stats["duplicates_removed"] = stats["rows_read"] - len(log)
    tables: dict[str, pl.DataFrame] = {}
    for name, key in (("users", cfg.user_key), ("items", cfg.item_key)):
        if name in frames:
            spec: Input = getattr(cfg.inputs, name)
            src = spec.key or key
            if src not in frames[name].columns:
                raise ConfigError(
                    f"inputs.{name}.key: column {src!r} not in the {name} table ({frames[name].columns})"
                )
            tables[name] = frames[name].rename({src: key}) if src != key else frames[name]
    for key, what in ((cfg.user_key, "user_key"), (cfg.item_key, "item_key")):
        if key not in log.columns:
            raise ConfigError(f"{what}: column {key!r} not in the log (columns: {log.columns})")

    # Keys as the joins and the loader want them: the same type on both sides of a join,
    # and an int64 user key (raw user ids that are not integers get dense codes).
    user_raw = log[cfg.user_key]
    ids = None
    if user_raw.cast(pl.Int64, strict=False).null_count() != user_raw.null_count():
        ids = [user_raw] + ([tables["users"][cfg.user_key]] if "users" in tables else [])
        ids = pl.concat([s.cast(pl.String) for s in ids]).unique(maintain_order=True)
        stats["user_key_codes"] = (
            "user ids are not integers: __user holds dense codes in order of appearance"
        )

    def user_codes(s: pl.Series) -> pl.Series:
        if ids is None:
            return s.cast(pl.Int64)
        return s.cast(pl.String).replace_strict(ids, range(len(ids)), return_dtype=pl.Int64)

    log = log.with_columns(user_codes(user_raw))
    if "users" in tables:
        tables["users"] = tables["users"].with_columns(user_codes(tables["users"][cfg.user_key]))
    if "items" in tables:
        tables["items"] = tables["items"].with_columns(pl.col(cfg.item_key).cast(pl.String))
        log = log.with_columns(pl.col(cfg.item_key).cast(pl.String))
    where = {c: "log" for c in log.columns}
    for name, table in tables.items():
        where |= {c: name for c in table.columns if c not in where}

    def need(column: str, key: str) -> str:
        if column not in where:
            raise ConfigError(
                f"{key}: column {column!r} not found (log: {log.columns}"
                + "".join(f"; {n}: {t.columns}" for n, t in tables.items())
                + ")"
            )
        return where[column]

    log = log.with_columns(time_ms(log, cfg.time))
    drop = pl.Series([False] * len(log))

    def parsed(frame: pl.DataFrame, column: str, key: str, policy: Policy) -> pl.Series:
        nonlocal drop
        x, bad = number(frame[column])
        if bad.any() and x.null_count() == len(x):
            example = frame[column].filter(bad)[0]
            raise ConfigError(f"{key}: column {column!r} holds no numbers (e.g. {example!r})")
        if bad.any():
            stats["unparseable"][column] = int(bad.sum())
            if policy == "drop":
                if frame is not log:
                    raise ConfigError(
                        f"{key}: on_unparseable: drop applies to log columns only ({column!r} is in a side table)"
                    )
                drop = drop | bad
        return x

    fields: list[FieldSpec] = []
    derived: dict[str, dict[str, pl.Series]] = {"log": {}, "users": {}, "items": {}}
    for name, c in cfg.columns.items():
        key = f"columns.{name}"
        src = c.column or name
        frame_name = need(src, key)
        frame = log if frame_name == "log" else tables[frame_name]
        group = (
            c.group
            or {"users": "user", "items": "item"}.get(frame_name)
            or ("item" if src == cfg.item_key else "user" if src == cfg.user_key else "context")
        )
        if isinstance(c, Categorical):
            fields.append(FieldSpec(name, group, src, min_count=c.min_count))
        elif isinstance(c, Numeric):
            col = f"__numeric__{name}"
            derived[frame_name][col] = parsed(
                frame, src, key, c.on_unparseable or cfg.on_unparseable
            )
            fields.append(FieldSpec(name, group, col, kind=c.buckets, buckets=c.num_buckets))
        else:
            for k, values in enumerate(
                first_values(frame[src], c.separator, c.max_values, c.pooled), start=1
            ):
                derived[frame_name][f"__multi__{name}_{k}"] = values
                fields.append(
                    FieldSpec(
                        f"{name}_{k}",
                        group,
                        f"__multi__{name}_{k}",
                        min_count=c.min_count,
                        bag=name if c.pooled else None,
                    )
                )
    if len({f.name for f in fields}) != len(fields):
        raise ConfigError(
            f"columns: two columns give the same field name ({[f.name for f in fields]})"
        )

    tasks = []
    for name, t in cfg.tasks.items():
        key = f"tasks.{name}.column"
        if need(t.column, key) != "log":
            raise ConfigError(
                f"{key}: column {t.column!r} is in a side table; labels must be log columns"
            )
        col = f"__task__{name}"
        derived["log"][col] = parsed(log, t.column, key, cfg.on_unparseable)
        if isinstance(t, Binary):
            tasks.append(TaskSpec(name, col, "binary", threshold=t.threshold, weight=t.weight))
        else:
            tasks.append(
                TaskSpec(
                    name,
                    col,
                    "regression",
                    transform=t.transform,
                    weight=t.weight,
                    standardise=t.standardise,
                )
            )

    log = log.with_columns(**derived["log"])
    for name in tables:
        tables[name] = tables[name].with_columns(**derived[name])

    behaviours: list[BehaviourSpec] = []
    side_fields: list[str] = []
    if cfg.sequences is not None:
        item_ids = log[cfg.item_key]
        integer_ids = item_ids.dtype.is_integer() or (
            item_ids.dtype == pl.String
            and item_ids.drop_nulls().cast(pl.Int64, strict=False).null_count() == 0
        )
        for name, b in cfg.sequences.behaviours.items():
            if b.column is not None:
                key = f"sequences.behaviours.{name}.column"
                if need(b.column, key) != "log":
                    raise ConfigError(f"{key}: column {b.column!r} must be a log column")
                lists, bad = history(log[b.column], b, integer_ids)
                if bad.sum():
                    stats["unparseable"][b.column] = int(bad.sum())
                    if (b.on_unparseable or cfg.on_unparseable) == "drop":
                        drop = drop | (bad > 0)
                log = log.with_columns(lists.alias(f"__history__{name}"))
                behaviours.append(
                    BehaviourSpec(name, column=f"__history__{name}", max_len=b.max_len)
                )
                continue
            key = f"sequences.behaviours.{name}.condition"
            condition = b.condition or "true"
            if condition.strip().lower() == "true":
                behaviours.append(BehaviourSpec(name, pl.lit(True)))
                continue
            names = parse_condition(condition, key, where).meta.root_names()
            for c in names:  # a side-table column in a condition: bring just that column over
                if c not in log.columns:
                    k = cfg.user_key if where[c] == "users" else cfg.item_key
                    log = log.join(
                        tables[where[c]].select(k, c), on=k, how="left", maintain_order="left"
                    )
            numeric = [c for c in names if is_numeric_text(log[c])]
            expr = parse_condition(condition, key, where, numeric)
            _check_condition(log, expr, key, condition, [c for c in names if c not in numeric])
            behaviours.append(BehaviourSpec(name, expr))
        items = {f.name for f in fields if f.group == "item"}
        slots = {
            b: [f.name for f in fields if f.bag == b] for b in {f.bag for f in fields} - {None}
        }
        for s in cfg.sequences.side_fields:
            if s in slots and all(n in items for n in slots[s]):
                side_fields += slots[s]  # a bag: every value of it rides each position, pooled
            elif s in items:
                side_fields.append(s)
            else:
                known = sorted((items - {n for v in slots.values() for n in v}) | set(slots))
                raise ConfigError(
                    f"sequences.side_fields: {s!r} is not an item column (item columns: {known})"
                )

    split = SplitSpec()
    if cfg.split.ratios is not None:
        split = SplitSpec(ratios=cfg.split.ratios)
    elif cfg.split.valid_start is not None:
        if cfg.time.row_order:
            raise ConfigError(
                "split: valid_start / test_start need a time column (time.row_order has no dates)"
            )
        v, t = ms(cfg.split.valid_start), ms(cfg.split.test_start)
        top = int(log[TIME_MS].max()) + 1
        split = SplitSpec(
            bounds={
                "train": (min(int(log[TIME_MS].min()), v - 1), v),
                "valid": (v, t),
                "test": (t, max(top, t + 1)),
            }
        )
    elif cfg.split.column is not None:
        if need(cfg.split.column, "split.column") != "log":
            raise ConfigError(f"split.column: column {cfg.split.column!r} must be a log column")
        names = {
            v: i for i, v in enumerate(cfg.split.values[s] for s in ("train", "valid", "test"))
        }
        code = (
            log[cfg.split.column]
            .cast(pl.String)
            .replace_strict(names, default=-1, return_dtype=pl.Int64)
        )
        stats["rows_in_no_split"] = int((code < 0).sum())
        log = log.with_columns(code.alias(SPLIT_CODE))
        split = SplitSpec(
            bounds={"train": (0, 1), "valid": (1, 2), "test": (2, 3)}, column=SPLIT_CODE
        )

    if drop.any():
        log = log.filter(~drop)
        stats["rows_dropped_unparseable"] = int(drop.sum())
    return RawDataset(
        name=cfg.name,
        log=log,
        fields=fields,
        tasks=tasks,
        user_key=cfg.user_key,
        item_key=cfg.item_key,
        time_column=TIME_MS,
        users=tables.get("users"),
        items=tables.get("items"),
        behaviours=behaviours,
        side_fields=side_fields,
        max_len=cfg.sequences.max_len if cfg.sequences else 50,
        split=split,
        stats=stats,
    )


def _check_condition(
    log: pl.DataFrame, expr: pl.Expr, key: str, text: str, textual: list[str]
) -> None:
    """Evaluate a condition once here, so a comparison polars cannot make (a number against a
    column that holds text) is one message naming the key and a value, not a traceback."""
    try:
        log.select(expr)
    except pl.exceptions.PolarsError as err:
        samples = []
        for c in textual:
            values = log[c].drop_nulls()
            bad = values.filter(values.cast(pl.Float64, strict=False).is_null())
            if values.dtype == pl.String and len(bad):
                samples.append(
                    f"column {c!r} holds text such as {bad[0]!r}, so it does not compare with "
                    "a number; quote the value to compare text ('1990'), or clean the column"
                )
        why = "; ".join(samples) or str(err).splitlines()[0]
        raise ConfigError(f"{key}: condition {text!r} cannot be evaluated: {why}") from None


def prepare_table(
    config: str | Path,
    out: str | Path,
    data_dir: str | Path | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Read, check and prepare the dataset a YAML file describes; returns stats.json's dict."""
    cfg = load_config(config)
    base = Path(data_dir) if data_dir is not None else Path(config).resolve().parent
    inputs = [Path(config), *input_files(cfg, base)]
    refuse_overlap(Path(out), inputs)
    raw = build_raw(cfg, read_inputs(cfg, base))
    try:
        return prepare(raw, Path(out), overwrite=overwrite, progress=progress, inputs=inputs)
    except PrepareError as err:
        raise ConfigError(f"{config}: {in_yaml_terms(str(err), cfg)}") from None


def in_yaml_terms(message: str, cfg: TableConfig) -> str:
    """A message with the columns build_raw derives (__task__like) named as the YAML names
    them: the key and the source column."""
    names = {TIME_MS: f"'{cfg.time.column or 'row order'}' (time.column)"}
    if cfg.split.column is not None:
        names[SPLIT_CODE] = f"'{cfg.split.column}' (split.column)"
    for name, t in cfg.tasks.items():
        names[f"__task__{name}"] = f"'{t.column}' (tasks.{name}.column)"
    for name, c in cfg.columns.items():
        src = c.column or name
        names[f"__numeric__{name}"] = f"'{src}' (columns.{name})"
        if isinstance(c, MultiCategorical):
            for k in range(1, c.max_values + 1):
                names[f"__multi__{name}_{k}"] = f"'{src}' (columns.{name}, value {k})"
    for name, b in cfg.sequences.behaviours.items() if cfg.sequences else []:
        if b.column is not None:
            names[f"__history__{name}"] = f"'{b.column}' (sequences.behaviours.{name}.column)"
    for internal in sorted(names, key=len, reverse=True):
        message = message.replace(f"'{internal}'", names[internal]).replace(
            internal, names[internal]
        )
    return message


def command(
    config: Path = typer.Option(
        ..., "--config", help="Dataset YAML (see README, 'Your own data')."
    ),
    out: Path = typer.Option(..., "--out", help="Prepared dataset directory to write."),
    data_dir: Path | None = typer.Option(
        None,
        "--data-dir",
        help="Folder the input paths are relative to (default: the YAML's folder).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
    progress: bool = typer.Option(True, help="Log the steps."),
) -> None:
    """Prepare a dataset described by a YAML file (CSV / TSV / Parquet / JSON-lines inputs)."""
    stats = prepare_table(config, out, data_dir, overwrite=overwrite, progress=progress)
    report(stats, out)


def report(stats: dict, out: Path) -> None:
    rows = ", ".join(f"{s} {n:,}" for s, n in stats["rows"].items())
    rates = ", ".join(
        f"{t} {r:.3f}" for t, r in stats["label_rate"]["train"].items() if r is not None
    )
    bad = ", ".join(f"{c} {n:,}" for c, n in (stats["source"].get("unparseable") or {}).items())
    typer.echo(
        f"{stats['dataset']}: rows {rows}; users {stats['users']['all']:,}, items {stats['items']['all']:,}"
    )
    typer.echo(unseen_line(stats))
    typer.echo(
        f"train label rates: {rates or '-'}; unparseable values: {bad or 'none'}; written to {out}"
    )


# --- built-in datasets: a shipped YAML over the same machinery -------------------------------
CONFIG_DIR = Path(__file__).resolve().parent / "datasets"  # package data, installed with the code


def shipped_config(name: str) -> Path:
    """The shipped datasets/<name>.yaml beside this module."""
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"shipped dataset config not found: {path} (use `infnet prepare table --config`)"
        )
    return path


def require_files(data_dir: Path, names: list[str], dataset: str, where: str) -> None:
    """Stop with one message naming the first official file that is missing."""
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{dataset} data directory not found: {data_dir}")
    for name in names:
        if not (data_dir / name).is_file():
            raise FileNotFoundError(
                f"{dataset} file not found: {data_dir / name} (the official files: {', '.join(names)}; from {where})"
            )
