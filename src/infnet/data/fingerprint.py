"""Content fingerprints of a prepared dataset: models, stores and cached runs are matched on
what the files hold, not on paths or mtimes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from infnet.data import layout


def vocab_fingerprint(vocab_dir: str | Path) -> str:
    """sha256 over the vocabulary files: models and stores must encode with the same one."""
    digest = hashlib.sha256()
    files = sorted(Path(vocab_dir).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no vocabulary files in {vocab_dir}")
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def dataset_fingerprint(path: str | Path, limits: dict[str, int] | None = None) -> str:
    """Hash of the prepared directory's schema.json and stats.json, and of row limits."""
    h = hashlib.sha256()
    for name in (layout.SCHEMA, layout.STATS):
        file = Path(path) / name
        h.update(file.read_bytes() if file.is_file() else b"")
    if limits is not None:
        h.update(json.dumps(limits, sort_keys=True).encode())
    return h.hexdigest()[:16]
