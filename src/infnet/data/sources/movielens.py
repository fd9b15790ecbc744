"""MovieLens-1M: the official ml-1m files through the shipped datasets/movielens-1m.yaml.

ratings.dat (UserID::MovieID::Rating::Timestamp), users.dat (UserID::Gender::Age::
Occupation::Zip-code) and movies.dat (MovieID::Title::Genres), `::` separated, latin-1.
Tasks: like = rating >= 4, rating (regression); histories of rated and liked movies.
"""

from __future__ import annotations

from pathlib import Path

import typer

from infnet.data.sources.table import prepare_table, report, require_files, shipped_config

FILES = ["ratings.dat", "users.dat", "movies.dat"]
URL = "https://grouplens.org/datasets/movielens/1m/ (ml-1m.zip)"


def prepare_movielens(
    data_dir: str | Path, out: str | Path, *, overwrite: bool = False, progress: bool = True
) -> dict:
    require_files(Path(data_dir), FILES, "MovieLens-1M", URL)
    return prepare_table(
        shipped_config("movielens-1m"), out, data_dir, overwrite=overwrite, progress=progress
    )


def command(
    data_dir: Path = typer.Option(
        ..., "--data-dir", help="Folder with ratings.dat, users.dat, movies.dat (unzipped ml-1m)."
    ),
    out: Path = typer.Option(..., "--out", help="Prepared dataset directory to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
    progress: bool = typer.Option(True, help="Log the steps."),
) -> None:
    """Prepare MovieLens-1M (like = rating >= 4, rating; rated / liked histories)."""
    report(prepare_movielens(data_dir, out, overwrite=overwrite, progress=progress), out)
