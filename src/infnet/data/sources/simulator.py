"""The built-in simulator: KuaiRand-shaped logs from a latent model whose truth is known.

World, drawn once from the seed:
    tags g = 1..G (G = clip(items / 50, 8, 64)) with unit embeddings e_g in R^D, D = 8;
    authors a (items / 8 of them) with a main tag, an appeal s_a ~ N(0, 0.8^2) and a style
    c_a in {0..3}; items i with author a(i), tag g(i) (the author's main tag with
    probability 0.7), video_type k(i) in {0..3}, duration d_i ~ LogNormal(log 25 s, 0.8)
    clipped to [3, 600] s, quality q_i ~ N(0, 0.4^2); users u with a gender x age group
    grp(u) (18 groups), an activity level l(u) in {low, middle, high, full}, a bias
    b_u ~ N(0, 0.3^2), a home tag, follow / fan counts and onehot attributes; tables
    H[hour // 6, k] ~ N(0, 0.6^2), A[grp, c] ~ N(0, 0.6^2), gamma[grp] ~ U(0.5, 3).

Per-user state (the behaviour history), updated after every round:
    v_u      interest in R^D, unit norm: starts near the home tag, then drifts,
             v_u <- normalise(v_u + 0.25 sqrt(round length in days) xi),  xi ~ N(0, I / D)
    r_tag    sum_j 0.8^j [tag of the j-th most recent click == g(i)]      (last 20 clicks)
    r_auth   sum_j 0.9^j [author of the j-th most recent like == a(i)]    (last 10 likes)
    n_lv     number of long views so far

Exposure: 14 days from 2022-04-25 (UTC+8) cut into rounds; each round user u is active
with probability pi[l(u)] = 0.15, 0.35, 0.6, 0.85 and sees one item: by interest retrieval
(tag ~ softmax(4 <v_u, e_g>), item uniform in the tag; tab 1) with probability 0.6, else by
popularity (p(i) ~ exp(q_i) / rank^0.8; tab 0, 2 or 3). One impression per user per round,
so the state a label reads is exactly the user's history strictly before its time_ms:
what prepare's point-in-time sequences hold.

Labels, drawn independently given the truth (sigma is the logistic function):
    is_click   p_c = sigma(-1.8 + 2.5 <v_u, e_g> + 0.5 r_tag + H[hour // 6, k]
                           + rho[tab] + q_i + b_u),           rho = 0, 0.3, -0.2, -0.5
    is_like    p_l = sigma(-4.2 + gamma[grp] r_auth + A[grp, c_a] + s_a + 0.8 <v_u, e_g>)
    long_view  p_v = sigma(-2.3 + s_v),  s_v = -kappa[l] log(d_i / 25 s) + 0.3 log(1 + n_lv)
                           + 2 <v_u, e_g> + 0.5 q_i,          kappa = 2, 1.5, 1, 0.5
    play_time  y = log1p(play_time_ms) = max(0, mu + 0.6 eps),  eps ~ N(0, 1),
               mu = log(1000 d_i) - 0.7 + 0.4 s_v
Each task reads a different interaction: click the drifting interest x the candidate's tag,
the click history's tags, and hour x video_type; like the like history's authors x the user
group, and group x author style; long view duration x activity level and the long-view
history length. The histories and the drift carry what ids alone cannot.

The log records the truth of each label: p_click, p_like, p_long_view, and
e_play_time = E[y] = mu Phi(mu / 0.6) + 0.6 phi(mu / 0.6); prepare keeps them as oracle
columns and stats.json reports each split's oracle (Bayes-optimal) AUC. Default tasks are
KuaiRand's three (is_click, is_like, long_view); play_time is selectable. Base rates are
close to KuaiRand's (about 0.39, 0.03, 0.28 at the defaults; they move a little with the
sizes, e.g. fewer tags make clicks more repetitive).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.special import expit, ndtr

D = 8  # latent dimension
K_CLICK, LAMBDA_CLICK = 20, 0.8  # click history kept by the latent model, recency decay
K_LIKE, LAMBDA_LIKE = 10, 0.9
START_MS = 1_650_816_000_000  # 2022-04-25 00:00 Beijing time, as the KuaiRand subset
SPAN_MS = 14 * 86_400_000
ACTIVITY = ("low_active", "middle_active", "high_active", "full_active")
PI_ACTIVE = np.array([0.15, 0.35, 0.6, 0.85])  # probability of an impression per round
KAPPA = np.array([2.0, 1.5, 1.0, 0.5])  # long view: penalty of log duration by activity
RHO_TAB = np.array([0.0, 0.3, -0.2, -0.5])
VIDEO_TYPES = ("NORMAL", "AD", "MUSIC", "GAME")
GENDERS = ("F", "M", "UNKNOWN")
AGES = ("0-17", "18-23", "24-30", "31-40", "41-49", "50+")
B_CLICK, B_LIKE, B_LONG_VIEW = -1.8, -4.2, -2.3
ETA_DAY, SIGMA_WATCH = 0.25, 0.6
# Task names, fields and behaviours as in sources/kuairand.py, so configs run on both.
TASKS = ("is_click", "is_like", "long_view", "play_time")
DEFAULT_TASKS = ("is_click", "is_like", "long_view")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@dataclass
class World:
    """Static parameters drawn from the seed: items, authors, users and the task tables."""

    tag_emb: np.ndarray  # [G, D] e_g
    item_tag: np.ndarray  # [I] g(i)
    item_author: np.ndarray  # [I] a(i)
    item_type: np.ndarray  # [I] k(i)
    item_duration_s: np.ndarray  # [I] d_i
    item_quality: np.ndarray  # [I] q_i
    pop_cdf: np.ndarray  # [I] cumulative popularity exposure distribution
    tag_items: np.ndarray  # [I] item ids sorted by tag
    tag_start: np.ndarray  # [G] offset of each tag's items in tag_items
    tag_count: np.ndarray  # [G]
    author_appeal: np.ndarray  # [A] s_a
    author_style: np.ndarray  # [A] c_a
    user_group: np.ndarray  # [U] grp(u) = 6 gender + age
    user_activity: np.ndarray  # [U] l(u)
    user_bias: np.ndarray  # [U] b_u
    user_home: np.ndarray  # [U] home tag
    H: np.ndarray  # [4, 4] hour bucket x video_type
    A: np.ndarray  # [18, 4] user group x author style
    gamma: np.ndarray  # [18] weight of the like history's author affinity

    @classmethod
    def draw(cls, users: int, items: int, rng: np.random.Generator) -> World:
        G = min(int(np.clip(items // 50, 8, 64)), items)
        n_authors = max(items // 8, 1)
        author_tag = rng.integers(0, G, n_authors)
        item_author = rng.integers(0, n_authors, items)
        item_tag = np.where(
            rng.random(items) < 0.7, author_tag[item_author], rng.integers(0, G, items)
        )
        item_tag[:G] = np.arange(G)  # every tag has items
        quality = rng.normal(0.0, 0.4, items)
        popularity = np.exp(quality) / (1.0 + rng.permutation(items)) ** 0.8
        count = np.bincount(item_tag, minlength=G)
        return cls(
            tag_emb=_unit(rng.standard_normal((G, D))),
            item_tag=item_tag,
            item_author=item_author,
            item_type=rng.choice(4, items, p=[0.6, 0.15, 0.15, 0.1]),
            item_duration_s=np.clip(np.exp(rng.normal(math.log(25.0), 0.8, items)), 3.0, 600.0),
            item_quality=quality,
            pop_cdf=np.cumsum(popularity) / popularity.sum(),
            tag_items=np.argsort(item_tag, kind="stable"),
            tag_start=np.concatenate([[0], np.cumsum(count)[:-1]]),
            tag_count=count,
            author_appeal=rng.normal(0.0, 0.8, n_authors),
            author_style=rng.integers(0, 4, n_authors),
            user_group=6 * rng.choice(3, users, p=[0.45, 0.45, 0.1])
            + rng.choice(6, users, p=[0.05, 0.25, 0.3, 0.2, 0.12, 0.08]),
            user_activity=rng.choice(4, users, p=[0.2, 0.3, 0.3, 0.2]),
            user_bias=rng.normal(0.0, 0.3, users),
            user_home=rng.integers(0, G, users),
            H=rng.normal(0.0, 0.6, (4, 4)),
            A=rng.normal(0.0, 0.6, (18, 4)),
            gamma=rng.uniform(0.5, 3.0, 18),
        )


def _recency(buffer: np.ndarray, count: np.ndarray, target: np.ndarray, lam: float) -> np.ndarray:
    """sum_j lam^j [j-th most recent entry == target] over a ring buffer [n, K] that has
    received count[n] entries (slot j holds entry number count - 1 - age)."""
    K = buffer.shape[1]
    slot = np.arange(K)
    age = (count[:, None] - 1 - slot) % K
    hit = (buffer == target[:, None]) & (slot < count[:, None])
    return (hit * (lam**slot)[age]).sum(axis=1)


@dataclass
class History:
    """Per-user state that the labels read: interest, recent clicks and likes, long views."""

    interest: np.ndarray  # [U, D] v_u, unit norm
    click_tags: np.ndarray  # [U, K_CLICK] ring buffer of clicked tags
    n_click: np.ndarray  # [U]
    like_authors: np.ndarray  # [U, K_LIKE] ring buffer of liked authors
    n_like: np.ndarray  # [U]
    n_long_view: np.ndarray  # [U] n_lv

    @classmethod
    def start(cls, world: World, rng: np.random.Generator) -> History:
        U = len(world.user_group)
        noise = _unit(rng.standard_normal((U, D)))
        return cls(
            interest=_unit(world.tag_emb[world.user_home] + 0.8 * noise),
            click_tags=np.zeros((U, K_CLICK), np.int32),
            n_click=np.zeros(U, np.int64),
            like_authors=np.zeros((U, K_LIKE), np.int32),
            n_like=np.zeros(U, np.int64),
            n_long_view=np.zeros(U, np.int64),
        )

    def record(
        self,
        world: World,
        users: np.ndarray,
        items: np.ndarray,
        click: np.ndarray,
        like: np.ndarray,
        long_view: np.ndarray,
    ) -> None:
        """Append this round's events (users are distinct within a round)."""
        for buffer, count, happened, value in (
            (self.click_tags, self.n_click, click, world.item_tag[items]),
            (self.like_authors, self.n_like, like, world.item_author[items]),
        ):
            u = users[happened]
            buffer[u, count[u] % buffer.shape[1]] = value[happened]
            count[u] += 1
        self.n_long_view[users[long_view]] += 1

    def drift(self, eta: float, rng: np.random.Generator) -> None:
        xi = rng.standard_normal(self.interest.shape) / math.sqrt(D)
        self.interest = _unit(self.interest + eta * xi)


def truth(
    world: World,
    history: History,
    users: np.ndarray,
    items: np.ndarray,
    hour: np.ndarray,
    tab: np.ndarray,
) -> dict[str, np.ndarray]:
    """The latent model of the module docstring: p_click, p_like, p_long_view and the
    watch-time location mu (y = max(0, mu + SIGMA_WATCH eps)) of impressions (users, items)."""
    g, a = world.item_tag[items], world.item_author[items]
    grp, level = world.user_group[users], world.user_activity[users]
    q, d = world.item_quality[items], world.item_duration_s[items]
    affinity = np.einsum("nd,nd->n", history.interest[users], world.tag_emb[g])  # <v_u, e_g>
    r_tag = _recency(history.click_tags[users], history.n_click[users], g, LAMBDA_CLICK)
    r_auth = _recency(history.like_authors[users], history.n_like[users], a, LAMBDA_LIKE)
    z_click = (
        B_CLICK
        + 2.5 * affinity
        + 0.5 * r_tag
        + world.H[hour // 6, world.item_type[items]]
        + RHO_TAB[tab]
        + q
        + world.user_bias[users]
    )
    z_like = (
        B_LIKE
        + world.gamma[grp] * r_auth
        + world.A[grp, world.author_style[a]]
        + world.author_appeal[a]
        + 0.8 * affinity
    )
    s_view = (
        -KAPPA[level] * np.log(d / 25.0)
        + 0.3 * np.log1p(history.n_long_view[users])
        + 2.0 * affinity
        + 0.5 * q
    )
    return {
        "click": expit(z_click),
        "like": expit(z_like),
        "long_view": expit(B_LONG_VIEW + s_view),
        "watch_mu": np.log(1000.0 * d) - 0.7 + 0.4 * s_view,
    }


def expected_watch(mu: np.ndarray) -> np.ndarray:
    """E[max(0, mu + sigma eps)] = mu Phi(mu / sigma) + sigma phi(mu / sigma)."""
    z = mu / SIGMA_WATCH
    return mu * ndtr(z) + SIGMA_WATCH * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def expose(
    world: World, history: History, users: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The item and tab shown to each active user: interest retrieval or popularity."""
    n = len(users)
    by_interest = rng.random(n) < 0.6
    # tag ~ softmax(4 <v_u, e_g>) by inverse CDF; the logits are at most 4 (unit vectors)
    logits = (history.interest[users[by_interest]] @ world.tag_emb.T).astype(np.float32)  # [n', G]
    weight = np.exp(4.0 * logits - 4.0)
    cdf = np.cumsum(weight, axis=1)
    tag = (cdf < rng.random(len(cdf))[:, None] * cdf[:, -1:]).sum(axis=1)
    offset = (rng.random(len(tag)) * world.tag_count[tag]).astype(np.int64)
    items = np.searchsorted(world.pop_cdf, rng.random(n), side="right").clip(
        max=len(world.pop_cdf) - 1
    )
    items[by_interest] = world.tag_items[world.tag_start[tag] + offset]
    tab = np.where(by_interest, 1, rng.choice(np.array([0, 2, 3]), n, p=[0.6, 0.3, 0.1]))
    return items, tab


def simulate(world: World, rows: int, rng: np.random.Generator) -> Iterator[pl.DataFrame]:
    """The exposure log, one time-sorted frame per round; `rows` rows in all."""
    history = History.start(world, rng)
    pi = PI_ACTIVE[world.user_activity]
    round_ms = max(SPAN_MS // max(1, math.ceil(rows / pi.sum())), 1)
    eta = ETA_DAY * math.sqrt(round_ms / 86_400_000)
    done, r = 0, 0
    while done < rows:
        users = np.flatnonzero(rng.random(len(pi)) < pi)
        t = START_MS + r * round_ms + rng.integers(0, round_ms, len(users))
        order = np.argsort(t, kind="stable")[: rows - done]
        users, t = users[order], t[order]
        items, tab = expose(world, history, users, rng)
        t_bj = t + 8 * 3_600_000  # Beijing time, as KuaiRand's date and hourmin
        hour = t_bj // 3_600_000 % 24
        p = truth(world, history, users, items, hour, tab)
        click, like, long_view = (
            rng.random(len(users)) < p[k] for k in ("click", "like", "long_view")
        )
        y = np.maximum(0.0, p["watch_mu"] + SIGMA_WATCH * rng.standard_normal(len(users)))
        yield pl.DataFrame(
            {
                "user_id": users.astype(np.int32),
                "video_id": items.astype(np.int32),
                "time_ms": t.astype(np.int64),
                "tab": tab.astype(np.int8),
                "hour": hour.astype(np.int8),
                "weekday": ((t_bj // 86_400_000 + 3) % 7 + 1).astype(np.int8),  # Monday = 1
                "is_click": click.astype(np.int8),
                "is_like": like.astype(np.int8),
                "long_view": long_view.astype(np.int8),
                "play_time_ms": np.rint(np.expm1(y)).astype(np.int64),
                "p_click": p["click"].astype(np.float32),
                "p_like": p["like"].astype(np.float32),
                "p_long_view": p["long_view"].astype(np.float32),
                "e_play_time": expected_watch(p["watch_mu"]).astype(np.float32),
            }
        )
        history.record(world, users, items, click, like, long_view)
        history.drift(eta, rng)
        done += len(users)
        r += 1


def users_frame(world: World, rng: np.random.Generator) -> pl.DataFrame:
    """User features in KuaiRand's shape; the latent model reads activity and group."""
    U = len(world.user_group)
    level = world.user_activity
    author = rng.random(U) < 0.1
    return pl.DataFrame(
        {
            "user_id": np.arange(U, dtype=np.int32),
            "user_active_degree": np.array(ACTIVITY)[level],
            "gender": np.array(GENDERS)[world.user_group // 6],
            "age_range": np.array(AGES)[world.user_group % 6],
            "is_lowactive_period": (rng.random(U) < np.where(level == 0, 0.5, 0.05)).astype(
                np.int8
            ),
            "is_video_author": author.astype(np.int8),
            "follow_user_num": np.floor(np.exp(rng.normal(2.5 + 0.5 * level, 1.2))).astype(
                np.int64
            ),
            "fans_user_num": np.floor(np.exp(rng.normal(np.where(author, 4.0, 1.0), 1.5))).astype(
                np.int64
            ),
            "register_days": rng.integers(1, 2000, U),
            "onehot_feat0": (world.user_home % 7).astype(np.int8),  # a weak hint of the home tag
            "onehot_feat1": rng.integers(0, 10, U).astype(np.int8),
            "onehot_feat2": rng.integers(0, 3, U).astype(np.int8),
        }
    )


def items_frame(world: World) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "video_id": np.arange(len(world.item_tag), dtype=np.int32),
            "author_id": world.item_author.astype(np.int32),
            "tag": world.item_tag.astype(np.int32),
            "video_type": np.array(VIDEO_TYPES)[world.item_type],
            "video_duration": (1000.0 * world.item_duration_s).round(),  # ms, as KuaiRand
        }
    )
