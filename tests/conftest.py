"""Session fixtures shared by every test package (helpers.py has the plain functions)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_prepared(tmp_path_factory) -> Path:
    """A small simulated dataset, prepared once per test session."""
    from infnet.data.sources.synthetic import prepare_synthetic

    out = tmp_path_factory.mktemp("sim") / "prepared"
    prepare_synthetic(out, rows=6_000, users=300, items=200, seed=1, max_len=8)
    return out


@pytest.fixture(scope="session")
def flipped_prepared(tmp_path_factory) -> Path:
    """The simulator with one more task, `flipped`: is_click in train, 1 - is_click in valid
    and test, so whatever a model learns of it scores below chance there (a broken task)."""
    import polars as pl

    from infnet.data.prepare import prepare
    from infnet.data.sources.synthetic import build_raw
    from infnet.data.spec import SplitSpec, TaskSpec

    raw = build_raw(6_000, 300, 200, 1, max_len=8, tasks=["is_click", "long_view"])
    t = raw.log["time_ms"]
    cut, cut2, end = int(t.quantile(0.7)), int(t.quantile(0.85)), int(t.max()) + 1
    raw.log = raw.log.with_columns(
        pl.when(pl.col("time_ms") < cut)
        .then(pl.col("is_click"))
        .otherwise(1 - pl.col("is_click"))
        .alias("flipped")
    )
    raw.tasks = [*raw.tasks, TaskSpec("flipped", "flipped")]
    raw.split = SplitSpec(
        bounds={"train": (int(t.min()), cut), "valid": (cut, cut2), "test": (cut2, end)}
    )
    out = tmp_path_factory.mktemp("flipped") / "prepared"
    prepare(raw, out, progress=False)
    return out


# --- Redis ---------------------------------------------------------------------------------
class RedisServer:
    def __init__(self, workdir: Path, *, durable: bool = False) -> None:
        self.binary = shutil.which("redis-server")
        self.workdir, self.durable = workdir, durable
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
             "--save", "", "--appendonly", "yes" if self.durable else "no",
             "--appendfsync", "always", "--dbfilename", "dump.rdb"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.time() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (it may be stopped and restarted)."""
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary on PATH (install redis-server to run the Redis tests)")
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """As own_redis, with an append-only file: a restarted server has its data back."""
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary on PATH (install redis-server to run the Redis tests)")
    server = RedisServer(tmp_path, durable=True)
    yield server
    server.stop()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """$INFNET_REDIS_URL (CI) with a fresh key prefix, else a redis-server of our own."""
    if os.environ.get("INFNET_REDIS_URL"):
        import redis

        base, prefix = os.environ["INFNET_REDIS_URL"], f"infnet-test-{uuid.uuid4().hex[:8]}"
        yield f"{base}{'&' if '?' in base else '?'}prefix={prefix}"
        client = redis.Redis.from_url(base)
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
        return
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary on PATH and INFNET_REDIS_URL is not set")
    server = RedisServer(tmp_path)
    yield server.url
    server.stop()


# --- live servers --------------------------------------------------------------------------
class LiveServer:
    """create_app(config) served by uvicorn in a thread on a free 127.0.0.1 port."""

    def __init__(self, config) -> None:
        import uvicorn

        from infnet.serving.server import create_app, uvicorn_config

        self.app = create_app(config)
        self.state = self.app.state.serving
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn_config(self.app, config, "127.0.0.1", 0))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator:
    """A factory: live_server(model=..., store=..., ...) -> LiveServer, stopped after the test."""
    servers: list[LiveServer] = []

    def start(**settings) -> LiveServer:
        settings.setdefault("request_log", str(tmp_path / f"requests-{len(servers)}.sqlite"))
        server = LiveServer(_server_config(**settings))
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


def _server_config(**settings):
    from infnet.serving.config import ServerConfig

    return ServerConfig(**settings)
