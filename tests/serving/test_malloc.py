"""The server's malloc arena cap: threads started after it share the capped arenas."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

ARENAS = """
import ctypes, sys, tempfile, threading
from infnet.serving.malloc import few_malloc_arenas
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
