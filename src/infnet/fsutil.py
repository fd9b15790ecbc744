"""Writing a directory all at once: readers see the old one or the new one, never half; and
never over the inputs it is made from."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def refuse_overlap(out: Path, inputs: Iterable[Path], option: str = "--out") -> None:
    """Stop before anything is written when `out` is an input, holds one, or lies inside an
    input directory: replacing `out` would delete what it is made from."""
    target = Path(out).resolve()
    for path in inputs:
        p = Path(path).resolve()
        if target == p or p.is_relative_to(target) or (p.is_dir() and target.is_relative_to(p)):
            where = (
                "is" if target == p else "contains" if p.is_relative_to(target) else "lies inside"
            )
            raise ValueError(
                f"{option} {out} {where} the input {path}; choose an output apart from the "
                "inputs (nothing was written or deleted)"
            )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_orphans(out: Path) -> list[Path]:
    """The temporary directories beside `out` left by a killed writer (its pid is in the name
    and no longer runs): removed; returns them."""
    removed = []
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(\d+)-[a-z0-9_]+\.(tmp|old|synthetic)$")
    if not out.parent.is_dir():
        return removed
    for entry in out.parent.iterdir():
        m = pattern.match(entry.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()
            removed.append(entry)
    return removed


def temporary_beside(out: Path, kind: str = "tmp") -> Path:
    """A new directory beside `out`, named so that `remove_orphans` knows its writer."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(out)
    return Path(
        tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}-", suffix=f".{kind}", dir=out.parent)
    )


@contextmanager
def atomic_directory(out: Path) -> Iterator[Path]:
    """Yield a temporary directory beside `out` to write into. On success it replaces `out`
    (an old `out` is moved aside first, then removed); on any failure it is removed and
    `out` is left as it was. Temporaries of writers killed earlier are removed first."""
    tmp = temporary_beside(out)
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.old")
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
