"""Tenrec QB-Video: the official QB-video.csv through datasets/tenrec-qb-video.yaml.

Columns user_id, item_id, click, follow, like, share, video_category, watching_times,
gender, age. Tasks click, like, follow, share (as in the INFNet paper); histories of
clicked and liked videos. Tenrec has no timestamp: the row order is the time order.
"""

from __future__ import annotations

from pathlib import Path

import typer

from infnet.data.sources.table import prepare_table, report, require_files, shipped_config

FILES = ["QB-video.csv"]
URL = "https://github.com/yuangh-x/2022-NIPS-Tenrec (the Tenrec release, QB-video.csv)"


def prepare_tenrec(
    data_dir: str | Path, out: str | Path, *, overwrite: bool = False, progress: bool = True
) -> dict:
    require_files(Path(data_dir), FILES, "Tenrec QB-Video", URL)
    return prepare_table(
        shipped_config("tenrec-qb-video"), out, data_dir, overwrite=overwrite, progress=progress
    )


def command(
    data_dir: Path = typer.Option(..., "--data-dir", help="Folder with QB-video.csv."),
    out: Path = typer.Option(..., "--out", help="Prepared dataset directory to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
    progress: bool = typer.Option(True, help="Log the steps."),
) -> None:
    """Prepare Tenrec QB-Video (click, like, follow, share; row order = time order)."""
    report(prepare_tenrec(data_dir, out, overwrite=overwrite, progress=progress), out)
