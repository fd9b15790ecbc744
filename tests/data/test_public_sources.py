"""The built-in public datasets on small files in their official formats: rows per split,
vocabulary sizes, point-in-time histories and label rates of the prepared result."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from infnet.data import layout
from infnet.data.schema import PAD, Schema
from infnet.data.sources.amazon_books import prepare_amazon_books
from infnet.data.sources.movielens import prepare_movielens
from infnet.data.sources.tenrec import prepare_tenrec

from .fixtures import write_amazon, write_movielens, write_tenrec
from .test_table import check_histories, split_frame


def ratio_rows(t: np.ndarray, ratios=(0.7, 0.15, 0.15)) -> dict[str, int]:
    """Rows per split of prepare's rule: cut the sorted times at the ratios' row ranks."""
    ts = np.sort(t)
    c0, c1 = ts[round(len(ts) * ratios[0])], ts[round(len(ts) * (ratios[0] + ratios[1]))]
    return {
        "train": int((t < c0).sum()),
        "valid": int(((t >= c0) & (t < c1)).sum()),
        "test": int((t >= c1).sum()),
    }


def load(out):
    return Schema.load(out / layout.SCHEMA), json.loads((out / layout.STATS).read_text())


def test_movielens(tmp_path):
    ratings = write_movielens(tmp_path / "ml-1m")
    out = tmp_path / "prepared"
    prepare_movielens(tmp_path / "ml-1m", out, progress=False)
    schema, stats = load(out)
    ms = ratings["timestamp"].to_numpy() * 1000
    assert stats["rows"] == ratio_rows(ms)
    train = ratings.filter(pl.Series(ms < np.sort(ms)[280]))
    vocab = {f.name: f.vocab_size for f in schema.fields}
    assert vocab["movie_id"] == train["movie_id"].n_unique() + 2
    assert vocab["user_id"] == train["user_id"].n_unique() + 2
    assert vocab["gender"] == 2 + 2 and vocab["age"] == 7 + 2
    assert [f.name for f in schema.fields][:4] == ["movie_id", "genre_1", "genre_2", "genre_3"]
    # genres are one pooled bag: one vocabulary over the slots, one token for the models
    genres = {
        int(m): set(g.split("|"))
        for m, _, g in (
            line.split("::")
            for line in (tmp_path / "ml-1m" / "movies.dat").read_text("latin-1").split("\n")
            if line
        )
    }
    seen = set().union(*(genres[m] for m in train["movie_id"]))
    assert [f.bag for f in schema.fields[1:4]] == ["genre"] * 3
    assert vocab["genre_1"] == vocab["genre_2"] == vocab["genre_3"] == len(seen) + 2
    assert schema.token_names[:2] == ["movie_id", "genre"]
    assert schema.num_categorical_tokens == schema.num_fields - 2
    value = dict(
        pl.read_parquet(out / layout.VOCAB_DIR / "genre_2.parquet").select("index", "value").rows()
    )
    rows = split_frame(out, "train").join(
        pl.read_parquet(out / layout.VOCAB_DIR / "movie_id.parquet").select(
            pl.col("index").alias("movie_id"), pl.col("value").cast(int).alias("movie")
        ),
        on="movie_id",
    )
    for m, *slots in rows.select("movie", "genre_1", "genre_2", "genre_3").rows():
        assert {value[c] for c in slots if c != PAD} == genres[m]  # every genre seen in train
        assert slots.count(PAD) == 3 - len(genres[m])
    assert {f.name: f.group for f in schema.fields}["occupation"] == "user"
    assert [(t.name, t.kind) for t in schema.tasks] == [
        ("like", "binary"),
        ("rating", "regression"),
    ]
    assert stats["label_rate"]["train"]["like"] == pytest.approx(
        (train["rating"] >= 4).mean(), rel=1e-6
    )
    assert stats["label_mean"]["train"]["rating"] == pytest.approx(train["rating"].mean(), rel=1e-6)
    # The latin-1 titles and genres were read: every movie joined.
    assert stats["unjoined"]["items"]["rows"] == 0 and stats["unjoined"]["users"]["rows"] == 0

    rated = {u: g["timestamp"].to_numpy() * 1000 for (u,), g in ratings.group_by("user_id")}
    liked = {
        u: g["timestamp"].to_numpy() * 1000
        for (u,), g in ratings.filter(pl.col("rating") >= 4).group_by("user_id")
    }
    assert check_histories(out, "rated", lambda u, t: int((rated[u] < t).sum())) == 400
    check_histories(out, "liked", lambda u, t: int((liked.get(u, np.empty(0)) < t).sum()))
    # Ratings in the same second are not each other's history.
    test = split_frame(out, "test")
    assert (test[layout.seq_end_col("rated")] - test[layout.seq_start_col("rated")]).max() > 0


def test_tenrec_row_order_is_time(tmp_path):
    log = write_tenrec(tmp_path)
    out = tmp_path / "prepared"
    prepare_tenrec(tmp_path, out, progress=False)
    schema, stats = load(out)
    # 360 * 0.7 is 251.99999999999997 in floating point; the cut rounds it to 252 rows
    assert stats["rows"] == ratio_rows(np.arange(360)) == {"train": 252, "valid": 54, "test": 54}
    train = log.slice(0, 252)
    assert split_frame(out, "train")[layout.TIME].to_list() == list(range(252))
    assert [t.name for t in schema.tasks] == ["click", "like", "follow", "share"]
    for task in ("click", "like", "follow", "share"):
        assert stats["label_rate"]["train"][task] == pytest.approx(train[task].mean(), rel=1e-6)
    vocab = {f.name: f.vocab_size for f in schema.fields}
    assert vocab["item_id"] == train["item_id"].n_unique() + 2
    assert vocab["video_category"] == 7 + 2
    assert "watching_times" not in vocab  # an outcome, not an input
    rows = log.with_row_index("t")
    for behaviour, column in (("clicked", "click"), ("liked", "like")):
        times = {
            u: g["t"].to_numpy() for (u,), g in rows.filter(pl.col(column) == 1).group_by("user_id")
        }
        check_histories(
            out, behaviour, lambda u, t, times=times: int((times.get(u, np.empty(0)) < t).sum())
        )


@pytest.mark.parametrize("release", [2014, 2018])
def test_amazon_books(tmp_path, release):
    reviews = write_amazon(tmp_path, release)
    out = tmp_path / "prepared"
    prepare_amazon_books(tmp_path, out, progress=False)
    schema, stats = load(out)
    ms = reviews["unixReviewTime"].to_numpy() * 1000
    assert stats["rows"] == ratio_rows(ms)
    train = reviews.filter(pl.Series(ms < np.sort(ms)[210]))
    vocab = {f.name: f.vocab_size for f in schema.fields}
    assert vocab["asin"] == train["asin"].n_unique() + 2
    assert vocab["reviewerID"] == train["reviewerID"].n_unique() + 2
    # categories below "Books": 3 second levels, 4 third levels, no fourth
    assert (
        vocab["category_1"] == 3 + 2 and vocab["category_2"] == 4 + 2 and vocab["category_3"] == 2
    )
    assert vocab["brand"] == 3 + 2
    assert stats["unjoined"]["items"]["ids"] == 2  # two books without metadata
    assert stats["source"]["unparseable"] == (
        {"price": 1} if release == 2018 else {}
    )  # "$1.00 - $5.00"
    assert stats["label_rate"]["train"]["like"] == pytest.approx(
        (train["overall"] >= 4).mean(), rel=1e-6
    )
    liked = reviews.filter(pl.col("overall") >= 4)
    codes = {r: i for i, r in enumerate(reviews["reviewerID"].unique(maintain_order=True))}
    times = {
        codes[u]: g["unixReviewTime"].to_numpy() * 1000 for (u,), g in liked.group_by("reviewerID")
    }
    check_histories(out, "liked", lambda u, t: int((times.get(u, np.empty(0)) < t).sum()))


def test_missing_official_file_is_named(tmp_path):
    write_movielens(tmp_path)
    (tmp_path / "users.dat").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"MovieLens-1M file not found: .*users\.dat .*grouplens"
    ):
        prepare_movielens(tmp_path, tmp_path / "out", progress=False)
    with pytest.raises(FileNotFoundError, match=r"Tenrec QB-Video file not found: .*QB-video\.csv"):
        prepare_tenrec(tmp_path, tmp_path / "out", progress=False)
    with pytest.raises(
        FileNotFoundError, match=r"Amazon Books reviews file not found .*reviews_Books_5\.json\.gz"
    ):
        prepare_amazon_books(tmp_path, tmp_path / "out", progress=False)


def test_kuairand_27k_file_names_and_parts(tmp_path):
    """The 27K names (logs and statistics in parts) give the same result as the same rows
    under the Pure names."""
    from tests.helpers import kuairand_dir

    from infnet.data.sources.kuairand import prepare_kuairand

    src = kuairand_dir()
    log = pl.read_csv(src / "log_standard_0425_to_0508_pure.subset.csv", n_rows=400)
    stat = pl.read_csv(src / "video_features_statistic_pure.reconstructed.csv")
    pure, k27 = tmp_path / "pure", tmp_path / "27k"
    pure.mkdir(), k27.mkdir()
    log.write_csv(pure / "log.csv")
    for name in ("user_features", "video_features_basic"):
        (pure / f"{name}_pure.csv").symlink_to(src / f"{name}_pure.csv")
        (k27 / f"{name}_27k.csv").symlink_to(src / f"{name}_pure.csv")
    stat.write_csv(pure / "video_features_statistic_pure.csv")
    for i, (lo, n) in enumerate([(0, 200), (200, 100), (300, 100)]):
        name = [
            "log_standard_4_08_to_4_21_27k_part1",
            "log_standard_4_08_to_4_21_27k_part2",
            "log_standard_4_22_to_5_08_27k",
        ][i]
        log.slice(lo, n).write_csv(k27 / f"{name}.csv")
    third = len(stat) // 3 + 1
    for i in range(3):
        stat.slice(i * third, third).write_csv(
            k27 / f"video_features_statistic_27k_part{i + 1}.csv"
        )

    a = prepare_kuairand(pure, tmp_path / "out_pure", logs=["log.csv"], progress=False)
    b = prepare_kuairand(k27, tmp_path / "out_27k", variant="27k", progress=False)
    assert b["dataset"] == "kuairand-27k" and b["source"]["logs"] == [
        "log_standard_4_08_to_4_21_27k_part1.csv",
        "log_standard_4_08_to_4_21_27k_part2.csv",
        "log_standard_4_22_to_5_08_27k.csv",
    ]
    assert (
        b["rows"] == a["rows"]
        and b["label_rate"] == a["label_rate"]
        and b["unjoined"] == a["unjoined"]
    )

    def fields(out):
        return [
            (f.name, f.vocab_size, f.boundaries) for f in Schema.load(out / layout.SCHEMA).fields
        ]

    assert fields(tmp_path / "out_27k") == fields(tmp_path / "out_pure")
    with pytest.raises(FileNotFoundError, match=r"log_standard_4_08_to_4_21_1k\.csv"):
        prepare_kuairand(k27, tmp_path / "out_1k", variant="1k", progress=False)
