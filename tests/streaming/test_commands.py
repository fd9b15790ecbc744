from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
from typer.testing import CliRunner

from infnet.cli import app
from infnet.streaming.events import open_event_log
from infnet.streaming.label_matcher import LabelMatcher, MatcherConfig, read_samples
from infnet.streaming.metrics import MatcherMetrics

from .test_label_matcher import _traffic, push


def test_matcher_command_drains_the_log_into_samples(small_prepared, tmp_path):
    log = open_event_log(tmp_path / "events.sqlite")
    push(log, *_traffic(2))
    config = tmp_path / "matcher.yaml"
    config.write_text("windows_s: {is_click: 10, is_like: 20, long_view: 20}\nbatch: 64\n")
    result = CliRunner().invoke(app, [
        "stream", "matcher", "--events", str(tmp_path / "events.sqlite"), "--state",
        str(tmp_path / "m.sqlite"), "--schema", str(small_prepared), "--config", str(config), "--drain",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "samples 400" in result.output
    assert len(read_samples(tmp_path / "m.sqlite")) == 400


def test_matcher_command_names_a_misspelt_setting(small_prepared, tmp_path):
    config = tmp_path / "matcher.yaml"
    config.write_text("lateness: 5\n")
    result = CliRunner().invoke(app, [
        "stream", "matcher", "--events", str(tmp_path / "e.sqlite"), "--state",
        str(tmp_path / "m.sqlite"), "--schema", str(small_prepared), "--config", str(config),
    ])  # fmt: skip
    assert result.exit_code != 0 and "did you mean 'lateness_s'" in str(result.exception)


def test_matcher_metrics(small_prepared, schema, tmp_path):
    log = open_event_log(tmp_path / "events.sqlite")
    push(log, *_traffic(3))
    m = LabelMatcher(log, tmp_path / "m.sqlite", schema, MatcherConfig(batch=100))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    metrics = MatcherMetrics(m, port)
    m.step()
    metrics.update()
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'infnet_matcher_lag{stream="impressions"} ' in text
    assert 'infnet_matcher_events{outcome="impressions"} 100.0' in text
    assert "infnet_matcher_join_rate" in text and "infnet_matcher_watermark_delay_seconds" in text
    m.close()


def test_a_matcher_killed_with_sigkill_resumes_with_nothing_lost_or_doubled(
    small_prepared, tmp_path
):
    events = [e for seed in range(4, 14) for e in _traffic(seed)]  # 10 x 400 impressions
    for name in ("events.sqlite", "reference.sqlite"):
        push(open_event_log(tmp_path / name), *events)
    config = tmp_path / "matcher.yaml"
    config.write_text("batch: 20\n")
    command = [sys.executable, "-m", "infnet.cli", "stream", "matcher", "--schema", str(small_prepared),
               "--config", str(config), "--idle-s", "0.05"]  # fmt: skip
    subprocess.run(
        [*command, "--events", str(tmp_path / "reference.sqlite"),
         "--state", str(tmp_path / "reference-state.sqlite"), "--drain"],
        check=True, capture_output=True,
    )  # fmt: skip
    own = ["--events", str(tmp_path / "events.sqlite"), "--state", str(tmp_path / "state.sqlite")]
    for delay in (2.5, 0.4, 0.7):
        p = subprocess.Popen([*command, *own], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    subprocess.run([*command, *own, "--drain"], check=True, capture_output=True)
    got = sorted((s["sample_id"], s["labels"]) for _, s in read_samples(tmp_path / "state.sqlite"))
    want = sorted(
        (s["sample_id"], s["labels"]) for _, s in read_samples(tmp_path / "reference-state.sqlite")
    )
    assert len(got) == len({k for k, _ in got}) and got == want
