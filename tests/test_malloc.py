"""glibc malloc settings: the server's arena cap (threads started after it share the capped
arenas) and the trainer's kept heap (a freed block's pages serve the next one)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

ARENAS = """
import ctypes, sys, tempfile, threading
from infnet.malloc import few_malloc_arenas
if sys.argv[1] == "capped":
    assert few_malloc_arenas(2)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.fopen.restype = ctypes.c_void_p
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
held, start = [], threading.Barrier(6)
def grab():
    start.wait()  # all at once: each thread's first malloc takes an arena of its own
    held.append(libc.malloc(4096))
threads = [threading.Thread(target=grab) for _ in range(6)]
[t.start() for t in threads]; [t.join() for t in threads]
with tempfile.NamedTemporaryFile("r") as f:
    out = libc.fopen(f.name.encode(), b"w")
    libc.malloc_info(0, out); libc.fclose(out)
    print(f.read().count("<heap nr="))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's")
def test_the_server_caps_malloc_arenas() -> None:
    # what keeps its RSS flat across hot swaps (few_malloc_arenas)
    run = [sys.executable, "-c", ARENAS]
    free = int(subprocess.run([*run, "free"], capture_output=True, text=True, check=True).stdout)
    capped = subprocess.run([*run, "capped"], capture_output=True, text=True, check=True)
    assert free >= 4 and int(capped.stdout) <= 2


FAULTS = """
import ctypes, resource, sys
from infnet.malloc import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = int(sys.argv[2]) << 20
faults = []
for _ in range(3):  # an activation of a train step, allocated, written and freed every step
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(faults[-1])
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc thresholds are glibc's")
def test_the_trainer_reuses_freed_blocks_under_the_bound_and_returns_larger_ones() -> None:
    # what keeps a train step from faulting in its tens-of-MB tensors anew, and evaluation's
    # hundreds of MB from staying in the heap (keep_freed_memory)
    def faults(mode: str, mb: int) -> int:
        run = [sys.executable, "-c", FAULTS, mode, str(mb)]
        return int(subprocess.run(run, capture_output=True, text=True, check=True).stdout)

    pages = {mb: (mb << 20) // 4096 for mb in (40, 100)}
    # 40 MB: above glibc's largest dynamic mmap threshold (32 MB), under the bound (64 MB)
    assert faults("fresh", 40) >= pages[40] // 2 and faults("kept", 40) < pages[40] // 100
    assert faults("kept", 100) >= pages[100] // 2
