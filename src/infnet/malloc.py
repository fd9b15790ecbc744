"""glibc malloc settings of a process: the server's arena cap, the trainer's kept heap (no torch
import here, so the server can make its settings before torch starts threads)."""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's malloc.h


def few_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas for this process; False where the C library is not glibc.
    Only arenas created afterwards obey it, so `infnet serve` calls it before it imports
    torch or ONNX Runtime, whose threads would each take an arena of their own.

    glibc gives threads that allocate at once arenas of their own, up to 8 per core; what a
    swapped-out model frees stays spread over them, so the server's RSS crept up with every
    hot swap (benchmarks/soak.py, 20 swaps in 10 min: +6.2% after the warm-up; with 2
    arenas +3.1%). The server's threads (event loop, feature lookups, one ONNX Runtime
    thread per session) allocate little on the request path, so they do not contend."""
    return _mallopt(M_ARENA_MAX, arenas)


def keep_freed_memory(largest_mb: int = 64) -> bool:
    """Serve blocks under `largest_mb` from the heap and keep up to twice that free at its top,
    so a training step reuses the pages of the step before; False where the C library is not
    glibc (or refuses).

    glibc maps each block above its mmap threshold (dynamic, at most 32 MB) straight from the
    kernel and unmaps it on free, so every step faulted in, page by page, fresh zeroed memory
    for its tens-of-MB activations and gradients (INFNet: [4096, 150, 16] floats, 39 MB;
    126,317 minor page faults a step, 40,786 with the heap kept: benchmarks/profile_step.py).
    Larger
    blocks still go back to the kernel: with no bound, HSTU's evaluation batches (16,384
    rows) stayed in the heap beside its training blocks, peak RSS 13.31 GB against 9.26 at
    batch 2,048, and two such runs were killed for memory on a 24 GB machine. Bounded: 9.33
    GB, and INFNet v1 4,823 samples/s against 4,249 (benchmarks/malloc.py)."""
    size = largest_mb << 20
    return _mallopt(M_MMAP_THRESHOLD, size) and _mallopt(M_TRIM_THRESHOLD, 2 * size)


def _mallopt(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        return bool(libc.mallopt(option, value))
    except (OSError, AttributeError):
        return False
