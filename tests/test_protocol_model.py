"""The exhaustive protocol check (sidecar/control/protocol_model.py) at a small bound: with every
guard, no reachable state loses an acknowledged write; with any one guard dropped — the
mover fence, DESIGN §5 rule 1, 2, 4 or 5, a takeover's fresh tokens, the store's at_epoch
check — there is a counter-example. Larger bounds: ``scripts/check-protocol``."""

from __future__ import annotations

import pytest

from sidecar.control.protocol_model import GUARDS, Bounds, check

SMALL = Bounds(writes=1, rejoins=1, retries=0)


def test_no_counterexample_with_every_guard():
    res = check(SMALL)
    assert res.counterexample is None, (res.why, res.counterexample)
    assert res.states > 50_000   # it did explore (a regression that prunes everything would pass vacuously)


@pytest.mark.parametrize("guard", GUARDS)
def test_each_guard_is_load_bearing(guard):
    res = check(Bounds(writes=1, rejoins=1, retries=1, drop=frozenset({guard})))
    assert res.counterexample is not None, f"dropping {guard} should lose a write"
    assert "last acknowledged write" in res.why
