"""Parsing the cells of text inputs: timestamps in any unit, numbers, multi-valued cells and
pre-built history lists; what does not parse is returned as a mask, to be counted."""

from __future__ import annotations

import polars as pl

from infnet.config import ConfigError
from infnet.data.sources.table_config import TIME_MS, Behaviour, Time


def time_ms(log: pl.DataFrame, t: Time) -> pl.Series:
    """The time column as int64 milliseconds; a value that does not convert is an error."""
    if t.row_order:
        return pl.Series(TIME_MS, range(len(log)), dtype=pl.Int64)
    col = log[t.column]
    if col.null_count():
        raise ConfigError(f"time.column: column {t.column!r} has {col.null_count()} missing values")
    if col.dtype == pl.Date or isinstance(col.dtype, pl.Datetime):
        return col.cast(pl.Datetime("ms")).dt.epoch("ms").rename(TIME_MS)
    unit = t.unit
    if unit != "datetime":
        number = col.cast(pl.Float64, strict=False)
        if number.null_count() == 0:
            if unit == "auto":  # seconds until year 5138, then ms, us, ns
                top = number.abs().max()
                unit = "s" if top < 1e11 else "ms" if top < 1e14 else "us" if top < 1e17 else "ns"
            scale = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "ns": 1e-6}[unit]
            return (number * scale).round().cast(pl.Int64).rename(TIME_MS)
        if unit != "auto":
            bad = col.filter(number.is_null())[0]
            raise ConfigError(
                f"time.column: column {t.column!r} holds {bad!r}, not a number of {unit}"
            )
    try:
        parsed = col.cast(pl.String).str.to_datetime(t.format, strict=False, time_unit="ms")
    except pl.exceptions.PolarsError:  # no datetime format fits the first values
        parsed = pl.Series([None] * len(col), dtype=pl.Datetime("ms"))
    if parsed.null_count():
        bad = col.filter(parsed.is_null())[0]
        raise ConfigError(
            f"time.column: column {t.column!r} holds {bad!r}, neither a number nor a datetime"
            + (f" in format {t.format!r}" if t.format else " (set time.format)")
        )
    return parsed.dt.epoch("ms").rename(TIME_MS)


def number(values: pl.Series) -> tuple[pl.Series, pl.Series]:
    """(values as float64, mask of values present but not a number)."""
    if values.dtype == pl.Boolean or values.dtype.is_numeric():
        x = values.cast(pl.Float64)
        return x, pl.Series([False] * len(x))
    x = values.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
    return x, x.is_null() & values.is_not_null() & (values.cast(pl.String).str.strip_chars() != "")


def first_values(values: pl.Series, separator: str, k: int, distinct: bool) -> list[pl.Series]:
    lists = (
        values if isinstance(values.dtype, pl.List) else values.cast(pl.String).str.split(separator)
    )
    lists = lists.list.eval(pl.element().cast(pl.String).str.strip_chars()).list.eval(
        pl.element().filter(pl.element() != "")
    )
    if distinct:  # a bag is a set
        lists = lists.list.unique(maintain_order=True)
    return [lists.list.get(i, null_on_oob=True) for i in range(k)]


def history(values: pl.Series, b: Behaviour, integer_ids: bool) -> tuple[pl.Series, pl.Series]:
    """A pre-built history column as lists of item-id strings, oldest first, and per row the
    number of entries that are not integers where the item ids are (0 otherwise). A missing
    or empty cell is an empty history; empty entries ("12||7") are skipped."""
    lists = (
        values
        if isinstance(values.dtype, pl.List)
        else values.cast(pl.String).str.split(b.separator)
    )
    lists = lists.list.eval(pl.element().cast(pl.String).str.strip_chars()).list.eval(
        pl.element().filter(pl.element() != "")
    )
    if b.most_recent == "first":
        lists = lists.list.reverse()
    if not integer_ids:
        return lists, pl.Series([0] * len(lists))
    bad = lists.list.eval(pl.element().cast(pl.Int64, strict=False).is_null()).list.sum()
    return lists, bad.fill_null(0)


def is_numeric_text(values: pl.Series) -> bool:
    """A string column whose values all parse as numbers (text tables are read as strings)."""
    if values.dtype != pl.String:
        return False
    present = values.drop_nulls()
    return len(present) > 0 and present.cast(pl.Float64, strict=False).null_count() == 0
