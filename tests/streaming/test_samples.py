"""From impressions of real rows to sample parts, and back as the very batches the offline
loader gives for those rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import torch

from infnet.data.loader import PreparedDataset
from infnet.models.checkpoint import load_checkpoint
from infnet.streaming.online_trainer import OnlineTrainer
from infnet.streaming.samples import SampleParts, SampleWriter, held_out, parts


def test_samples_are_the_loaders_batches_of_the_same_rows(small_prepared, streamed):
    samples, _ = streamed
    data = PreparedDataset(small_prepared)
    parts_ = SampleParts(samples, holdout=0.0)
    assert parts_.num_rows("train") == 900 and parts_.num_rows("valid") == 0
    rows = np.array([int(r.split("-")[1]) for r in parts_.frame["__request_id"].to_list()])
    got, want = parts_.batch_at("train", np.arange(900)), data.batch_at("test", rows)
    for name in ("categorical", "seq_ids", "seq_mask", "seq_gap", "labels", "label_mask", "user"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name


def test_parts_cover_every_sample_once_and_a_rerun_writes_nothing_twice(small_prepared, streamed):
    samples, state = streamed
    ranges = [(a, b) for a, b, _ in parts(samples)]
    assert ranges[0][0] == 1 and ranges[-1][1] == 900
    assert all(b + 1 == c for (_, b), (c, _) in zip(ranges, ranges[1:], strict=False))
    again = SampleWriter(state, samples, small_prepared / "schema.json", part_rows=128)
    assert again.flush(force=True) == 0
    assert len(parts(samples)) == 8


def test_holdout_is_a_stable_share_by_sample_id():
    ids = [f"s{i}" for i in range(20_000)]
    held = held_out(ids, 0.05)
    assert 0.045 < held.mean() < 0.055
    assert (held_out(ids[::-1], 0.05)[::-1] == held).all()


def test_an_interrupted_online_trainer_ends_with_the_uninterrupted_weights(
    start_run, streamed, tmp_path
):
    samples, _ = streamed
    whole = OnlineTrainer(start_run, samples, tmp_path / "whole", batch_size=32)
    assert whole.run() == (900 - 48) // 32  # less the 48 held out (5%), full batches only
    for k in (3, 5, 100):  # three lives: 3 steps, 5 more, then the rest
        t = OnlineTrainer(start_run, samples, tmp_path / "parts", batch_size=32)
        t.run(max_steps=k)
    assert t.offset == whole.offset and t.trained == whole.trained
    for name, w in whole.weights().items():
        np.testing.assert_array_equal(t.weights()[name], w, err_msg=name)
    start = load_checkpoint(start_run / "best.pt")["model"]
    assert any(not torch.equal(start[k], v) for k, v in whole.model.state_dict().items())


def test_a_trainer_killed_with_sigkill_resumes_with_nothing_lost_or_doubled(
    start_run, streamed, tmp_path
):
    samples, _ = streamed
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "infnet.cli", "stream", "trainer", "--start", str(start_run),
               "--samples", str(samples), "--batch-size", "4", "--idle-s", "0.05"]  # fmt: skip
    subprocess.run([*command, "--out", str(tmp_path / "whole"), "--drain"], check=True, env=env,
                   capture_output=True)  # fmt: skip
    state = tmp_path / "killed" / "state.pt"
    progress = []
    for pause in (0.05, 0.2, 0.1):
        p = subprocess.Popen([*command, "--out", str(tmp_path / "killed")], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        before = int(load_checkpoint(state)["progress"][1]) if state.is_file() else 0
        deadline = time.time() + 60
        while time.time() < deadline and (
            not state.is_file() or int(load_checkpoint(state)["progress"][1]) == before
        ):
            time.sleep(0.01)
        time.sleep(pause)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        progress.append(int(load_checkpoint(state)["progress"][1]))
    subprocess.run([*command, "--out", str(tmp_path / "killed"), "--drain"], check=True, env=env,
                   capture_output=True)  # fmt: skip
    whole, killed = load_checkpoint(tmp_path / "whole" / "state.pt"), load_checkpoint(state)
    assert progress == sorted(progress) and 0 < progress[0] < int(whole["progress"][1])
    assert torch.equal(killed["progress"], whole["progress"])
    for name, w in whole["model"].items():
        assert torch.equal(killed["model"][name], w), name
