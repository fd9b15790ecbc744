"""The simulator as an ad platform: daily sessions, ranked slates, ads with bids, and users
who come back when they are satisfied.

The world is simulator.py's (items, authors, users, interests, histories and the latent
click / like / long-view / watch-time model), with

    ads          an item is an ad iff its video_type is AD (about 15% of items); the
                 advertiser's bid b_i ~ LogNormal(log 0.5, 0.5) per click (CPC), or, with
                 `conversion`, per conversion: b_i ~ LogNormal(log 5, 0.5) and a
                 conversion rate c_i ~ U(0.05, 0.2) after a click (oCPC)
    satisfaction s_u in R, 0 at the start, after each session
                     s_u <- 0.7 s_u + 0.3 q,
                     q = 3 (relevance - 0.35) - (repetition - 0.4) - 2 max(0, ad_load - 0.25)
                 relevance: the mean true click probability of the slate (before the
                 position effect); repetition: the share of the slate whose tag was in the
                 user's previous slate or earlier in this one; ad_load: the share of ads.
                 A day without a session: s_u <- 0.9 s_u.
    retention    a user opens the app on a day with probability
                     p_return = sigma(beta[l(u)] + 2.5 s_u),
                 sigma(beta) = 0.35, 0.55, 0.75, 0.9 by activity level; a session's
                 retention label is whether the user returns the next day, its truth the
                 p_return after the session
    survey       after a sampled 10% of sessions the user answers 1..5:
                     round(3 + 2 s_u + 0.8 eps) clipped to [1, 5], eps ~ N(0, 1)

A day: every returning user opens one session at a uniform time of the day on one tab
(0..3 with probabilities 0.2, 0.6, 0.15, 0.05); the platform retrieves `candidates` distinct
items (each by interest with probability 0.6, else by popularity, as simulator.expose);
a ranker orders them and the user sees the first `slate` in order. Every shown item is an
impression at the session's time, its labels drawn from simulator.truth given the user's
history before the session, the click logit lowered by 0.1 per position. Revenue of an
impression: bid x click (x conversion). Histories, satisfaction and interests move after
the session and the day, as in simulator.py.

Every quantity's truth is recorded beside its draw: p_click (with the position effect),
p_like, p_long_view, e_play_time, e_revenue = bid x p_click (x c_i), and per session
p_return and e_survey (the expectation of the clipped, rounded answer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.special import expit, logit, ndtr

from infnet.data.sources.simulator import (
    SIGMA_WATCH,
    START_MS,
    VIDEO_TYPES,
    History,
    World,
    expected_watch,
    truth,
)

DAY_MS = 86_400_000
RETURN_BASE = logit(np.array([0.35, 0.55, 0.75, 0.9]))  # beta[l] by activity level
W_RETURN = 2.5
MEMORY = 0.7  # weight of the old satisfaction in a session's update
ABSENT_DECAY = 0.9
SURVEY_SHARE, SURVEY_NOISE = 0.1, 0.8
POSITION_EFFECT = 0.1
TAB_P = np.array([0.2, 0.6, 0.15, 0.05])
AD_TYPE = VIDEO_TYPES.index("AD")

# A ranker maps (users [n], candidates [n, C]) to an order of each row's candidates.
Ranker = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Ads:
    is_ad: np.ndarray  # bool [I]
    bid: np.ndarray  # [I], 0 for organic items
    cvr: np.ndarray  # [I], conversion rate after a click (1 without conversion)

    @classmethod
    def draw(cls, world: World, rng: np.random.Generator, conversion: bool) -> Ads:
        is_ad = world.item_type == AD_TYPE
        scale = 5.0 if conversion else 0.5
        bid = np.where(is_ad, np.exp(rng.normal(math.log(scale), 0.5, len(is_ad))), 0.0)
        cvr = rng.uniform(0.05, 0.2, len(is_ad)) if conversion else np.ones(len(is_ad))
        return cls(is_ad=is_ad, bid=bid, cvr=cvr)


def expected_survey(s: np.ndarray) -> np.ndarray:
    """E[clip(round(3 + 2 s + 0.8 eps), 1, 5)]: sum over the five answers of k P(answer = k)."""
    mean = 3.0 + 2.0 * s
    cuts = np.array([1.5, 2.5, 3.5, 4.5])
    cdf = ndtr((cuts[None, :] - mean[:, None]) / SURVEY_NOISE)  # P(x < cut) [n, 4]
    p = np.diff(np.concatenate([np.zeros((len(s), 1)), cdf, np.ones((len(s), 1))], axis=1), axis=1)
    return p @ np.arange(1, 6)


class Platform:
    """The world's state as the days pass; `session` serves one batch of sessions."""

    def __init__(
        self,
        world: World,
        rng: np.random.Generator,
        *,
        conversion: bool = False,
        candidates: int = 50,
        slate: int = 8,
    ) -> None:
        if not 1 <= slate <= candidates <= len(world.item_tag):
            raise ValueError(
                f"ad platform: need 1 <= slate ({slate}) <= candidates ({candidates}) <= "
                f"items ({len(world.item_tag)})"
            )
        self.world, self.rng = world, rng
        self.ads = Ads.draw(world, rng, conversion)
        self.history = History.start(world, rng)
        U = len(world.user_group)
        self.satisfaction = np.zeros(U)
        self.last_tags = np.full((U, slate), -1, np.int64)  # tags of each user's last slate
        self.candidates, self.slate = candidates, slate
        self.day = 0

    def p_return(self, users: np.ndarray | None = None) -> np.ndarray:
        u = slice(None) if users is None else users
        level = self.world.user_activity[u]
        return expit(RETURN_BASE[level] + W_RETURN * self.satisfaction[u])

    def arrivals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Today's sessions in time order: users, time_ms and tab."""
        users = np.flatnonzero(self.rng.random(len(self.satisfaction)) < self.p_return())
        t = START_MS + self.day * DAY_MS + self.rng.integers(0, DAY_MS, len(users))
        order = np.argsort(t, kind="stable")
        tab = self.rng.choice(4, len(users), p=TAB_P)
        return users[order], t[order], tab[order]

    def retrieve(self, users: np.ndarray) -> np.ndarray:
        """[n, C] distinct candidates per user: by interest (p 0.6) or by popularity."""
        w, C = self.world, self.candidates
        n = len(users)
        draws = 3 * C
        logits = self.history.interest[users] @ w.tag_emb.T  # [n, G]
        weight = np.exp(4.0 * logits - 4.0)
        cdf = np.cumsum(weight, axis=1)
        u = self.rng.random((n, draws)) * cdf[:, -1:]
        tag = (cdf[:, None, :] <= u[:, :, None]).sum(axis=2).clip(max=len(w.tag_count) - 1)
        offset = (self.rng.random((n, draws)) * w.tag_count[tag]).astype(np.int64)
        by_interest = w.tag_items[w.tag_start[tag] + offset]
        popular = np.searchsorted(w.pop_cdf, self.rng.random((n, draws)), side="right").clip(
            max=len(w.pop_cdf) - 1
        )
        pool = np.where(self.rng.random((n, draws)) < 0.6, by_interest, popular)
        out = np.empty((n, C), np.int64)
        for i in range(n):  # the first C distinct items of each row, in draw order
            _, first = np.unique(pool[i], return_index=True)
            keep = pool[i][np.sort(first)][:C]
            if len(keep) < C:  # a tiny catalogue: fill with unseen items
                rest = np.setdiff1d(np.arange(len(w.item_tag)), keep)
                keep = np.concatenate([keep, self.rng.permutation(rest)[: C - len(keep)]])
            out[i] = keep
        return out

    def session(
        self, users: np.ndarray, t: np.ndarray, tab: np.ndarray, shown: np.ndarray
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Users `users` see slates `shown` [n, k] at times t: (impressions [n, k] each,
        sessions [n] each), outcomes drawn and their truths; the state moves on."""
        w, rng = self.world, self.rng
        n, k = shown.shape
        flat_u = np.repeat(users, k)
        items = shown.reshape(-1)
        hour = ((t + 8 * 3_600_000) // 3_600_000 % 24).astype(np.int64)
        p = truth(w, self.history, flat_u, items, np.repeat(hour, k), np.repeat(tab, k))
        position = np.tile(np.arange(k), n)
        p_click = expit(logit(np.clip(p["click"], 1e-7, 1 - 1e-7)) - POSITION_EFFECT * position)
        click = rng.random(n * k) < p_click
        like = rng.random(n * k) < p["like"]
        long_view = rng.random(n * k) < p["long_view"]
        watch = np.maximum(0.0, p["watch_mu"] + SIGMA_WATCH * rng.standard_normal(n * k))
        convert = rng.random(n * k) < self.ads.cvr[items]
        bid = self.ads.bid[items]
        impressions = {
            "is_click": click,
            "is_like": like,
            "long_view": long_view,
            "play_time_ms": np.rint(np.expm1(watch)).astype(np.int64),
            "revenue": bid * (click & convert),
            "p_click": p_click,
            "p_like": p["like"],
            "p_long_view": p["long_view"],
            "e_play_time": expected_watch(p["watch_mu"]),
            "e_play_s": _expected_seconds(p["watch_mu"]),
            "e_revenue": bid * p_click * self.ads.cvr[items],
            "bid": bid,
            "is_ad": self.ads.is_ad[items],
        }
        impressions = {key: v.reshape(n, k) for key, v in impressions.items()}

        tags = w.item_tag[shown]  # [n, k]
        previous = self.last_tags[users]
        seen_before = (tags[:, :, None] == previous[:, None, :]).any(axis=2)
        earlier = np.triu(tags[:, :, None] == tags[:, None, :], 1).any(axis=1)
        repetition = (seen_before | earlier).mean(axis=1)
        relevance = p["click"].reshape(n, k).mean(axis=1)
        ad_load = impressions["is_ad"].mean(axis=1)
        q = 3.0 * (relevance - 0.35) - (repetition - 0.4) - 2.0 * np.maximum(0.0, ad_load - 0.25)
        self.satisfaction[users] = MEMORY * self.satisfaction[users] + (1 - MEMORY) * q
        self.last_tags[users] = tags
        s = self.satisfaction[users]
        surveyed = rng.random(n) < SURVEY_SHARE
        answer = np.clip(np.rint(3.0 + 2.0 * s + SURVEY_NOISE * rng.standard_normal(n)), 1, 5)
        sessions = {
            "relevance": relevance,
            "repetition": repetition,
            "ad_load": ad_load,
            "satisfaction": s.copy(),
            "p_return": self.p_return(users),
            "survey": np.where(surveyed, answer, np.nan),
            "e_survey": np.where(surveyed, expected_survey(s), np.nan),
        }
        for j in range(k):  # slot by slot: users are distinct within a slot
            self.history.record(w, users, shown[:, j], click[j::k], like[j::k], long_view[j::k])
        return impressions, sessions

    def end_day(self, served: np.ndarray) -> None:
        """After the day's sessions of users `served`: absent users forget, interests drift."""
        absent = np.ones(len(self.satisfaction), bool)
        absent[served] = False
        self.satisfaction[absent] *= ABSENT_DECAY
        self.history.drift(0.25, self.rng)
        self.day += 1


def _expected_seconds(mu: np.ndarray) -> np.ndarray:
    """E[expm1(max(0, mu + sigma eps))] / 1000: the expected play time in seconds (by
    quadrature over eps, since the log1p target's mean is not the time's)."""
    eps, weight = np.polynomial.hermite_e.hermegauss(24)
    weight = weight / weight.sum()
    y = np.maximum(0.0, mu[:, None] + SIGMA_WATCH * eps[None, :])
    return (np.expm1(y) @ weight) / 1000.0


def random_ranker(rng: np.random.Generator) -> Ranker:
    """The logging policy of the offline log: a uniformly random order (unbiased logs)."""
    return lambda users, cands: rng.permuted(
        np.tile(np.arange(cands.shape[1]), (len(users), 1)), axis=1
    )


def simulate_days(platform: Platform, days: int, ranker: Ranker) -> Iterator[pl.DataFrame]:
    """The impression log of `days` days under `ranker`, one frame a day. A row's
    `retention` (did the user return the next day) is known a day later, so each day's
    frame is yielded after the next one is simulated; the last day's is null."""
    pending: pl.DataFrame | None = None
    for _ in range(days):
        users, t, tab = platform.arrivals()
        if pending is not None:
            came = np.isin(pending["user_id"].to_numpy(), users)
            yield pending.with_columns(retention=pl.Series(came.astype(np.int8)))
        cands = platform.retrieve(users)
        order = ranker(users, cands)
        shown = np.take_along_axis(cands, order, axis=1)[:, : platform.slate]
        imp, ses = platform.session(users, t, tab, shown)
        pending = log_frame(users, t, tab, shown, imp, ses)
        platform.end_day(users)
    if pending is not None:
        yield pending.with_columns(retention=pl.lit(None, dtype=pl.Int8))


def log_frame(users, t, tab, shown, imp, ses) -> pl.DataFrame:
    """One row per impression, KuaiRand's columns plus the ad platform's."""
    n, k = shown.shape
    t_bj = np.repeat(t, k) + 8 * 3_600_000
    return pl.DataFrame(
        {
            "user_id": np.repeat(users, k).astype(np.int32),
            "video_id": shown.reshape(-1).astype(np.int32),
            "time_ms": np.repeat(t, k).astype(np.int64),
            "tab": np.repeat(tab, k).astype(np.int8),
            "hour": (t_bj // 3_600_000 % 24).astype(np.int8),
            "weekday": ((t_bj // DAY_MS + 3) % 7 + 1).astype(np.int8),
            "position": np.tile(np.arange(k), n).astype(np.int8),
            "is_click": imp["is_click"].reshape(-1).astype(np.int8),
            "is_like": imp["is_like"].reshape(-1).astype(np.int8),
            "long_view": imp["long_view"].reshape(-1).astype(np.int8),
            "play_time_ms": imp["play_time_ms"].reshape(-1),
            "revenue": imp["revenue"].reshape(-1).astype(np.float32),
            "p_click": imp["p_click"].reshape(-1).astype(np.float32),
            "p_like": imp["p_like"].reshape(-1).astype(np.float32),
            "p_long_view": imp["p_long_view"].reshape(-1).astype(np.float32),
            "e_play_time": imp["e_play_time"].reshape(-1).astype(np.float32),
            "e_revenue": imp["e_revenue"].reshape(-1).astype(np.float32),
            "p_return": np.repeat(ses["p_return"], k).astype(np.float32),
        }
    )


def ad_items_frame(items: pl.DataFrame, platform: Platform) -> pl.DataFrame:
    """The item table with the advertiser's bid (0 for organic items)."""
    return items.with_columns(ad_bid=pl.Series(platform.ads.bid.round(4)))
