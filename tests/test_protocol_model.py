"""The exhaustive protocol check (sidecar/control/protocol_model.py) at a small bound: with every
guard, no reachable state loses an acknowledged write; with any one guard dropped — the
mover fence, DESIGN §5 rule 1, 2, 4 or 5, a takeover's fresh tokens, the store's at_epoch
check — there is a counter-example. In log mode (sidecar/control/protocol_log.py: the sidecar
applies the change log entry by entry and cannot parse a newer writer's cutover entry), DESIGN
§4.3's fail-closed rule gives none and the old "skip" rule gives an INV-M1 counter-example.
Larger bounds: ``scripts/check-protocol``."""

from __future__ import annotations

import dataclasses

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


LOG = Bounds(writes=1, rejoins=1, retries=0, pauses=0, unreadable=frozenset({"enter_cutover"}), others=1)


def test_unparseable_cutover_entry_fail_closed_has_no_counterexample():
    res = check(LOG)
    assert res.counterexample is None, (res.why, res.counterexample)
    assert res.states > 5_000


def test_unparseable_cutover_entry_skipped_breaks_inv_m1():
    """Issue 26 #12: skip the entry, apply the next one, ack past the cutover, admit at draining."""
    res = check(dataclasses.replace(LOG, drop=frozenset({"fail_closed"})))
    assert res.counterexample is not None and res.why.startswith("INV-M1"), res.why
    trace = res.counterexample
    assert any("skips the entry" in t for t in trace) and "A barrier passes" in trace
