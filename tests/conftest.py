"""Session fixtures shared by every test package (helpers.py has the plain functions)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_prepared(tmp_path_factory) -> Path:
    """A small simulated dataset, prepared once per test session."""
    from infnet.data.sources.synthetic import prepare_synthetic

    out = tmp_path_factory.mktemp("sim") / "prepared"
    prepare_synthetic(out, rows=6_000, users=300, items=200, seed=1, max_len=8)
    return out
