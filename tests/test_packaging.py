"""The wheel holds the whole package, its shipped dataset YAMLs included, and a non-editable
install runs: the code must not read files from the checkout it was built in."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout, wherever infnet is installed from
SRC = ROOT / "src" / "infnet"


def test_a_non_editable_install_holds_every_module_and_dataset_yaml(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    [wheel] = (tmp_path / "dist").glob("infnet-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {
        str(p.relative_to(SRC.parent)) for p in SRC.rglob("*") if p.suffix in (".py", ".yaml")
    }
    assert wanted and wanted <= names, sorted(wanted - names)[:5]

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    code = (
        "import sys, infnet; from infnet.cli import main;"
        "from infnet.data.sources.table import shipped_config;"
        "print(infnet.__file__); print(shipped_config('movielens-1m'));"
        "sys.argv = ['infnet', 'prepare', 'movielens', '--help']; main()"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith(str(site)) and lines[1].startswith(str(site))
    assert "--data-dir" in out.stdout
