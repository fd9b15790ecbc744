"""The label matcher: impressions joined with their delayed labels into training samples.

A label belongs to the impression of the same (request id, item id) when it comes within
its task's attribution window: 0 <= label time - impression time <= window[task] (a label
up to `max_skew_s` before its impression is clock skew, counted as at the impression).
A sample is emitted when every task's label is known, or when the watermark passes the
impression time plus the longest window; a binary task without a positive by then is a
negative, and a regression task without a value is missing (masked), never a guess.

Event time, not wall clock, drives the windows (a replay of last month's logs closes
them as a live stream would). Each stream's high mark is the latest event time read from
it; the watermark is the minimum high mark over the streams with unread entries (the
maximum when all are read up), minus `lateness_s`, and it never goes back.

Faults, each counted (`counts`) and, where an event is refused, dead-lettered with its
reason: a malformed event; a second impression of a key (`duplicate_impression`); a label
whose event id was seen (`duplicate_label`, counted, not applied twice); an unknown task
or a value of the wrong type; a label outside its window or before its impression by more
than the skew; a label whose impression has not come (an orphan waits `orphan_grace_s` of
event time for it, then is dead-lettered); a label for a sample already emitted
(`after_emit`: it never changes the sample); an impression so late that its windows, and
its key's memory, are gone (`late_impression`).

State is bounded by event time: an emitted key is remembered until the watermark passes
its impression time + longest window + lateness + grace, then forgotten, and so are label
ids and orphans. It lives in one SQLite file with the emitted samples (the `samples`
table the sample producer reads), the dead letters and the input offsets; one step reads
a batch from each stream, applies it and commits all of that in one transaction, then
commits the entries to the event log. A matcher killed anywhere restarts from its own
offsets: entries the log delivers again are skipped by offset, so each is applied once.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
from collections import Counter
from pathlib import Path

import orjson
from pydantic import Field

from infnet.config import Strict
from infnet.data.schema import Schema
from infnet.streaming.events import (
    IMPRESSIONS,
    LABELS,
    STREAMS,
    Entry,
    EventLog,
    Impression,
    Label,
    MalformedEvent,
    decode,
)

NO_TIME = -(2**62)


class MatcherConfig(Strict):
    windows_s: dict[str, float] = Field(default_factory=dict)  # task -> window; else default
    default_window_s: float = Field(default=1800.0, gt=0)  # 30 minutes
    lateness_s: float = Field(default=60.0, ge=0)
    orphan_grace_s: float = Field(default=300.0, ge=0)
    max_skew_s: float = Field(default=5.0, ge=0)
    batch: int = Field(default=2000, ge=1)  # entries read per stream per step
    max_dead_letters: int = Field(default=1_000_000, ge=1)  # kept rows; counts are kept whole


_TABLES = """
CREATE TABLE IF NOT EXISTS pending (
    request_id TEXT NOT NULL, item_id TEXT NOT NULL, event_ms INTEGER NOT NULL,
    closes_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL, emitted INTEGER NOT NULL,
    impression BLOB, labels TEXT NOT NULL,
    PRIMARY KEY (request_id, item_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pending_closes ON pending (emitted, closes_ms);
CREATE INDEX IF NOT EXISTS pending_expires ON pending (expires_ms);
CREATE TABLE IF NOT EXISTS seen (event_id TEXT PRIMARY KEY, expires_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_expires ON seen (expires_ms);
CREATE TABLE IF NOT EXISTS orphans (
    entry_id TEXT PRIMARY KEY, request_id TEXT NOT NULL, item_id TEXT NOT NULL,
    deadline_ms INTEGER NOT NULL, payload BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS orphans_key ON orphans (request_id, item_id);
CREATE INDEX IF NOT EXISTS orphans_deadline ON orphans (deadline_ms);
CREATE TABLE IF NOT EXISTS samples (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, sample_id TEXT NOT NULL UNIQUE, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, reason TEXT NOT NULL, stream TEXT NOT NULL,
    entry_id TEXT NOT NULL, detail TEXT NOT NULL, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def sample_id(request_id: str, item_id: str) -> str:
    """Deterministic: the same impression gives the same sample id in every run."""
    return hashlib.blake2b(f"{request_id}\x00{item_id}".encode(), digest_size=12).hexdigest()


class LabelMatcher:
    def __init__(
        self,
        log: EventLog,
        state_path: str | Path,
        schema: Schema,
        config: MatcherConfig | None = None,
        *,
        consumer: str = "matcher",
    ) -> None:
        self.log, self.schema, self.consumer = log, schema, consumer
        self.config = config = config or MatcherConfig()
        self.tasks = {t.name: t.kind for t in schema.tasks}
        unknown = sorted(set(config.windows_s) - set(self.tasks))
        if unknown:
            raise ValueError(
                f"windows_s: unknown task {unknown[0]!r}; the schema's tasks are {list(self.tasks)}"
            )
        self.window_ms = {
            t: int(config.windows_s.get(t, config.default_window_s) * 1000) for t in self.tasks
        }
        self.longest_ms = max(self.window_ms.values())
        self.lateness_ms = int(config.lateness_s * 1000)
        self.grace_ms = int(config.orphan_grace_s * 1000)
        self.skew_ms = int(config.max_skew_s * 1000)
        self.path = Path(state_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_TABLES)
        state = dict(self.db.execute("SELECT key, value FROM state").fetchall())
        self.offsets: dict[str, str | None] = orjson.loads(state.get("offsets", "{}"))
        self.high: dict[str, int] = orjson.loads(state.get("high", "{}"))
        self.watermark: int = int(state.get("watermark", NO_TIME))
        self.counts: Counter[str] = Counter(orjson.loads(state.get("counts", "{}")))
        # orphans held: an impression looks for its early labels only when there are any
        self.orphans: int = self.db.execute("SELECT count(*) FROM orphans").fetchone()[0]
        self._unacked: dict[str, list[Entry]] = {s: [] for s in STREAMS}

    # --- one step -------------------------------------------------------------------------
    def step(self, *, drain: bool = False) -> int:
        """Read a batch of each stream, apply it, close what the watermark closes, commit;
        the number of entries read. `drain` closes every window (the end of a replay)."""
        self._ack()
        read = {s: self._read(s) for s in STREAMS}
        caught_up = {s: len(read[s][0]) < self.config.batch for s in STREAMS}
        with self.db:
            for stream in (IMPRESSIONS, LABELS):  # impressions first: their labels may follow
                for entry in read[stream][0]:
                    self._apply(stream, entry.id, entry.payload)
                    self.offsets[stream] = entry.id
            self._advance(caught_up, drain)
            self._close()
            self._save()
        for s in STREAMS:
            self._unacked[s] += read[s][0] + read[s][1]
        self._ack()
        return sum(len(fresh) for fresh, _ in read.values())

    def _ack(self) -> None:
        """Commit applied entries to the log. A log down after the state committed leaves
        them here to commit at the next step (they are applied; the log just does not know)."""
        for s in STREAMS:
            if self._unacked[s]:
                self.log.commit(s, self.consumer, self._unacked[s])
                self._unacked[s] = []

    def _read(self, stream: str) -> tuple[list[Entry], list[Entry]]:
        """(fresh, redelivered): up to `batch` entries not applied yet, and those the log
        gave again that were applied before a crash. Skipping the latter keeps every step
        after a restart the step an uninterrupted matcher would have taken."""
        fresh: list[Entry] = []
        again: list[Entry] = []
        last = self.offsets.get(stream)
        while len(fresh) < self.config.batch:
            want = self.config.batch - len(fresh)
            got = self.log.read(stream, self.consumer, want)
            for entry in got:
                if last is not None and self.log.order(entry.id) <= self.log.order(last):
                    again.append(entry)
                else:
                    fresh.append(entry)
            if len(got) < want:
                break
        self.counts["redelivered"] += len(again)
        return fresh, again

    def run_until_idle(self, *, drain: bool = False) -> None:
        """Steps until both streams are read up (and with `drain`, every window closed)."""
        while self.step() > 0:
            pass
        if drain:
            self.step(drain=True)

    # --- events ---------------------------------------------------------------------------
    def _apply(self, stream: str, entry_id: str, payload: bytes) -> None:
        try:
            event = decode(payload)
            if isinstance(event, Impression) != (stream == IMPRESSIONS):
                raise MalformedEvent(f"a {type(event).__name__.lower()} in stream {stream!r}")
        except MalformedEvent as err:
            self._dead("malformed", stream, entry_id, str(err), payload)
            return
        self.high[stream] = max(self.high.get(stream, NO_TIME), event.event_ms)
        if isinstance(event, Impression):
            self._impression(event, entry_id, payload)
        else:
            self._label(event, entry_id, payload)

    def _impression(self, imp: Impression, entry_id: str, payload: bytes) -> None:
        self.counts["impressions"] += 1
        closes = imp.event_ms + self.longest_ms
        expires = closes + self.lateness_ms + self.grace_ms
        if expires <= self.watermark:  # its key could already be forgotten: never emit twice
            self._dead("late_impression", IMPRESSIONS, entry_id,
                       f"impression at {imp.event_ms} ms arrived after the watermark "
                       f"{self.watermark} passed its windows and their memory", payload)  # fmt: skip
            return
        inserted = self.db.execute(
            "INSERT OR IGNORE INTO pending VALUES (?, ?, ?, ?, ?, 0, ?, '{}')",
            (*imp.key, imp.event_ms, closes, expires, payload),
        ).rowcount
        if not inserted:
            self.counts["duplicate_impression"] += 1
            return
        if not self.orphans:
            return
        waiting = self.db.execute(
            "SELECT entry_id, payload FROM orphans WHERE request_id = ? AND item_id = ?", imp.key
        ).fetchall()
        self.db.execute("DELETE FROM orphans WHERE request_id = ? AND item_id = ?", imp.key)
        self.orphans -= len(waiting)
        for orphan_id, label_payload in waiting:
            self.counts["orphans_matched"] += 1
            self._attach(decode(label_payload), orphan_id, label_payload)

    def _label(self, label: Label, entry_id: str, payload: bytes) -> None:
        self.counts["labels"] += 1
        kind = self.tasks.get(label.task)
        if kind is None:
            self._dead("unknown_task", LABELS, entry_id,
                       f"task {label.task!r}: the schema's tasks are {list(self.tasks)}", payload)  # fmt: skip
            return
        if kind == "binary" and label.value not in (0.0, 1.0):
            self._dead("bad_value", LABELS, entry_id,
                       f"task {label.task!r} is binary; value {label.value} is not 0 or 1", payload)  # fmt: skip
            return
        expires = label.event_ms + self.longest_ms + self.lateness_ms + self.grace_ms
        seen = self.db.execute(
            "INSERT OR IGNORE INTO seen VALUES (?, ?)", (label.event_id, expires)
        ).rowcount
        if not seen:
            self.counts["duplicate_label"] += 1
            return
        if self._row(label.key) is None:
            self.orphans += self.db.execute(
                "INSERT OR IGNORE INTO orphans VALUES (?, ?, ?, ?, ?)",
                (entry_id, *label.key, label.event_ms + self.grace_ms, payload),
            ).rowcount
            return
        self._attach(label, entry_id, payload)

    def _attach(self, label: Label, entry_id: str, payload: bytes) -> None:
        event_ms, emitted, impression, labels_text = self._row(label.key)
        if emitted:
            self._dead("after_emit", LABELS, entry_id,
                       f"sample of {label.key} was emitted before this {label.task} label", payload)  # fmt: skip
            return
        delay = label.event_ms - event_ms
        if delay < -self.skew_ms:
            self._dead("clock_skew", LABELS, entry_id,
                       f"label {-delay} ms before its impression (max skew {self.skew_ms} ms)", payload)  # fmt: skip
            return
        if delay > self.window_ms[label.task]:
            self._dead("outside_window", LABELS, entry_id,
                       f"{label.task} label {delay} ms after its impression (window {self.window_ms[label.task]} ms)", payload)  # fmt: skip
            return
        labels = orjson.loads(labels_text)
        old = labels.get(label.task)
        if self.tasks[label.task] == "binary":
            labels[label.task] = label.value if old is None else max(old, label.value)
        elif old is None:
            labels[label.task] = label.value
        else:  # a second value of a regression task: the first stands
            self._dead("conflict", LABELS, entry_id,
                       f"{label.task} already has value {old} for {label.key}", payload)  # fmt: skip
            return
        self.counts["labels_joined"] += 1
        if len(labels) == len(self.tasks):
            self._emit(label.key, impression, labels)
        else:
            self.db.execute(
                "UPDATE pending SET labels = ? WHERE request_id = ? AND item_id = ?",
                (orjson.dumps(labels).decode(), *label.key),
            )

    def _row(self, key: tuple[str, str]) -> tuple | None:
        return self.db.execute(
            "SELECT event_ms, emitted, impression, labels FROM pending "
            "WHERE request_id = ? AND item_id = ?",
            key,
        ).fetchone()

    # --- windows, output, expiry ----------------------------------------------------------
    def _sample(
        self, key: tuple[str, str], impression: bytes, labels: dict[str, float]
    ) -> tuple[str, bytes]:
        """(sample id, payload): the impression's JSON object with its labels added."""
        values = []
        for task, kind in self.tasks.items():
            if task in labels:
                values.append(labels[task])
            else:  # the window closed: no positive is a negative; no value is missing
                values.append(0.0 if kind == "binary" else math.nan)
            if kind == "binary" and values[-1] == 1.0:
                self.counts[f"positive:{task}"] += 1
        self.counts["samples"] += 1
        # spliced, because parsing and writing back the history costs more than the join
        sid = sample_id(*key)
        labels_json = orjson.dumps([None if math.isnan(v) else v for v in values])
        return sid, impression[
            :-1
        ] + b',"sample_id":"' + sid.encode() + b'","labels":' + labels_json + b"}"

    def _emit(self, key: tuple[str, str], impression: bytes, labels: dict[str, float]) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO samples (sample_id, payload) VALUES (?, ?)",
            self._sample(key, impression, labels),
        )
        self.db.execute(
            "UPDATE pending SET emitted = 1, impression = NULL, labels = '{}' "
            "WHERE request_id = ? AND item_id = ?",
            key,
        )

    def _advance(self, caught_up: dict[str, bool], drain: bool) -> None:
        if drain:
            self.watermark = 2**62
            return
        if not self.high:
            return
        behind = [self.high[s] for s in STREAMS if s in self.high and not caught_up[s]]
        mark = min(behind) if behind else max(self.high.values())
        self.watermark = max(self.watermark, mark - self.lateness_ms)

    def _close(self) -> None:
        w = self.watermark
        while True:  # in chunks: a drain closes every open window at once
            closed = self.db.execute(
                "SELECT request_id, item_id, impression, labels FROM pending "
                "WHERE emitted = 0 AND closes_ms <= ? ORDER BY closes_ms LIMIT ?",
                (w, self.config.batch),
            ).fetchall()
            if not closed:
                break
            self.db.executemany(
                "INSERT OR IGNORE INTO samples (sample_id, payload) VALUES (?, ?)",
                [self._sample((r, i), imp, orjson.loads(lab)) for r, i, imp, lab in closed],
            )
            self.db.executemany(
                "UPDATE pending SET emitted = 1, impression = NULL, labels = '{}' "
                "WHERE request_id = ? AND item_id = ?",
                [(r, i) for r, i, _, _ in closed],
            )
        for entry_id, payload in self.db.execute(
            "SELECT entry_id, payload FROM orphans WHERE deadline_ms <= ?", (w,)
        ).fetchall():
            self._dead("orphan", LABELS, entry_id,
                       f"no impression came within {self.grace_ms} ms of event time (or it came "
                       f"more than the longest window, {self.longest_ms} ms, before)", payload)  # fmt: skip
        self.orphans -= self.db.execute("DELETE FROM orphans WHERE deadline_ms <= ?", (w,)).rowcount
        self.db.execute("DELETE FROM pending WHERE emitted = 1 AND expires_ms <= ?", (w,))
        self.db.execute("DELETE FROM seen WHERE expires_ms <= ?", (w,))

    def _dead(self, reason: str, stream: str, entry_id: str, detail: str, payload: bytes) -> None:
        self.counts[f"dead:{reason}"] += 1
        self.db.execute(
            "INSERT INTO dead_letters (reason, stream, entry_id, detail, payload) VALUES (?, ?, ?, ?, ?)",
            (reason, stream, entry_id, detail, payload),
        )
        self.db.execute(
            "DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - ?",
            (self.config.max_dead_letters,),
        )

    def _save(self) -> None:
        values = {
            "offsets": orjson.dumps(self.offsets).decode(),
            "high": orjson.dumps(self.high).decode(),
            "watermark": str(self.watermark),
            "counts": orjson.dumps(dict(self.counts)).decode(),
        }
        self.db.executemany("INSERT OR REPLACE INTO state VALUES (?, ?)", values.items())

    # --- what it holds --------------------------------------------------------------------
    def state_sizes(self) -> dict[str, int]:
        """Rows held: open impressions, emitted keys remembered, label ids, orphans."""
        q = self.db.execute
        return {
            "open": q("SELECT count(*) FROM pending WHERE emitted = 0").fetchone()[0],
            "emitted_keys": q("SELECT count(*) FROM pending WHERE emitted = 1").fetchone()[0],
            "label_ids": q("SELECT count(*) FROM seen").fetchone()[0],
            "orphans": q("SELECT count(*) FROM orphans").fetchone()[0],
        }

    def dead_letters(self) -> list[tuple[str, str, str]]:
        """(reason, stream, detail) of the dead letters kept, oldest first."""
        return self.db.execute(
            "SELECT reason, stream, detail FROM dead_letters ORDER BY id"
        ).fetchall()

    def close(self) -> None:
        self.db.close()


def read_samples(path: str | Path, after: int = 0, count: int = 1 << 62) -> list[tuple[int, dict]]:
    """(seq, sample) of the matcher's samples after seq `after`, in emission order."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT seq, payload FROM samples WHERE seq > ? ORDER BY seq LIMIT ?", (after, count)
        ).fetchall()
    finally:
        db.close()
    return [(seq, orjson.loads(p)) for seq, p in rows]
