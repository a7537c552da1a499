"""The exhaustive check of resharding (sidecar/control/protocol_split.py, DESIGN §12.5) at a small
bound: a slot split with its new half on another node — and, separately, split then merged back —
with controller A pausing and B taking over and every import and clean-up delayed on the network.
With every guard, per key, no write commits during a passed cutover or under a slot the table no
longer has, the key's present slot holds its last acknowledged write, and nothing is left behind;
dropping the barrier, the fence or the post-flip clean-up gives a counter-example.
Larger bounds (lease expiry, rejoins, more writes): ``scripts/check-protocol``."""

from __future__ import annotations

import pytest

from gate import key_hash, parse_slot
from sidecar.control.protocol_split import GUARDS, HI, K, LO, Bounds, check

SMALL = Bounds(writes=1, rejoins=0, lease=False)


def test_the_two_keys_fall_in_the_two_halves():
    assert parse_slot(LO, 1).holds(key_hash(K[0])) and parse_slot(HI, 1).holds(key_hash(K[1]))


def test_split_has_no_counterexample_with_every_guard():
    res = check(SMALL)
    assert res.counterexample is None, (res.why, res.counterexample)
    assert res.states > 20_000   # it did explore


@pytest.mark.parametrize("guard", GUARDS)
def test_each_split_guard_is_load_bearing(guard):
    res = check(Bounds(writes=1, rejoins=0, lease=False, drop=frozenset({guard})))
    assert res.counterexample is not None, f"dropping {guard} should break an invariant"
    want = {"barrier": "INV-M1", "fence": "last acknowledged write", "cleanup": "left behind"}[guard]
    assert want in res.why, res.why


def test_merge_back_fence_is_load_bearing():
    res = check(Bounds(writes=1, rejoins=0, lease=False, merge=True, drop=frozenset({"fence"})))
    assert res.counterexample is not None and "last acknowledged write" in res.why
