"""`infnet serve` as a real process, driven by `infnet loadtest`."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import httpx
from typer.testing import CliRunner

from infnet.cli import app
from infnet.serving.loadtest import _Connections, run_loadtest


def test_serve_command_under_open_loop_load(model_dir, feature_db, small_prepared, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "infnet.cli", "serve", "--model", str(model_dir), "--store", feature_db,
               "--port", str(port), "--request-log", str(tmp_path / "log.sqlite")]  # fmt: skip
    server = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "INFNET_ADMIN_TOKEN": ""},
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stdout.read().decode()
            assert time.time() < deadline, "server did not become ready"
            time.sleep(0.1)

        report = run_loadtest(
            url, small_prepared, qps=40, duration_s=1.0, candidates=20, server_pid=server.pid
        )
        assert report["requests"] == 40 and report["ok"] == 40 and report["errors"] == {}
        lat = report["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert 0 < report["server_ms"]["p50"] <= lat["p50"]  # the server's part of the latency
        assert report["achieved_qps"] > 10
        assert report["server"]["source"] == "psutil" and report["server"]["rss_mb"] > 50

        out = tmp_path / "report.json"
        result = CliRunner().invoke(
            app,
            [
                "loadtest",
                "--url",
                url,
                "--data",
                str(small_prepared),
                "--qps",
                "20",
                "--duration",
                "0.5",
                "--candidates",
                "10",
                "--out",
                str(out),
            ],
        )
        assert result.exit_code == 0, result.output
        saved = json.loads(out.read_text())
        assert (
            saved["ok"] == 10
            and saved["server"]["source"] == "metrics"
            and saved["server"]["rss_mb"] > 50
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_kept_alive_connection_the_server_closed_is_not_an_error():
    # A server that answers one request per connection, then closes it: when idle (the
    # client sees the close before reusing it), or on reading the next request (a close
    # racing the reuse; nothing of a response came back). Every post must still succeed.
    accepted = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        if len(accepted) == 1:  # closed while idle
            writer.close()
            return
        await reader.readuntil(b"\r\n\r\n")  # the next request: closed unanswered
        writer.close()

    async def main() -> list[int]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = _Connections(f"http://127.0.0.1:{port}")
        statuses = []
        for _ in range(3):
            statuses.append((await client.post("/v1/rank", b"{}"))[0])
            await asyncio.sleep(0.05)
        client.close()
        server.close()
        return statuses

    assert asyncio.run(main()) == [200, 200, 200]
    assert len(accepted) == 3  # post 1, post 2 on a new connection, post 3 retried on a new one
