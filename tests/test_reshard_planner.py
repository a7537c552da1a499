"""The resharding planner: hottest slot of the most loaded node first, new half to the least loaded."""

from __future__ import annotations

import pytest

from gate import ConfigError, PlacementTable
from sidecar.control.reshard_planner import plan_hot_splits


def test_splits_until_no_node_exceeds_the_target():
    t = PlacementTable({"slot-0": "a", "slot-1": "a", "slot-2": "b", "slot-3": "b"})
    rates = {"slot-0": 600.0, "slot-1": 100.0, "slot-2": 100.0, "slot-3": 100.0}
    plan = plan_hot_splits(t.partitions(), 4, rates, 0.5, nodes=["c"])
    assert plan.reached and max(plan.shares.values()) <= 0.5
    assert plan.splits[0] == ("slot-0", "c")                       # the hottest slot, to the new empty node
    assert all(s.startswith("slot-0") for s, _ in plan.splits)    # only the hot slot's descendants


def test_a_plan_that_cannot_help_says_why():
    t = PlacementTable({"slot-0": "a"})
    plan = plan_hot_splits(t.partitions(), 1, {"slot-0": 10.0}, 0.5)
    assert not plan.reached and plan.splits == () and "would not lower" in plan.why
    with pytest.raises(ConfigError, match="target"):
        plan_hot_splits(t.partitions(), 1, {}, 1.5)
