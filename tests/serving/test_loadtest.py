"""`infnet serve` as a real process, driven by `infnet loadtest`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
from typer.testing import CliRunner

from infnet.cli import app
from infnet.serving.loadtest import run_loadtest


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
