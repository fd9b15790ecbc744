"""trim_heap: freed heap among live chunks goes back to the system (glibc)."""

from __future__ import annotations

import os
import platform

import pytest

from infnet.serving.memory import trim_heap


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim"
)
def test_freed_chunks_among_live_ones_return_to_the_system():
    # what a swapped-out model leaves: many freed chunks with a few live ones among them,
    # which glibc keeps in its heap instead of returning
    chunks = [bytearray(2000) for _ in range(150_000)]  # about 300 MB
    keep = chunks[::200]
    del chunks
    before = _rss_mb()
    assert trim_heap()
    after = _rss_mb()
    assert before - after > 100, (before, after)
    assert len(keep) == 750
