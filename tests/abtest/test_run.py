"""`infnet abtest` end to end on a tiny platform: through a real server, each arm updated
from its own traffic, and a server killed mid-test leaves a complete partial report."""

from __future__ import annotations

import json

import polars as pl
import pytest

from infnet.abtest.config import ABConfig
from infnet.abtest.run import ABTest
from infnet.streaming.events import IMPRESSIONS, open_event_log
from infnet.streaming.samples import SampleParts

TINY = dict(users=300, items=200, warmup_days=2, epochs=1, candidates=12, slate=4,
            control="lr", treatment="fm", days=4)  # fmt: skip


class KilledAfter(ABTest):
    """The server dies after the second night."""

    def run_day(self, day: int) -> None:
        super().run_day(day)
        if day == 1:
            self.server.kill()
            self.server.wait()


def test_a_server_killed_mid_test_leaves_a_complete_partial_report(tmp_path):
    test = KilledAfter(ABConfig(**TINY), tmp_path / "ab")
    test.setup()
    test.run()
    out = tmp_path / "ab"
    assert test.stopped and "server exited" in test.stopped
    sessions = pl.read_parquet(out / "sessions.parquet")
    assert sorted(sessions["day"].unique().to_list()) == [0, 1]  # whole days only
    assert set(sessions["arm"]) == {"control", "treatment"}
    assert (sessions["status"] == 200).all()
    report = (out / "report.md").read_text()
    assert "Stopped early after 2 of 4 days: the server exited" in report
    assert "control MTL-AUC 0." in report and "treatment MTL-AUC 0." in report  # offline
    for section in ("Business metrics", "30-day trend", "System metrics per arm", "Guards"):
        assert f"## {section}" in report
    results = json.loads((out / "results.json").read_text())
    assert results["days_run"] == 2 and results["stopped"] == test.stopped
    assert (out / "figures" / "trend.png").stat().st_size > 10_000
    assert [json.loads(line)["day"] for line in (out / "days.jsonl").read_text().splitlines()] == [
        0,
        1,
    ]

    # the server logged only what was shown: `slate` impressions a session
    log = open_event_log(out / "events.sqlite")
    assert log.length(IMPRESSIONS) == len(sessions) * TINY["slate"]
    # each arm learned from its own users' samples only
    for arm in ("control", "treatment"):
        mine = SampleParts(out / "stream" / "samples", arm=arm)
        assert set(mine.frame["__arm"]) == {arm}
        progress = json.loads((out / "stream" / arm / "trainer" / "progress.json").read_text())
        assert 0 < progress["trained"] <= mine.num_rows("train")


def test_bad_settings_name_the_setting():
    with pytest.raises(ValueError, match="treatment: unknown model 'infnet2'"):
        ABConfig(treatment="infnet2")
    with pytest.raises(ValueError, match="slate"):
        ABConfig(candidates=5, slate=8)
    with pytest.raises(ValueError, match="leaves an arm without buckets"):
        ABConfig(treatment_share=0.001)
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        ABConfig(days=0)


def test_the_command_names_a_bad_option(tmp_path):
    from typer.testing import CliRunner

    from infnet.cli import app

    for args, message in (
        (["--days", "0"], "--days: Input should be greater than or equal to 1"),
        (["--treatment", "infnet2"], "treatment: unknown model 'infnet2' (models: "),
    ):
        result = CliRunner().invoke(app, ["abtest", "--out", str(tmp_path / "ab"), *args])
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.replace("│", " ").split())
        assert not (tmp_path / "ab").exists()  # refused before anything is written
