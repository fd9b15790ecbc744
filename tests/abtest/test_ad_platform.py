"""The ad platform: reproducible, revenue and its truth from the bids, a better slate
makes users more satisfied and more likely to return, and the 4-task offline dataset."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from infnet.data.loader import PreparedDataset
from infnet.data.sources.ad_platform import Platform, expected_survey, random_ranker, simulate_days
from infnet.data.sources.simulator import truth
from infnet.data.sources.synthetic import build_raw, draw_world, prepare_synthetic


def platform(seed: int = 0, **kw) -> Platform:
    world, (_, _, rng) = draw_world(800, 400, seed)
    return Platform(world, rng, **kw)


def test_the_same_seed_gives_the_same_days():
    a = pl.concat(simulate_days(platform(), 3, random_ranker(np.random.default_rng(0))))
    b = pl.concat(simulate_days(platform(), 3, random_ranker(np.random.default_rng(0))))
    assert a.equals(b) and len(a) > 1000


def test_revenue_comes_from_ads_bids_and_clicks():
    p = platform(candidates=10, slate=10)
    frame = pl.concat(simulate_days(p, 2, random_ranker(np.random.default_rng(1))))
    bid = p.ads.bid[frame["video_id"].to_numpy()]
    np.testing.assert_allclose(
        frame["revenue"].to_numpy(), bid * frame["is_click"].to_numpy(), rtol=1e-6
    )
    np.testing.assert_allclose(
        frame["e_revenue"].to_numpy(), bid * frame["p_click"].to_numpy(), rtol=1e-5
    )
    assert (bid[~p.ads.is_ad[frame["video_id"].to_numpy()]] == 0).all()
    # the click rate falls with the position (the position effect)
    by_position = frame.group_by("position").agg(pl.col("p_click").mean()).sort("position")
    assert by_position["p_click"][0] > by_position["p_click"][-1]


def test_with_conversions_an_ad_pays_its_bid_only_when_a_click_converts():
    p = platform(candidates=10, slate=10, conversion=True)
    users, t, tab = p.arrivals()
    shown = p.retrieve(users)
    imp, _ = p.session(users, t, tab, shown)
    bid, cvr = p.ads.bid[shown], p.ads.cvr[shown]
    paid = imp["revenue"] > 0
    np.testing.assert_allclose(imp["revenue"][paid], bid[paid])
    assert imp["is_click"][paid].all() and paid.sum() < (imp["is_click"] & p.ads.is_ad[shown]).sum()
    np.testing.assert_allclose(imp["e_revenue"], bid * imp["p_click"] * cvr)


def test_retention_is_whether_the_user_came_back_the_next_day():
    p = platform()
    days = list(simulate_days(p, 3, random_ranker(np.random.default_rng(2))))
    first, second = days[0], days[1]
    came = set(second["user_id"].to_list())
    want = [int(u in came) for u in first["user_id"].to_list()]
    assert first["retention"].to_list() == want
    assert days[-1]["retention"].null_count() == len(days[-1])


def test_relevant_slates_make_users_satisfied_and_return():
    def run(best: bool) -> tuple[float, float]:
        p = platform(seed=3)
        for _ in range(6):
            users, t, tab = p.arrivals()
            cands = p.retrieve(users)

            flat = np.repeat(users, cands.shape[1])
            hour = np.repeat(((t + 8 * 3_600_000) // 3_600_000 % 24), cands.shape[1])
            score = truth(p.world, p.history, flat, cands.reshape(-1), hour,
                          np.repeat(tab, cands.shape[1]))["click"].reshape(cands.shape)  # fmt: skip
            order = np.argsort(-score if best else score, axis=1)
            shown = np.take_along_axis(cands, order, axis=1)[:, : p.slate]
            p.session(users, t, tab, shown)
            p.end_day(users)
        return float(p.satisfaction.mean()), float(p.p_return().mean())

    good, bad = run(True), run(False)
    assert good[0] > bad[0] + 0.1
    assert good[1] > bad[1] + 0.05


def test_expected_survey_is_the_mean_answer():
    rng = np.random.default_rng(4)
    s = np.array([-1.0, 0.0, 0.4])
    draws = np.clip(np.rint(3 + 2 * s[:, None] + 0.8 * rng.standard_normal((3, 200_000))), 1, 5)
    np.testing.assert_allclose(expected_survey(s), draws.mean(axis=1), atol=0.01)


def test_prepare_gives_the_four_ad_tasks(tmp_path):
    stats = prepare_synthetic(tmp_path / "ads", rows=20_000, users=600, items=300,
                              tasks=["click", "watch_time", "revenue", "retention"], progress=False)  # fmt: skip
    data = PreparedDataset(tmp_path / "ads")
    assert [(t.name, t.kind) for t in data.schema.tasks] == [
        ("is_click", "binary"), ("play_time", "regression"), ("revenue", "regression"),
        ("retention", "binary"),
    ]  # fmt: skip
    assert "ad_bid" in data.schema.field_names
    assert sum(stats["rows"].values()) == 20_000
    assert 0.5 < stats["oracle_auc"]["test"]["retention"] < 1.0


def test_ad_tasks_on_the_feed_platform_say_where_they_exist():
    with pytest.raises(ValueError, match="ad platform only"):
        build_raw(1000, 100, 100, 0, tasks=["is_click", "revenue"], platform="feed")
    with pytest.raises(ValueError, match="unknown tasks \\['ctr'\\]"):
        build_raw(1000, 100, 100, 0, tasks=["ctr"])
