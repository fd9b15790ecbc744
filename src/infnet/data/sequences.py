"""Point-in-time behaviour sequences, fully vectorised.

For each behaviour b the event table E_b holds every event of that behaviour (log rows
satisfying the behaviour's condition, plus warm-start events), sorted by (user, time).
An impression row r of user u at time t gets the pointers

    start_r = first index of u in E_b
    end_r   = start_r + #{e in E_b : user_e = u, time_e < t}      (strictly earlier)

so E_b[start_r:end_r] is exactly u's history before t, most recent last. The loader takes
the last max_len of those positions.

The count of earlier events is a searchsorted over one sorted int64 key per event,
    key_e = seg(user_e) * U + rank(time_e),
where seg is the dense index of the user among E_b's users and rank the dense rank of the
time among E_b's distinct times (U of them); a row asks for seg(u) * U + rank_left(t),
where rank_left(t) is the number of distinct event times below t. seg < E and U <= E, so
the key is below E^2 and fits int64 for any E < 3e9.

Pre-built histories (a log column holding each row's own history, `row_blocks`) keep this
layout: every row owns a contiguous block of events, its own history oldest first, and its
[start, end) cover exactly that block. The events' own times are not known; each block is
stamped one millisecond before its row (blocks in (user, time) order), so the table stays
sorted by (user, time) and "events strictly before the row's time" still holds. That the
history really precedes the row is the data's promise, not something prepare can check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Events:
    """One behaviour's event table, sorted by (user, time); ties keep their input order."""

    user: np.ndarray  # int64 [E]
    time: np.ndarray  # int64 [E]
    side: np.ndarray  # int32 [E, K]: side-info codes, the target item fields' vocabularies

    def __len__(self) -> int:
        return len(self.user)


def event_table(user: np.ndarray, time: np.ndarray, side: np.ndarray) -> Events:
    """Sort events (any order in) by (user, time); stable, so the input order breaks ties
    (warm-start events given first, in recency order, stay first)."""
    order = np.lexsort((time, user))
    return Events(user=user[order], time=time[order], side=side[order])


class HistoryIndex:
    """The sorted event keys of one event table, built once and asked for many rows."""

    def __init__(self, events: Events):
        self.events = events
        self.users, seg_e = np.unique(events.user, return_inverse=True)  # seg_e: dense user index
        self.times, rank_e = np.unique(events.time, return_inverse=True)
        self.U = np.int64(len(self.times) + 1)
        self.key_e = seg_e.astype(np.int64) * self.U + rank_e  # sorted: events are by (user, time)

    def pointers(self, row_user: np.ndarray, row_time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[start, end) into the events of each row's user's events strictly before its time
        (two int64 arrays of len(row_user))."""
        start = np.searchsorted(self.events.user, row_user, side="left").astype(np.int64)
        if len(self.events) == 0:
            return start, start.copy()
        seg_r = np.searchsorted(self.users, row_user)
        present = self.users[np.minimum(seg_r, len(self.users) - 1)] == row_user
        rank_r = np.searchsorted(self.times, row_time, side="left")  # distinct event times < t
        key_r = seg_r.astype(np.int64) * self.U + rank_r
        end = np.where(present, np.searchsorted(self.key_e, key_r, side="left"), start)
        return start, end.astype(np.int64)


def row_blocks(
    row_user: np.ndarray, row_time: np.ndarray, length: np.ndarray, side: np.ndarray
) -> tuple[Events, np.ndarray, np.ndarray]:
    """Event table of pre-built histories. Rows come sorted by (user, time); row i owns
    length[i] events, whose side codes are the next length[i] rows of `side` [sum, K].
    Returns the table and each row's [start, end) (int64)."""
    end = np.cumsum(length, dtype=np.int64)
    start = end - length
    events = Events(
        user=np.repeat(row_user, length),
        time=np.repeat(row_time - 1, length),
        side=side,
    )
    return events, start, end


# Time-aware sequence tokens (models/embedding.py): the gap between an event and the row
# that reads it, in log2 buckets of minutes. 0 is padding; bucket 1 is under a minute,
# bucket g >= 2 holds gaps of [2^(g-2), 2^(g-1)) minutes, the last one everything longer
# (2^21 minutes is about four years).
GAP_BUCKETS = 24
_MINUTE_MS = 60_000


def gap_buckets(row_time: np.ndarray, event_time: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """int64 bucket codes of row_time - event_time (both int64 ms, broadcastable), 0 where
    not `valid`. Events precede their rows, so a negative gap (a clock skew between the
    log and the feature store) counts as under a minute."""
    minutes = np.maximum(row_time - event_time, 0) // _MINUTE_MS
    # minutes = m * 2^e with m in [0.5, 1): e = floor(log2(minutes)) + 1, and 0 for 0
    # minutes; half the time of np.log2, and exact in integers
    _, e = np.frexp(minutes)
    return np.where(valid, np.minimum(e.astype(np.int64) + 1, GAP_BUCKETS - 1), 0)
