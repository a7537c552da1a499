"""The exchange's life cycle (``sidecar/proxy/exstate.py``) against the harness.

* ``step`` accepts exactly the edges of ``TRANSITIONS`` (every pair checked).
* Every edge of the table is taken by some scenario (those of
  ``test_exchange_harness`` and the budget scenarios below): a new edge needs
  a scenario, an edge no scenario reaches is dead or untested.
* The retry budgets are separate: two application refusals no longer use up
  the pooled-connection retry; each budget stops at its own bound.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

import sidecar.proxy.exstate as exstate_mod
from gate import PlacementTable
from sidecar.proxy.exstate import (APP_REPLAY_MAX, POOLED_RETRY_MAX, REROUTE_MAX, TRANSITIONS, ExState, IllegalStep,
                              Pause, step)
from tests._fake_transport import Harness, header, request, response, settle, status_of
from tests.test_exchange_harness import SCENARIOS, STALE, Scenario

BUDGETS: dict[str, Scenario] = {}


def budget(fn: Scenario) -> Scenario:
    BUDGETS[fn.__name__] = fn
    return fn


def test_step_accepts_exactly_the_table():
    for a, b in itertools.product(ExState, ExState):
        if (a, b) in TRANSITIONS:
            assert step(a, b) is b
        else:
            with pytest.raises(IllegalStep):
                step(a, b)
    assert not any(a is ExState.DONE for a, _ in TRANSITIONS)      # DONE is final
    assert all((s, ExState.DONE) in TRANSITIONS for s in ExState if s is not ExState.DONE)


def test_pause_reasons_are_named_and_distinct():
    assert Pause.ALL == Pause.QUEUED | Pause.HELD | Pause.BUFFERED | Pause.UPSTREAM_FULL
    assert len({int(p) for p in (Pause.QUEUED, Pause.HELD, Pause.BUFFERED, Pause.UPSTREAM_FULL)}) == 4


async def _stale_reply(h: Harness, up) -> None:
    up.reply(response(503, STALE, ctype="application/problem+json"))
    await settle()


@budget
async def two_app_refusals_leave_the_pooled_connection_retry(h: Harness) -> None:
    """Once one counter served both: after two app refusals ``retries < 2`` was False and a
    pooled connection closing under the third attempt gave the client a 502."""
    c = h.client()
    c.send(request("PUT", body=b"payload"))
    await settle()
    [up] = h.upstreams("a")
    assert up.take().endswith(b"payload")
    h.source.begin_migration("t1", "b")                  # refusal 1: the table moved on → replayed at once
    await _stale_reply(h, up)
    assert up.take().endswith(b"payload")                # on the same, now pooled, connection
    h.source.abort_migration("t1")                       # refusal 2
    await _stale_reply(h, up)
    assert up.take().endswith(b"payload")
    [req] = [c.conn.current]
    assert req.replays == 2 and req.pooled_retries == 0
    up.drop()                                            # the pooled connection closes before answering
    await settle()
    fresh = h.upstreams("a")[-1]
    assert fresh is not up
    sent = fresh.take()
    assert sent.endswith(b"payload") and header(sent, "X-Placement-Epoch") == str(int(h.source.get("t1").epoch))
    fresh.reply(response(201))
    assert status_of(c.take()) == 201 and h.tracker.count() == 0 and req.pooled_retries == 1


@budget
async def app_refusal_at_our_own_epoch_waits_on_the_backoff_timer(h: Harness) -> None:
    c = h.client()
    c.send(request("PUT", body=b"v"))
    await settle()
    [up] = h.upstreams("a")
    up.take()
    await _stale_reply(h, up)                            # our table has not moved: the app is behind
    req = c.conn.current
    assert req.state is ExState.HELD and h.ctx.hold.count == 1 and c.take() == b""
    for _ in range(100):                                 # the backoff timer (5 ms) routes it again
        if req.state is not ExState.HELD:
            break
        await asyncio.sleep(0.005)
    assert up.take().endswith(b"v")
    up.reply(response(200))
    assert status_of(c.take()) == 200 and h.outcome("write", "held_ok") == 1


@budget
async def app_replays_stop_at_their_budget(h: Harness) -> None:
    """The table moves before every refusal; after APP_REPLAY_MAX immediate replays the
    next refusal is parked (backoff) instead of routed at once."""
    c = h.client()
    c.send(request("PUT", body=b"v"))
    await settle()
    [up] = h.upstreams("a")
    req = c.conn.current
    for i in range(APP_REPLAY_MAX + 1):
        assert up.take().endswith(b"v"), i
        (h.source.begin_migration if i % 2 == 0 else h.source.abort_migration)("t1", *(("b",) if i % 2 == 0 else ()))
        await _stale_reply(h, up)
    assert req.replays == APP_REPLAY_MAX + 1 and req.state is ExState.HELD and up.take() == b""
    req.hold_timer.cancel()
    h.ctx.hold.release(req)
    req.hold_expired()
    assert status_of(c.take()) == 503


@budget
async def reroutes_stop_at_their_budget(h: Harness) -> None:
    """A table that moves between every resolve and admit: REROUTE_MAX resolves again,
    then the stale refusal is held like any other (its own budget, nothing else's)."""
    class AlwaysMoves(PlacementTable):
        def admit_write(self, partition, epoch):
            self.set("t1", "a")                          # a transition lands right after route() resolved
            return super().admit_write(partition, epoch)

    h2 = Harness(AlwaysMoves({"t1": "a"}))
    try:
        c = h2.client()
        c.send(request("PUT", body=b"v"))
        await settle()
        req = c.conn.current
        assert req.reroutes == REROUTE_MAX and req.state is ExState.HELD
        assert all(u.take() == b"" for u in h2.pool.opened) and req.pooled_retries == 0
        c.vanish()
    finally:
        h2.close()


@budget
async def pooled_retries_stop_at_their_budget(h: Harness) -> None:
    """Each pooled connection that closes before answering costs one retry; past
    POOLED_RETRY_MAX the client gets the 502."""
    clients = [h.client() for _ in range(POOLED_RETRY_MAX + 1)]   # concurrent: one connection each
    for cl in clients:
        cl.send(request("GET"))
    await settle()
    for u in h.upstreams("a"):
        assert u.take().startswith(b"GET ")
        u.reply(response(200))                            # … each then pooled
    await settle()
    assert len(h.pool.idle[("10.0.0.1", 8001)]) >= POOLED_RETRY_MAX + 1
    c2 = h.client()
    c2.send(request("GET"))
    await settle()
    req = c2.conn.current
    for _ in range(POOLED_RETRY_MAX + 1):
        [u] = [u for u in h.upstreams("a") if u.conn.exchange is req]
        u.drop()
        await settle()
    assert req.pooled_retries == POOLED_RETRY_MAX and status_of(c2.take()) == 502


@pytest.mark.parametrize("name", sorted(BUDGETS))
async def test_budget(name):
    h = Harness(PlacementTable({"t1": "a"}))
    try:
        await BUDGETS[name](h)
    finally:
        h.close()


async def test_every_exchange_transition_is_exercised():
    """Every (state, next state) of ``TRANSITIONS`` is taken by some scenario (every move
    ``step`` checks is seen through ``exstate.watch``: compiled, the exchange calls it in C)."""
    seen: set[tuple[ExState, ExState]] = set()

    def recording(state: ExState, to: ExState) -> None:
        seen.add((state, to))

    exstate_mod.watch(recording)
    try:
        for run in list(SCENARIOS.values()) + list(BUDGETS.values()):
            h = Harness(PlacementTable({"t1": "a"}))
            try:
                await run(h)
            finally:
                h.close()
    finally:
        exstate_mod.watch(None)
    missing = sorted(f"{a.name} → {b.name}" for a, b in TRANSITIONS if (a, b) not in seen)
    assert not missing, f"no scenario takes: {missing}"
    assert seen <= set(TRANSITIONS)
