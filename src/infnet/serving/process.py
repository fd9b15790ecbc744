"""`infnet serve` in a process of its own, for the tools that drive a real server (the A/B
test, the benchmarks): a free port, its output in a log file, started once it is ready."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def start_server(
    config: Path, log: Path, env: dict[str, str], timeout_s: float = 120
) -> tuple[subprocess.Popen, str]:
    """`infnet serve --config CONFIG` on a free port, its output in LOG: (process, url) once
    it is ready."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "infnet.cli", "serve", "--config", str(config),
               "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the server did not become ready; its output is in {log}")
