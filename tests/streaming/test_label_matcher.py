from __future__ import annotations

import math
import random

import pytest

from infnet.data.schema import Task
from infnet.streaming.events import IMPRESSIONS, LABELS, encode
from infnet.streaming.label_matcher import LabelMatcher, MatcherConfig, read_samples, sample_id

from .conftest import impression, label

# windows of 10 s (click), 20 s (like, long view); 1 s of lateness, 5 s of orphan grace
CONFIG = MatcherConfig(
    windows_s={"is_click": 10, "is_like": 20, "long_view": 20},
    lateness_s=1,
    orphan_grace_s=5,
    max_skew_s=0.5,
    batch=50,
)
S = 1000  # ms


@pytest.fixture
def matcher(event_log, schema, tmp_path):
    m = LabelMatcher(event_log, tmp_path / "matcher.sqlite", schema, CONFIG)
    yield m
    m.close()


def push(log, *events):
    for e in events:
        log.append(LABELS if type(e).__name__ == "Label" else IMPRESSIONS, [encode(e)])


def samples(m):
    return {s["request_id"]: s["labels"] for _, s in read_samples(m.path)}


def reasons(m):
    return [r for r, _, _ in m.dead_letters()]


def test_a_sample_waits_for_its_windows_and_a_missing_positive_is_a_negative(matcher, event_log):
    push(event_log, impression("r1", "a", 100 * S), label("r1", "a", "is_click", 103 * S))
    push(event_log, impression("r2", "a", 115 * S))  # event time moves to 115 s - 1 s lateness
    matcher.run_until_idle()
    assert samples(matcher) == {}  # like and long view may still come (20 s windows)
    push(event_log, impression("r3", "a", 122 * S))  # watermark 121 s: r1's windows closed
    matcher.run_until_idle()
    assert samples(matcher) == {"r1": [1.0, 0.0, 0.0]}
    assert matcher.counts["positive:is_click"] == 1


def test_every_task_known_emits_at_once(matcher, event_log):
    push(event_log, impression("r1", "a", 100 * S))
    push(event_log, *(label("r1", "a", t, 101 * S, v) for t, v in
                      [("is_click", 1), ("is_like", 0), ("long_view", 1)]))  # fmt: skip
    matcher.run_until_idle()
    assert samples(matcher) == {"r1": [1.0, 0.0, 1.0]}


def test_the_sample_carries_the_impressions_inputs_and_a_deterministic_id(matcher, event_log):
    imp = impression("r1", "a", 100 * S)
    push(event_log, imp)
    matcher.run_until_idle(drain=True)
    [(_, s)] = read_samples(matcher.path)
    assert s["sample_id"] == sample_id("r1", "a")
    assert (
        s["categorical"] == imp.categorical.tolist()
        and s["seq_gap"] == imp.seq_gap.ravel().tolist()
    )
    assert s["seq_shape"] == list(imp.seq_ids.shape)


def test_duplicates_count_once(matcher, event_log):
    click = label("r1", "a", "is_click", 101 * S)
    push(event_log, impression("r1", "a", 100 * S), impression("r1", "a", 100 * S), click, click)
    matcher.run_until_idle(drain=True)
    assert samples(matcher) == {"r1": [1.0, 0.0, 0.0]}
    assert matcher.counts["duplicate_impression"] == 1
    assert matcher.counts["duplicate_label"] == 1
    assert matcher.counts["samples"] == 1


def test_an_orphan_waits_for_its_impression_then_goes_to_the_dead_letter(matcher, event_log):
    push(event_log, label("r1", "a", "is_click", 101 * S), label("r9", "z", "is_click", 101 * S))
    matcher.run_until_idle()
    assert matcher.state_sizes()["orphans"] == 2
    push(event_log, impression("r1", "a", 100 * S))  # reordered: the impression after its label
    push(event_log, impression("r5", "b", 108 * S))  # watermark 107 s > 101 s + 5 s of grace
    matcher.run_until_idle()
    assert reasons(matcher) == ["orphan"]
    matcher.run_until_idle(drain=True)
    assert samples(matcher)["r1"] == [1.0, 0.0, 0.0]
    assert matcher.counts["orphans_matched"] == 1


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (label("r1", "a", "is_click", 100 * S - 600), "clock_skew"),
        (label("r1", "a", "is_click", 111 * S), "outside_window"),
        (label("r1", "a", "is_share", 101 * S), "unknown_task"),
        (label("r1", "a", "is_click", 101 * S, 0.5), "bad_value"),
    ],
)
def test_a_label_that_cannot_belong_is_dead_lettered(matcher, event_log, event, reason):
    push(event_log, impression("r1", "a", 100 * S), event)
    matcher.run_until_idle(drain=True)
    assert reasons(matcher) == [reason]
    assert samples(matcher) == {"r1": [0.0, 0.0, 0.0]}


def test_a_label_within_the_skew_counts_as_at_the_impression(matcher, event_log):
    push(event_log, impression("r1", "a", 100 * S), label("r1", "a", "is_click", 100 * S - 400))
    matcher.run_until_idle(drain=True)
    assert samples(matcher) == {"r1": [1.0, 0.0, 0.0]} and reasons(matcher) == []


def test_a_label_after_its_sample_never_changes_it(matcher, event_log):
    # watermark 123 s: past r1's windows (120 s), within its memory (126 s)
    push(event_log, impression("r1", "a", 100 * S), impression("r2", "a", 124 * S))
    matcher.run_until_idle()
    assert samples(matcher) == {"r1": [0.0, 0.0, 0.0]}
    push(event_log, label("r1", "a", "is_like", 110 * S))  # in its window, after the watermark
    matcher.run_until_idle(drain=True)
    assert samples(matcher)["r1"] == [0.0, 0.0, 0.0]
    assert reasons(matcher) == ["after_emit"]


def test_malformed_entries_are_dead_lettered_not_dropped(matcher, event_log):
    event_log.append(IMPRESSIONS, [b"{oops", encode(label("r1", "a", "is_click", 5))])
    event_log.append(LABELS, [encode(impression("r1", "a", 5))])
    matcher.run_until_idle(drain=True)
    assert reasons(matcher) == ["malformed", "malformed", "malformed"]
    details = [d for _, _, d in matcher.dead_letters()]
    assert "not JSON" in details[0] and "a label in stream 'impressions'" in details[1]


def test_an_impression_older_than_the_matchers_memory_is_dead_lettered(matcher, event_log):
    push(event_log, impression("r1", "a", 100 * S))
    matcher.run_until_idle(drain=True)
    push(event_log, impression("r1", "a", 100 * S))  # a duplicate long after its key expired
    matcher.run_until_idle()
    assert reasons(matcher) == ["late_impression"]
    assert matcher.counts["samples"] == 1


def test_state_is_bounded_by_event_time(matcher, event_log):
    for i in range(300):  # 300 impressions, one a second, each clicked
        push(
            event_log, impression(f"r{i}", "a", i * S), label(f"r{i}", "a", "is_click", i * S + 10)
        )
        if i % 50 == 0:
            matcher.run_until_idle()
    matcher.run_until_idle()
    sizes = matcher.state_sizes()
    # held: the last 20 s of windows + 1 s lateness + 5 s grace, not the 300 seconds seen
    assert sizes["open"] + sizes["emitted_keys"] <= 27 and sizes["label_ids"] <= 27
    assert matcher.counts["samples"] >= 300 - 22


def test_regression_tasks_are_missing_when_no_value_comes(event_log, schema, tmp_path):
    tasks = [*schema.tasks, Task(name="watch_time", kind="regression")]
    m = LabelMatcher(
        event_log, tmp_path / "m.sqlite", schema.model_copy(update={"tasks": tasks}), CONFIG
    )
    try:
        push(event_log, impression("r1", "a", 100 * S), impression("r2", "a", 100 * S),
             label("r1", "a", "watch_time", 101 * S, 12.5),
             label("r1", "a", "watch_time", 102 * S, 3.0))  # fmt: skip
        m.run_until_idle(drain=True)
        got = samples(m)
        assert got["r1"] == [0.0, 0.0, 0.0, 12.5] and got["r2"] == [0.0, 0.0, 0.0, None]
        assert reasons(m) == ["conflict"]
    finally:
        m.close()


def test_unknown_task_in_the_windows_is_refused(event_log, schema, tmp_path):
    with pytest.raises(ValueError, match="windows_s: unknown task 'clik'"):
        LabelMatcher(event_log, tmp_path / "m.sqlite", schema, MatcherConfig(windows_s={"clik": 5}))


def _traffic(seed: int):
    """Impressions with clicks and likes, resent, reordered, some labels dropped or stray."""
    rng = random.Random(seed)
    events = []
    for i in range(400):
        t = i * 500
        events.append(impression(f"r{i}", str(i % 7), t))
        if rng.random() < 0.3:
            events.append(label(f"r{i}", str(i % 7), "is_click", t + rng.randint(0, 9000)))
        if rng.random() < 0.1:
            events.append(label(f"r{i}", str(i % 7), "is_like", t + rng.randint(0, 30_000)))
        if rng.random() < 0.02:
            events.append(label(f"stray{i}", "x", "is_click", t))
    events += [e for e in events if rng.random() < 0.05]  # duplicates, resent later
    # local reordering: each event moves up to a few places
    keyed = sorted(enumerate(events), key=lambda p: p[0] + rng.uniform(0, 4))
    return [e for _, e in keyed]


def test_every_impression_ends_as_exactly_one_sample_or_a_dead_letter(matcher, event_log):
    events = _traffic(0)
    for lo in range(0, len(events), 37):
        push(event_log, *events[lo : lo + 37])
        matcher.step()
    matcher.run_until_idle(drain=True)
    sent = [e.key for e in events if type(e).__name__ == "Impression"]
    ids = [s["sample_id"] for _, s in read_samples(matcher.path)]
    dead_impressions = [r for r, stream, _ in matcher.dead_letters() if stream == IMPRESSIONS]
    c = matcher.counts
    # each impression once as a sample; each resent copy a counted duplicate or dead letter
    assert sorted(ids) == sorted({sample_id(*k) for k in sent})
    assert len(sent) == len(ids) + c["duplicate_impression"] + len(dead_impressions)
    assert set(dead_impressions) == {"late_impression"}
    assert c["labels"] == c["labels_joined"] + c["duplicate_label"] + sum(
        v for k, v in c.items() if k.startswith("dead:") and k != "dead:late_impression"
    )


class _CrashingLog:
    """An event log whose commit fails after `after` commits: the matcher dies between its
    own transaction and the log's acknowledgement, the worst place."""

    def __init__(self, log, after: int) -> None:
        self.log, self.after = log, after

    def __getattr__(self, name):
        return getattr(self.log, name)

    def commit(self, stream, consumer, entries):
        if self.after == 0:
            raise SystemExit("killed")
        self.after -= 1
        self.log.commit(stream, consumer, entries)


@pytest.mark.parametrize("crash_after", [1, 2, 5])
def test_a_matcher_killed_between_commits_resumes_with_nothing_lost_or_doubled(
    event_log, schema, tmp_path, crash_after
):
    from infnet.streaming.events import open_event_log

    events = _traffic(1)
    push(event_log, *events)
    reference_log = open_event_log(tmp_path / "reference.sqlite")
    push(reference_log, *events)
    reference = LabelMatcher(reference_log, tmp_path / "reference-state.sqlite", schema, CONFIG)
    reference.run_until_idle(drain=True)

    crashing = LabelMatcher(
        _CrashingLog(event_log, crash_after), tmp_path / "s.sqlite", schema, CONFIG
    )
    with pytest.raises(SystemExit):
        crashing.run_until_idle()
    crashing.close()
    restarted = LabelMatcher(open_event_log(event_log.url), tmp_path / "s.sqlite", schema, CONFIG)
    restarted.run_until_idle(drain=True)
    assert restarted.counts["redelivered"] > 0
    want = [(s["sample_id"], s["labels"]) for _, s in read_samples(reference.path)]
    got = [(s["sample_id"], s["labels"]) for _, s in read_samples(restarted.path)]
    assert sorted(got) == sorted(want)
    assert sorted(reasons(restarted)) == sorted(reasons(reference))
    for name in ("samples", "labels_joined", "duplicate_label"):
        assert restarted.counts[name] == reference.counts[name]
    assert not any(math.isnan(x) for _, labels in got for x in labels if x is not None)
    restarted.close()
    reference.close()


def test_a_redis_that_goes_down_and_returns_loses_and_doubles_nothing(
    durable_redis, schema, tmp_path
):
    from infnet.streaming.events import EventLogUnavailable, RedisEventLog, open_event_log

    events = _traffic(2)
    reference_log = open_event_log(tmp_path / "reference.sqlite")
    push(reference_log, *events)
    reference = LabelMatcher(reference_log, tmp_path / "reference-state.sqlite", schema, CONFIG)
    reference.run_until_idle(drain=True)

    log = RedisEventLog(durable_redis.url, timeout_s=0.5)
    push(log, *events)
    m = LabelMatcher(log, tmp_path / "s.sqlite", schema, CONFIG)
    m.step()
    m.step()
    save = m._save

    def save_then_go_down():  # the worst moment: the state commits, the log's ack cannot
        save()
        durable_redis.stop()

    m._save = save_then_go_down
    with pytest.raises(EventLogUnavailable):
        m.step()
    m._save = save
    applied = dict(m.counts)
    for _ in range(2):  # down: every step fails before it changes anything
        with pytest.raises(EventLogUnavailable):
            m.step()
    assert dict(m.counts) == applied
    durable_redis.start()
    m.run_until_idle(drain=True)
    want = [(s["sample_id"], s["labels"]) for _, s in read_samples(reference.path)]
    got = [(s["sample_id"], s["labels"]) for _, s in read_samples(m.path)]
    assert sorted(got) == sorted(want)
    assert sorted(reasons(m)) == sorted(reasons(reference))
    for name in ("samples", "labels_joined", "duplicate_label", "duplicate_impression"):
        assert m.counts[name] == reference.counts[name]
    assert log.lag(IMPRESSIONS, "matcher") == log.lag(LABELS, "matcher") == 0  # all acknowledged
    m.close()
    reference.close()
