"""Pure parts of the operator's day (issue 17): the token bucket (injected clock),
the drain/balance planner (hypothesis), the retention cut, the CLI's rate parser."""

from __future__ import annotations

import argparse
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gate._exceptions import ConfigError
from sidecar.control.cli_ops import rate
from sidecar.control.planner import plan_balance, plan_drain, spread_threshold, weights, loads
from sidecar.control.retention import RetentionConfig, history_cut, jobs_to_drop
from sidecar.control.throttle import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


# ---- token bucket --------------------------------------------------------------

def _drive(bucket: TokenBucket, clock: Clock, total: int, batch: int) -> float:
    """Send ``total`` bytes in ``batch``-byte pieces, sleeping what the bucket says; return elapsed."""
    start, sent = clock.t, 0
    while sent < total:
        clock.t += bucket.reserve(batch)
        sent += batch
    return clock.t - start


@pytest.mark.parametrize("rate_bps,batch", [(1_000_000, 65536), (10_000, 4096), (5_000_000, 262144)])
def test_bucket_rate_is_the_limit(rate_bps, batch):
    clock = Clock()
    b = TokenBucket(rate_bps, clock=clock)
    total = batch * 200
    elapsed = _drive(b, clock, total, batch)
    # the first burst is free; everything after it waits at exactly the rate
    assert elapsed == pytest.approx((total - batch - b.burst) / rate_bps + batch / rate_bps, rel=0.01)
    assert total / elapsed == pytest.approx(rate_bps, rel=0.05)


def test_bucket_rate_change_applies_to_the_next_batch_and_zero_is_unlimited():
    clock = Clock()
    b = TokenBucket(1000, clock=clock)
    assert b.reserve(1000) > 0.8          # one second of debt at 1000 B/s
    clock.t += 1.0
    b.set_rate(100_000)
    assert b.reserve(1000) < 0.02         # the new rate repays the next batch 100× faster
    b.set_rate(0)
    assert b.reserve(10**9) == 0.0
    with pytest.raises(ValueError):
        b.set_rate(-1)


def test_bucket_debt_queues_concurrent_callers_fairly():
    clock = Clock()
    b = TokenBucket(1000, clock=clock)
    waits = [b.reserve(500) for _ in range(4)]   # four callers at the same instant
    assert waits == sorted(waits) and waits[-1] == pytest.approx((2000 - b.burst) / 1000)


# ---- planner ---------------------------------------------------------------------

NODES = ["a", "b", "c", "d", "e"]


@st.composite
def fleets(draw, min_nodes=2):
    nodes = NODES[:draw(st.integers(min_nodes, len(NODES)))]
    n = draw(st.integers(0, 60))
    placement = {f"p{i}": draw(st.sampled_from(nodes)) for i in range(n)}
    sizes = {p: draw(st.integers(0, 10_000)) for p in placement}
    return placement, nodes, sizes


def _apply(placement, moves):
    out = dict(placement)
    for m in moves:
        assert out[m.partition] == m.source
        out[m.partition] = m.target
    return out


@settings(max_examples=200, deadline=None)
@given(fleets())
def test_drain_empties_the_node_evenly_by_count(fleet):
    placement, nodes, _ = fleet
    node = nodes[0]
    moves = plan_drain(placement, nodes, node)
    after = _apply(placement, moves)
    assert node not in after.values()
    assert {m.partition for m in moves} == {p for p, n in placement.items() if n == node}
    assert all(m.target != node for m in moves)
    others = [n for n in nodes if n != node]
    before = Counter(n for n in placement.values() if n != node)
    counts = Counter(after.values())
    spread_before = max(before[n] for n in others) - min(before[n] for n in others)
    spread_after = max(counts[n] for n in others) - min(counts[n] for n in others)
    assert spread_after <= max(spread_before, 1)


@settings(max_examples=200, deadline=None)
@given(fleets())
def test_drain_by_size_never_leaves_a_target_heavier_than_needed(fleet):
    placement, nodes, sizes = fleet
    node = nodes[-1]
    moves = plan_drain(placement, nodes, node, sizes=sizes, by_size=True)
    after = _apply(placement, moves)
    assert node not in after.values()
    # greedy LPT: every move went to a lightest node at that moment
    w = weights(placement, sizes, True)
    load = loads({p: n for p, n in placement.items() if n != node}, [n for n in nodes if n != node], w)
    for m in moves:
        assert load[m.target] == min(load.values())
        load[m.target] += w[m.partition]


@settings(max_examples=300, deadline=None)
@given(fleets(), st.booleans(), st.sampled_from([0.0, 0.1, 0.3]))
def test_balance_converges_within_threshold_and_moves_each_partition_once(fleet, by_size, threshold):
    placement, nodes, sizes = fleet
    moves = plan_balance(placement, nodes, sizes=sizes, by_size=by_size, threshold=threshold)
    assert len({m.partition for m in moves}) == len(moves)
    after = _apply(placement, moves)
    assert sorted(after) == sorted(placement)
    w = weights(placement, sizes, by_size)
    before, now = loads(placement, nodes, w), loads(after, nodes, w)
    sq = lambda load: sum(v * v for v in load.values())  # noqa: E731
    assert not moves or sq(now) < sq(before)              # every plan strictly evens the fleet
    if not by_size:
        limit = spread_threshold(before, threshold, False)
        assert max(now.values()) - min(now.values()) <= max(limit, 1)


@settings(max_examples=200, deadline=None)
@given(fleets())
def test_balance_plans_nothing_on_an_even_fleet(fleet):
    _, nodes, _ = fleet
    # an even fleet: round-robin placement
    placement = {f"p{i}": nodes[i % len(nodes)] for i in range(30)}
    assert plan_balance(placement, nodes) == []
    assert plan_balance(placement, nodes, threshold=0.5) == []


def test_balance_moves_onto_a_new_empty_node():
    placement = {f"p{i}": ["a", "b"][i % 2] for i in range(30)}
    moves = plan_balance(placement, ["a", "b", "c"])
    counts = Counter(_apply(placement, moves).values())
    assert sorted(counts.values()) == [10, 10, 10] and all(m.target == "c" for m in moves)


def test_planner_refuses_bad_input_naming_the_field():
    with pytest.raises(ConfigError, match="node"):
        plan_drain({"p": "a"}, ["a", "b"], "zz")
    with pytest.raises(ConfigError, match="only node"):
        plan_drain({"p": "a"}, ["a"], "a")
    with pytest.raises(ConfigError, match="threshold"):
        plan_balance({"p": "a"}, ["a", "b"], threshold=-1)


# ---- retention ---------------------------------------------------------------------

def test_history_cut_keeps_count_age_and_always_the_current_record():
    now = 10_000.0
    entries = [(e, now - 1000 + e) for e in range(10, 110, 10)]   # epochs 10..100, newest last
    assert history_cut(entries, 100, keep=3, max_age_s=0, now=now) == 80
    assert history_cut(entries, 100, keep=0, max_age_s=965, now=now) == 40   # times ≥ now-965 kept
    assert history_cut(entries, 100, keep=20, max_age_s=0, now=now) is None
    # everything is old and the count is tiny: the current record stays anyway
    assert history_cut(entries, 100, keep=1, max_age_s=1, now=now + 10**6) == 100
    assert history_cut(entries, 100, keep=0, max_age_s=0, now=now) is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 10**6), min_size=1, max_size=40, unique=True),
       st.integers(0, 10), st.floats(0, 100), st.floats(0, 200))
def test_history_cut_never_passes_the_current_record(epochs, keep, max_age, now_offset):
    epochs.sort()
    entries = [(e, float(i)) for i, e in enumerate(epochs)]
    cut = history_cut(entries, epochs[-1], keep, max_age, len(epochs) + now_offset)
    assert cut is None or entries[0][0] < cut <= epochs[-1]


class J:
    def __init__(self, id, status, finished):
        self.id, self.status, self.finished, self.started = id, status, finished, finished - 1
        self.terminal = status in ("completed", "failed", "aborted")


def test_jobs_to_drop_never_unfinished_and_respects_both_bounds():
    jobs = [J(f"j{i}", "completed", 1000.0 + i) for i in range(10)] + [J("run", "draining", 0.0),
                                                                         J("old-run", "pending", 1.0)]
    drop = {j.id for j in jobs_to_drop(jobs, keep=3, max_age_s=0, now=2000.0)}
    assert drop == {f"j{i}" for i in range(7)}
    drop = {j.id for j in jobs_to_drop(jobs, keep=0, max_age_s=995.5, now=2000.0)}
    assert drop == {f"j{i}" for i in range(5)}
    assert not {"run", "old-run"} & {j.id for j in jobs_to_drop(jobs, keep=1, max_age_s=1, now=10**9)}


def test_retention_config_names_bad_fields():
    with pytest.raises(ConfigError, match="history-keep"):
        RetentionConfig(history_keep=-1)
    with pytest.raises(ConfigError, match="compact-every"):
        RetentionConfig(interval_s=0)


def test_rate_parser():
    assert rate("500k") == 500_000 and rate("2Mi") == 2 * 1024**2 and rate("1.5MB/s") == 1_500_000
    assert rate("0") == 0
    with pytest.raises(argparse.ArgumentTypeError):
        rate("fast")
