"""Reading CSV / TSV / Parquet / JSON-lines files (one or more globs) into one frame.

Text tables are read with every column as a string, so the table source decides how a
column is parsed and counts the values that do not parse, instead of the reader guessing
a type from the first rows. Separators of more than one character (MovieLens `::`),
encodings other than UTF-8 (MovieLens is latin-1) and gzip (Amazon's `.json.gz` dumps)
are handled here.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import polars as pl

Format = Literal["csv", "tsv", "parquet", "jsonl"]
_SUFFIX: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "csv",
    ".dat": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_UNIT_SEPARATOR = "\x1f"  # stands in for a multi-character separator
_JSON_CHUNK_LINES = 500_000


def expand(paths: list[str], base: Path, key: str) -> list[Path]:
    """The files matching `paths` (globs, relative to `base`), sorted; none is an error."""
    files: list[Path] = []
    for pattern in paths:
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        matched = sorted(glob.glob(full))
        if not matched:
            raise FileNotFoundError(f"{key}: no file matches {full}")
        files += [Path(m) for m in matched]
    return files


def file_format(path: Path, key: str) -> Format:
    suffix = path.suffixes[-2] if path.suffix == ".gz" and len(path.suffixes) > 1 else path.suffix
    if suffix.lower() not in _SUFFIX:
        raise ValueError(
            f"{key}: cannot tell the format of {path.name}; set `format` (csv, tsv, parquet, jsonl)"
        )
    return _SUFFIX[suffix.lower()]


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _read_text_table(
    path: Path, separator: str, encoding: str, has_header: bool, names: list[str] | None
) -> pl.DataFrame:
    with _open(path) as fh:
        data = fh.read()
    if encoding.lower().replace("-", "") not in ("utf8", "utf_8") or len(separator) > 1:
        text = data.decode(encoding)
        if len(separator) > 1:
            text = text.replace(separator, _UNIT_SEPARATOR)
            separator = _UNIT_SEPARATOR
        data = text.encode()
    if not data.strip():
        raise ValueError(f"{path}: the file is empty")
    _check_last_line(path, data, separator)
    frame = pl.read_csv(
        io.BytesIO(data),
        separator=separator,
        has_header=has_header,
        infer_schema=False,
        quote_char=None if len(separator) > 1 else '"',
    )
    if names is not None:
        if len(names) != frame.width:
            raise ValueError(
                f"{path}: {frame.width} columns in the file, {len(names)} names given ({names})"
            )
        frame.columns = names
    return frame


def _check_last_line(path: Path, data: bytes, separator: str) -> None:
    """A file cut off mid-line (a copy that stopped) has a last line with fewer fields than
    its first and no final newline: refuse it rather than read a row of missing values."""
    body = data.rstrip(b"\r")
    if not body or body.endswith(b"\n"):
        return
    first = body.split(b"\n", 1)[0]
    last_start = body.rfind(b"\n") + 1
    if last_start == 0:
        return
    sep = separator.encode()
    want, got = first.count(sep) + 1, body[last_start:].count(sep) + 1
    if got < want:
        line = body.count(b"\n") + 1
        raise ValueError(
            f"{path}: line {line}, the last, holds {got} of {want} fields and no final newline; "
            "the file looks truncated"
        )


def json_lines(path: Path) -> Iterator[bytes]:
    """Chunks of whole lines of a (gzipped) JSON-lines file."""
    with _open(path) as fh:
        while True:
            lines = fh.readlines(64 << 20)
            if not lines:
                return
            yield b"".join(lines)


def _read_json_lines(path: Path, columns: list[str] | None) -> pl.DataFrame:
    if columns is None:  # the whole file, types as polars infers them
        with _open(path) as fh:
            return pl.read_ndjson(io.BytesIO(fh.read()))
    # Only the wanted keys, chunk by chunk: review dumps hold long texts nobody needs.
    # The first chunk fixes the types of the wanted keys.
    chunks: list[pl.DataFrame] = []
    schema: dict[str, pl.DataType] | None = None
    for chunk in json_lines(path):
        if schema is None:
            sample = pl.read_ndjson(io.BytesIO(chunk), infer_schema_length=_JSON_CHUNK_LINES)
            schema = {c: sample.schema[c] if c in sample.columns else pl.String for c in columns}
        chunks.append(pl.read_ndjson(io.BytesIO(chunk), schema=schema))
    return pl.concat(chunks) if chunks else pl.DataFrame(schema={c: pl.String for c in columns})


def read_files(
    paths: list[str],
    base: Path,
    key: str,
    format: Format | None = None,
    separator: str | None = None,
    encoding: str = "utf8",
    has_header: bool = True,
    names: list[str] | None = None,
    columns: list[str] | None = None,
) -> pl.DataFrame:
    """All files of `paths` stacked into one frame (columns must agree across files)."""
    frames = []
    for path in expand(paths, base, key):
        fmt = format or file_format(path, key)
        if fmt == "parquet":
            frame = pl.read_parquet(path)
        elif fmt == "jsonl":
            frame = _read_json_lines(path, columns)
        else:
            sep = separator or ("\t" if fmt == "tsv" else ",")
            frame = _read_text_table(path, sep, encoding, has_header, names)
        frames.append(frame)
    try:
        frame = pl.concat(frames, how="vertical_relaxed")
    except pl.exceptions.PolarsError as err:
        raise ValueError(f"{key}: the files do not have the same columns: {err}") from None
    if frame.is_empty():
        raise ValueError(f"{key}: {', '.join(map(str, paths))} hold no rows (a header at most)")
    return frame


def python_literal_lines(path: Path) -> Iterator[dict]:
    """Records of a JSON-lines file whose lines may instead be Python dict literals (the
    2014 Amazon metadata); parsed with `ast.literal_eval`, which evaluates no code."""
    import ast

    with _open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                yield ast.literal_eval(line.decode("utf8"))
