"""The server process's malloc settings, made before any thread starts (no torch import here)."""

from __future__ import annotations

import ctypes

M_ARENA_MAX = -8  # glibc's malloc.h


def few_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas for this process; False where the C library is not glibc.
    Only arenas created afterwards obey it, so `infnet serve` calls it before it imports
    torch or ONNX Runtime, whose threads would each take an arena of their own.

    glibc gives threads that allocate at once arenas of their own, up to 8 per core; what a
    swapped-out model frees stays spread over them, so the server's RSS crept up with every
    hot swap (benchmarks/soak.py, 20 swaps in 10 min: +6.2% after the warm-up; with 2
    arenas +3.1%). The server's threads (event loop, feature lookups, one ONNX Runtime
    thread per session) allocate little on the request path, so they do not contend."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
