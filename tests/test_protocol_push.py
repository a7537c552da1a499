"""The push transport's exhaustive check (sidecar/control/protocol_push.py) at small bounds:
lost, duplicated and reordered pushes and acks, a deposed controller's pushes, a stream that
goes down (Consul fallback), session loss. With every guard: no write commits on the source
after a barrier passed. Without the ack's epoch check, or the push's in-order check: a
counter-example. The fences are shown *not* to be what safety rests on (pushes carry only
committed entries). Larger bounds: ``python -m sidecar.control.protocol_push``."""

from __future__ import annotations

import pytest

from sidecar.control.protocol_push import Bounds, check

# each about 1-2 s: one dimension of the transport's faults per run
BOUNDS = {
    "deposed": Bounds(writes=1, rejoins=0, dups=0, others=0, deposed=1),
    "rejoin": Bounds(writes=1, rejoins=1, dups=0, others=0, deposed=0),
    "duplicates": Bounds(writes=1, rejoins=0, dups=1, others=0, deposed=0),
}


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_no_counterexample_with_every_guard(name):
    res = check(BOUNDS[name])
    assert res.counterexample is None, (res.why, res.counterexample)
    assert res.states > 10_000   # it did explore


def test_without_the_ack_epoch_check_a_stale_ack_passes_the_barrier():
    res = check(Bounds(writes=1, rejoins=0, dups=0, others=0, deposed=0, drop=frozenset({"epoch"})))
    assert res.counterexample is not None and res.why.startswith("INV-M1"), res.why
    trace = res.counterexample
    assert any("hub gets ack 2" in t for t in trace) and "C barrier passes (stream ack)" in trace


def test_without_the_in_order_check_a_push_past_a_lost_one_is_acked():
    res = check(Bounds(writes=1, rejoins=0, dups=0, others=1, deposed=0, drop=frozenset({"inorder"})))
    assert res.counterexample is not None and res.why.startswith("INV-M1"), res.why
    assert any(t.startswith("another partition commits") for t in res.counterexample)


@pytest.mark.parametrize("guard", ["push_fence", "ack_fence"])
def test_the_fences_are_not_what_safety_rests_on(guard):
    res = check(Bounds(writes=1, rejoins=0, dups=0, others=0, deposed=1, drop=frozenset({guard})))
    assert res.counterexample is None, (res.why, res.counterexample)
