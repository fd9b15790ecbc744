"""The README's Quick tour and Serving blocks run as written: each block is extracted,
pointed at the real KuaiRand data (or skipped without it), shortened where it would take
minutes (a few steps instead of 4 epochs, a 2 s load test), and run by bash in a fresh
folder with the venv's `infnet` first on PATH. A README that drifts from the CLI fails."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests.helpers import kuairand_dir

README = Path(__file__).resolve().parents[1] / "README.md"


def block(section: str) -> str:
    """The first shell code block under the README's `## {section}` heading."""
    text = README.read_text()
    start = text.index(f"\n## {section}")
    found = re.search(r"```(?:bash|sh)\n(.*?)```", text[start:], re.S)
    assert found, f"README: no shell block under ## {section}"
    return found.group(1)


def shortened(script: str, replacements: list[tuple[str, str]]) -> str:
    for old, new in replacements:
        assert old in script, f"README changed: {old!r} is no longer in the block"
        script = script.replace(old, new)
    return script


def run_bash(script: str, cwd: Path, timeout: int) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def tour(tmp_path_factory) -> Path:
    data = kuairand_dir()
    cwd = tmp_path_factory.mktemp("tour")
    script = shortened(
        block("Quick tour"),
        [
            ("--data-dir ../shared/data/kuairand-pure", f"--data-dir {data}"),
            ("--set epochs=4", "--set epochs=1 --set max_steps=3 --no-progress"),
            ("--rows 200000", "--rows 20000"),
        ],
    )
    out = run_bash(script, cwd, timeout=600)
    (cwd / "tour.out").write_text(out)
    return cwd


def test_quick_tour_runs_as_written(tour: Path) -> None:
    metrics = json.loads((tour / "runs/infnet/test_metrics.json").read_text())
    assert set(metrics["test"]) >= {"is_click", "is_like", "long_view", "mtl_auc"}
    assert json.loads((tour / "data/sim/stats.json").read_text())["rows"]["train"] == 14_000
    out = (tour / "tour.out").read_text()
    assert "hstu" in out and "infnet" in out  # `infnet models`


def test_serving_block_runs_as_written(tour: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = shortened(
        block("Serving"),
        [
            (
                "--port 8000",
                f"--port {port} > serve.log 2>&1 &\nSERVER=$!; trap 'kill $SERVER' EXIT\n"
                f"for i in $(seq 120); do curl -sf localhost:{port}/readyz > /dev/null && break; "
                "sleep 1; done",
            ),
            ("localhost:8000", f"localhost:{port}"),
            ("http://127.0.0.1:8000", f"http://127.0.0.1:{port}"),
            ("--duration 10", "--duration 2"),
        ],
    )
    out = run_bash(script, tour, timeout=600)
    answer, _ = json.JSONDecoder().raw_decode(out[out.index('{"request_id"') :])  # curl's
    assert answer["request_id"] == "r1", answer
    assert {str(i["id"]) for i in answer["items"]} == {"1021", "77", "3051"}
    assert all(i["known"] for i in answer["items"])  # every video of the table is in the store
    assert (tour / "models/v1/model.onnx").is_file()


def test_scale_out_block_runs_as_written(tour: Path) -> None:
    steps = "--set epochs=1 --set max_steps=3 --no-progress"
    script = shortened(
        block("Scale-out training"),
        [
            ("--out runs/ddp --nproc 2 --set epochs=1", f"--out runs/ddp --nproc 2 {steps}"),
            ("--out runs/ddp2 --set epochs=1", f"--out runs/ddp2 {steps}"),
            ("--set memory_budget_mb=256 --set epochs=1", f"--set memory_budget_mb=256 {steps}"),
        ],
    )
    run_bash(script, tour, timeout=900)
    ddp = json.loads((tour / "runs/ddp/test_metrics.json").read_text())["test"]
    torchrun = json.loads((tour / "runs/ddp2/test_metrics.json").read_text())["test"]
    # the same command under the two launchers: the same seed, batches and weights
    assert abs(ddp["mtl_auc"] - torchrun["mtl_auc"]) < 1e-4, (ddp, torchrun)
    assert json.loads((tour / "runs/ooc/test_metrics.json").read_text())["test"]["mtl_auc"] > 0
    results = json.loads((tour / "reports/ddp/results.json").read_text())
    assert "infnet" in json.dumps(results) and "mmoe" in json.dumps(results)
