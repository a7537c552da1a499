"""Per-slot request rates for the resharding planner (issue 29, DESIGN §12.6): the data path counts each
request once under its hash slot (``epochgate_slot_requests_total{slot}``), ``reshard plan`` turns
two scrapes (or a Prometheus answer) into rates, and the planner's splits, driven by those rates, are
checked as properties (hypothesis): each plan is runnable split by split against the table it leaves,
the table tiles the key space after every split, the shares it reports are the loads it leaves, and
a plan that says it reached the target did."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from gate import ConfigError, PartitionState, PlacementTable, key_hash, tiling_problem
from sidecar._metrics import Metrics
from sidecar.control.reshard import plan_split
from sidecar.control.reshard_planner import plan_hot_splits
from sidecar.control.slot_rates import prometheus_rates, rates_between, slot_counts

_spec = importlib.util.spec_from_file_location("_fake_transport", Path(__file__).parent / "_fake_transport.py")
fake = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake)


async def test_the_data_path_counts_each_request_once_under_its_slot():
    h = fake.Harness(PlacementTable({f"slot-{i}": "a" for i in range(8)}), hash_slots=8)
    try:
        c = h.client()
        for method in ("GET", "PUT", "GET"):   # the first opens a connection and routes again: one count
            c.send(fake.request(method, key="user-1", body=b"x" if method == "PUT" else b""))
            await fake.settle()
            h.pool.opened[0].reply(fake.response(200))
            await fake.settle()
        h.stats.flush()
        counts = slot_counts(generate_latest(h.metrics.registry).decode())
        assert counts == {f"slot-{key_hash('user-1') % 8}": 3.0}
    finally:
        h.close()


async def test_no_slot_label_outside_hash_slot_mode():
    h = fake.Harness(PlacementTable({"t1": "a"}))
    try:
        c = h.client()
        c.send(fake.request("GET"))
        await fake.settle()
        h.pool.opened[0].reply(fake.response(200))
        await fake.settle()
        h.stats.flush()
        assert slot_counts(generate_latest(h.metrics.registry).decode()) == {}
    finally:
        h.close()


def test_rates_from_two_scrapes_of_two_sidecars():
    m1, m2 = Metrics(), Metrics()
    m1.slot_requests.labels("slot-0").inc(100)
    m2.slot_requests.labels("slot-0").inc(50)
    m2.slot_requests.labels("slot-1").inc(10)
    assert slot_counts(generate_latest(m1.registry).decode() + generate_latest(m2.registry).decode()) == {
        "slot-0": 150.0, "slot-1": 10.0}
    # slot-1's counter went down: its sidecar restarted, so the whole new value counts (as rate() does)
    assert rates_between({"slot-0": 150.0, "slot-1": 10.0}, {"slot-0": 250.0, "slot-1": 4.0}, 2.0) == {
        "slot-0": 50.0, "slot-1": 2.0}
    with pytest.raises(ConfigError, match="window"):
        rates_between({}, {}, 0)
    with pytest.raises(ConfigError, match="metrics"):
        slot_counts("epochgate_slot_requests_total{slot=")


def test_rates_from_prometheus():
    ok = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"slot": "slot-3"}, "value": [1.0, "12.5"]}, {"metric": {}, "value": [1.0, "1"]}]}}
    assert prometheus_rates(ok) == {"slot-3": 12.5}
    with pytest.raises(ConfigError, match="prometheus"):
        prometheus_rates({"status": "error", "error": "parse error"})
    with pytest.raises(ConfigError, match="prometheus"):
        prometheus_rates({"status": "success", "data": {}})


@st.composite
def fleets(draw):
    base = draw(st.sampled_from([1, 2, 4, 8]))
    nodes = draw(st.lists(st.sampled_from("abcd"), min_size=base, max_size=base))
    table = {f"slot-{i}": (PartitionState.active(n), 1) for i, n in enumerate(nodes)}
    rates = {p: draw(st.floats(0, 1000, allow_nan=False)) for p in table}
    extra = draw(st.lists(st.sampled_from("cdef"), max_size=2, unique=True))
    target = draw(st.floats(0.05, 1.0))
    return base, table, rates, extra, target


@settings(max_examples=200, deadline=None)
@given(fleets())
def test_planned_splits_run_in_order_tile_and_report_the_loads_they_leave(fleet):
    base, table, rates, extra, target = fleet
    plan = plan_hot_splits(table, base, rates, target, extra, max_splits=16)
    cur, rate = dict(table), dict(rates)
    for slot, to in plan.splits:
        p = plan_split(cur, base, slot, to)    # runnable against the table the earlier splits left
        del cur[slot]
        cur.update({n: (PartitionState.active(node), 1) for n, node in p.into})
        for n, _ in p.into:
            rate[n] = rate.get(slot, 0.0) / 2   # the planner's model: a split halves the rate
        assert tiling_problem(list(cur), base) is None
        assert p.into[1][1] == to and p.into[0][1] == p.sources[0][1]
    load: dict[str, float] = {n: 0.0 for n in plan.shares}
    for p, (s, _) in cur.items():
        load[str(s.source)] += rate.get(p, 0.0)
    total = sum(load.values())
    if total > 0:
        assert plan.shares == pytest.approx({n: v / total for n, v in load.items()})
        if plan.reached:
            assert max(plan.shares.values()) <= target + 1e-9
        else:
            assert plan.why
    assert len(plan.splits) <= 16


@settings(max_examples=100, deadline=None)
@given(fleets())
def test_every_split_lowers_the_hottest_nodes_load(fleet):
    base, table, rates, extra, target = fleet
    plan = plan_hot_splits(table, base, rates, target, extra, max_splits=8)
    prefix_max = []
    for k in range(len(plan.splits) + 1):
        shorter = plan_hot_splits(table, base, rates, 1.0 if k == 0 else target, extra, max_splits=k)
        if k and shorter.splits != plan.splits[:k]:
            break
        prefix_max.append(max(shorter.shares.values(), default=0.0))
    assert all(b < a + 1e-12 for a, b in zip(prefix_max, prefix_max[1:]))
