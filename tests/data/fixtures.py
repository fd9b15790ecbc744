"""Small files in the official formats of the public datasets (a few hundred rows each),
following each dataset's published description, and one made-up shop log for the YAML
source. Each writer returns the frame it wrote, so tests can compute expected values."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import polars as pl

GENRES = [
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Drama",
    "Film-Noir",
    "Sci-Fi",
]


def write_movielens(
    d: Path, users: int = 30, movies: int = 40, ratings: int = 400, seed: int = 0
) -> pl.DataFrame:
    """ml-1m: ratings.dat UserID::MovieID::Rating::Timestamp, users.dat UserID::Gender::Age::
    Occupation::Zip-code, movies.dat MovieID::Title::Genres; latin-1, no header."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    ages = [1, 18, 25, 35, 45, 50, 56]
    with open(d / "users.dat", "w", encoding="latin-1") as f:
        for u in range(1, users + 1):
            f.write(f"{u}::{'FM'[u % 2]}::{ages[u % 7]}::{u % 21}::{10000 + u % 5:05d}\n")
    with open(d / "movies.dat", "w", encoding="latin-1") as f:
        for m in range(1, movies + 1):
            g = "|".join(rng.choice(GENRES, size=1 + m % 3, replace=False))
            title = f"Café Movie {m}, The (19{60 + m % 40})"  # latin-1 é as in the release
            f.write(f"{m}::{title}::{g}\n")
    pairs = rng.choice(users * movies, size=ratings, replace=False)
    frame = pl.DataFrame(
        {
            "user_id": (pairs // movies + 1).astype(np.int64),
            "movie_id": (pairs % movies + 1).astype(np.int64),
            "rating": rng.integers(1, 6, ratings),
            # seconds in 2000-2001, with ties (several ratings in the same second)
            "timestamp": 956_703_932 + rng.integers(0, 3000, ratings) * 10_000,
        }
    )
    with open(d / "ratings.dat", "w", encoding="latin-1") as f:
        for r in frame.iter_rows():
            f.write("::".join(map(str, r)) + "\n")
    return frame


def write_tenrec(d: Path, rows: int = 360, seed: int = 0) -> pl.DataFrame:
    """QB-video.csv: user_id,item_id,click,follow,like,share,video_category,watching_times,
    gender,age (no timestamp; rows in time order)."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    user = rng.integers(1, 25, rows)
    item = rng.integers(1, 60, rows)
    click = (rng.random(rows) < 0.5).astype(int)
    frame = pl.DataFrame(
        {
            "user_id": user,
            "item_id": item,
            "click": click,
            "follow": click * (rng.random(rows) < 0.1),
            "like": click * (rng.random(rows) < 0.3),
            "share": click * (rng.random(rows) < 0.1),
            "video_category": item % 7,
            "watching_times": click * rng.integers(0, 4, rows),
            "gender": user % 3,
            "age": user % 8,
        }
    )
    frame.write_csv(d / "QB-video.csv")
    return frame


def write_amazon(d: Path, release: int = 2014, reviews: int = 300, seed: int = 0) -> pl.DataFrame:
    """Reviews as JSON lines (reviewerID, asin, overall, unixReviewTime, plus the text the
    dumps carry) and meta_Books.json.gz: Python dict literals with `categories` and a
    numeric price in 2014, JSON with `category` and a "$" price in 2018."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    asins = [f"00{i:08d}" for i in range(50)]
    users = [f"A{i:03d}XYZ" for i in range(20)]
    frame = pl.DataFrame(
        {
            "reviewerID": rng.choice(users, reviews),
            "asin": rng.choice(asins, reviews),
            "overall": rng.integers(1, 6, reviews).astype(float),
            "unixReviewTime": 1_300_000_000 + rng.integers(0, 2000, reviews) * 86_400,
        }
    )
    name = "reviews_Books_5.json.gz" if release == 2014 else "Books_5.json.gz"
    with gzip.open(d / name, "wt") as f:
        for r in frame.iter_rows(named=True):
            f.write(
                json.dumps({**r, "reviewText": "Great read.", "summary": "ok", "helpful": [0, 0]})
                + "\n"
            )
    with gzip.open(d / "meta_Books.json.gz", "wt") as f:
        for i, a in enumerate(asins[:-2]):  # two books have no metadata
            path = ["Books", ["Literature & Fiction", "History", "Science"][i % 3], f"Sub {i % 4}"]
            if release == 2014:
                rec = {"asin": a, "categories": [path], "title": f"Book's {i}"}
                if i % 5:
                    rec["price"] = round(3.5 + i, 2)
                if i % 2:
                    rec["brand"] = f"Press {i % 3}"
                f.write(repr(rec) + "\n")  # a Python literal, as the 2014 metadata
            else:
                price = "" if i % 5 == 0 else ("$1.00 - $5.00" if i == 7 else f"${3.5 + i:.2f}")
                rec = {
                    "asin": a,
                    "category": path,
                    "brand": f"Press {i % 3}" if i % 2 else "",
                    "price": price,
                }
                f.write(json.dumps(rec) + "\n")
    return frame


def write_shop(d: Path, rows: int = 500, seed: int = 0) -> pl.DataFrame:
    """A dataset the project has never seen: a shop's impression log (CSV, datetime strings,
    a tag list, a bad price), a users Parquet table and an items JSON-lines table."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    user = rng.integers(100, 140, rows)
    item = rng.integers(1, 80, rows)
    seconds = np.sort(rng.integers(0, 30 * 86_400, rows))
    ts = (np.datetime64("2024-03-01T00:00:00") + seconds.astype("timedelta64[s]")).astype(str)
    click = (rng.random(rows) < 0.4).astype(int)
    buy = click * (rng.random(rows) < 0.3)
    frame = pl.DataFrame(
        {
            "uid": user,
            "sku": [f"sku{i}" for i in item],
            "ts": [t.replace("T", " ") for t in ts],
            "page": rng.choice(["home", "search", "cart"], rows),
            "clicked": click,
            "bought": buy,
            "amount": np.where(buy == 1, np.round(rng.gamma(2.0, 20.0, rows), 2), 0.0).astype(str),
            "dwell": rng.integers(0, 100, rows).astype(str),
        }
    )
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("n/a")).otherwise("dwell").alias("dwell")
    )
    # A pre-built history per row: the user's clicked skus strictly before the row's
    # second, most recent last (rows are in time order).
    clicked: dict[int, list[tuple[str, str]]] = {}
    recent = []
    for u, sku, t, c in zip(frame["uid"], frame["sku"], frame["ts"], click, strict=True):
        recent.append("|".join(s for s, ts in clicked.get(u, []) if ts < t))
        if c:
            clicked.setdefault(u, []).append((sku, t))
    frame = frame.with_columns(recent=pl.Series(recent))
    frame.write_csv(d / "log_part1.csv")  # two files of one glob
    frame.slice(0, 0).write_csv(d / "log_part2.csv")
    pl.DataFrame(
        {"user": np.arange(100, 140), "segment": [f"s{u % 4}" for u in range(40)]}
    ).write_parquet(d / "users.parquet")
    with open(d / "items.jsonl", "w") as f:
        for i in range(1, 80):
            f.write(
                json.dumps(
                    {
                        "sku": f"sku{i}",
                        "brand": f"b{i % 6}",
                        "tags": ["x", "y", "z"][: 1 + i % 3],
                        "price": 5.0 + i,
                    }
                )
                + "\n"
            )
    return frame


SHOP_YAML = """
name: shop
inputs:
  log: {path: "log_part*.csv"}
  users: {path: users.parquet, key: user}
  items: {path: items.jsonl, key: sku}
user_key: uid
item_key: sku
time: {column: ts, unit: datetime}
columns:
  sku: {type: categorical}
  brand: {type: categorical}
  tag: {type: multi_categorical, column: tags, max_values: 2}
  price: {type: numeric, buckets: log, num_buckets: 8}
  uid: {type: categorical}
  segment: {type: categorical}
  page: {type: categorical}
  dwell: {type: numeric, num_buckets: 4}
sequences:
  side_fields: [sku, brand]
  max_len: 10
  behaviours:
    clicked: {condition: "clicked == 1"}
    bought: {condition: "bought == 1 and amount > 0"}
    recent: {column: recent, separator: "|", max_len: 5}
tasks:
  click: {kind: binary, column: clicked}
  buy: {kind: binary, column: bought, weight: 2.0}
  spend: {kind: regression, column: amount, transform: log1p}
split: {valid_start: 2024-03-22, test_start: 2024-03-26}
"""
