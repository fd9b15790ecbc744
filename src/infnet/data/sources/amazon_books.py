"""Amazon Books: the public review dumps through datasets/amazon-books.yaml.

Reviews: JSON lines with reviewerID, asin, overall, unixReviewTime (2014 release:
reviews_Books_5.json.gz / reviews_Books.json.gz; 2018 release: Books_5.json.gz /
Books.json.gz). Metadata meta_Books.json.gz: strict JSON lines in 2018 (`category` a list,
`brand`, `price` a string such as "$12.99"), Python dict literals in 2014 (`categories` a
list of category paths, `brand`, `price` a number), read with ast.literal_eval. Both are
normalised to one items table: asin, category (the first path below "Books"), brand,
price. Tasks: like = overall >= 4, rating (regression); histories of reviewed and liked books.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import typer

from infnet.data.sources.files import python_literal_lines, read_files
from infnet.data.sources.table import build_raw, load_config, prepare, report, shipped_config
from infnet.fsutil import refuse_overlap

REVIEW_FILES = [
    "reviews_Books_5.json.gz",
    "Books_5.json.gz",
    "reviews_Books.json.gz",
    "Books.json.gz",
]
META_FILE = "meta_Books.json.gz"
REVIEW_KEYS = ["reviewerID", "asin", "overall", "unixReviewTime"]
URL = "https://jmcauley.ucsd.edu/data/amazon/ (2014) or https://nijianmo.github.io/amazon/ (2018)"


def _find(data_dir: Path, names: list[str], what: str) -> Path:
    for name in names:
        for candidate in (data_dir / name, data_dir / name.removesuffix(".gz")):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"Amazon Books {what} not found in {data_dir}: one of {', '.join(names)} (from {URL})"
    )


def _category(record: dict) -> list[str]:
    # 2014: categories [["Books", "Literature & Fiction", ...], ...]; 2018: category [...]
    path = record["categories"][0] if record.get("categories") else record.get("category") or []
    path = [str(c).strip() for c in path if str(c).strip()]
    return path[1:] if path and path[0] == "Books" else path


def read_metadata(path: Path, asins: set[str] | None = None) -> pl.DataFrame:
    """asin, category (list), brand, price (a number, or the text that is not one)."""
    rows = {"asin": [], "category": [], "brand": [], "price": []}
    for record in python_literal_lines(path):
        asin = record.get("asin")
        if asin is None or (asins is not None and asin not in asins):
            continue
        price = record.get("price")
        rows["asin"].append(str(asin))
        rows["category"].append(_category(record))
        rows["brand"].append(str(record["brand"]).strip() or None if record.get("brand") else None)
        rows["price"].append(
            None if price in (None, "") else str(price).strip().removeprefix("$").replace(",", "")
        )
    return pl.DataFrame(
        rows,
        schema={
            "asin": pl.String,
            "category": pl.List(pl.String),
            "brand": pl.String,
            "price": pl.String,
        },
    ).unique("asin", keep="first", maintain_order=True)


def prepare_amazon_books(
    data_dir: str | Path,
    out: str | Path,
    *,
    reviews: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"Amazon Books data directory not found: {data_dir}")
    review_path = data_dir / reviews if reviews else _find(data_dir, REVIEW_FILES, "reviews file")
    meta_path = _find(data_dir, [META_FILE], "metadata file")
    refuse_overlap(Path(out), [review_path, meta_path])
    log = read_files([str(review_path)], data_dir, "reviews", "jsonl", columns=REVIEW_KEYS)
    items = read_metadata(meta_path, set(log["asin"].unique().to_list()))
    raw = build_raw(load_config(shipped_config("amazon-books")), {"log": log, "items": items})
    raw.stats |= {"reviews_file": review_path.name, "metadata_file": meta_path.name}
    return prepare(
        raw, Path(out), overwrite=overwrite, progress=progress, inputs=[review_path, meta_path]
    )


def command(
    data_dir: Path = typer.Option(
        ...,
        "--data-dir",
        help=f"Folder with a reviews file ({', '.join(REVIEW_FILES)}) and {META_FILE}.",
    ),
    out: Path = typer.Option(..., "--out", help="Prepared dataset directory to write."),
    reviews: str | None = typer.Option(
        None,
        "--reviews",
        help="Reviews file name in DATA_DIR (default: the first found of the official names).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
    progress: bool = typer.Option(True, help="Log the steps."),
) -> None:
    """Prepare Amazon Books (like = overall >= 4, rating; reviewed / liked histories)."""
    report(
        prepare_amazon_books(
            data_dir, out, reviews=reviews, overwrite=overwrite, progress=progress
        ),
        out,
    )
