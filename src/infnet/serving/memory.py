"""Handing the heap a hot swap or a feature reload freed back to the operating system.

A swap drops a whole model (an ONNX session and its weights) and a feature reload drops
every lookup thread's store connection and cache: tens of MB freed in chunks among live
ones. glibc's malloc keeps such memory in its arenas for reuse, and a server that swaps
every few minutes grows its resident size by fragments of each old model. `malloc_trim(0)`
returns the free pages of every arena (glibc 2.8 and later); on a C library without it
(musl, macOS) `trim_heap` does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger("infnet.serving")


def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return None if libc is None else libc.malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def trim_heap() -> bool:
    """Collect garbage, then return free heap pages to the system; whether it could."""
    gc.collect()  # an old model held in a reference cycle is freed before the trim
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
