"""The hold parks writes refused ``fail_closed`` (never sent upstream) and
retries them when the gate is writable again — re-resolved and re-admitted
against the table as it is then, never at the epoch they were refused at.
Real upstream HTTP servers; the guard stands in for the barrier participant
(the Consul case, a SIGSTOPped sidecar rejoining, is the last test)."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest

from tests._sidecar_util import (  # noqa: F401 (nodes, placement, session are fixtures)
    KEY,
    config,
    nodes,
    placement,
    running_sidecar,
    session,
    until,
    writes,
)


async def put(session, port, data=b"v", headers=KEY):
    async with session.put(f"http://127.0.0.1:{port}/kv/k", data=data, headers=headers) as r:
        return r.status, dict(r.headers), await r.read()


def closed_guard(sc):
    open_ = [False]
    sc.gate.add_guard(lambda: open_[0])
    return open_


async def test_fail_closed_write_is_held_then_sent_once_when_open(placement, nodes, session):
    a, b = nodes
    async with running_sidecar(config(placement, hold_seconds=10)) as sc:
        open_ = closed_guard(sc)
        task = asyncio.create_task(put(session, sc.port, data=b"held"))
        await until(lambda: sc.ctx.hold.count == 1)
        await asyncio.sleep(0.1)             # several re-checks while closed: still parked, nothing sent
        assert not task.done() and not writes(a) and not writes(b)
        open_[0] = True
        status, _, body = await task
        assert status == 200, body
        assert len(writes(a)) == 1 and not writes(b)   # exactly one upstream write
        assert writes(a)[0]["len"] == 4
        assert writes(a)[0]["headers"]["X-Placement-Epoch"] == str(int(sc.table.state("t1")[1]))
        assert sc.ctx.hold.count == 0
        sc.stats.flush()
        assert sc.metrics.requests.labels("write", "active", "held_ok")._value.get() == 1


async def test_held_write_is_readmitted_against_the_fresh_table(placement, nodes, session):
    """The table moves while the gate is closed: the write goes to the new owner at
    the new epoch, never to the old owner at the epoch it was refused at."""
    a, b = nodes
    async with running_sidecar(config(placement, hold_seconds=10)) as sc:
        e0 = int(sc.table.state("t1")[1])
        open_ = closed_guard(sc)
        task = asyncio.create_task(put(session, sc.port, data=b"moved"))
        await until(lambda: sc.ctx.hold.count == 1)
        await sc.store.begin("t1", "b")
        await sc.store.enter_cutover("t1")
        e = await sc.store.complete("t1")
        await asyncio.sleep(0.05)            # transitions while closed do not send it
        assert not task.done() and not writes(a) and not writes(b)
        open_[0] = True
        status, _, body = await task
        assert status == 200, body
        assert not writes(a) and len(writes(b)) == 1
        assert int(writes(b)[0]["headers"]["X-Placement-Epoch"]) == int(e) > e0
        assert writes(b)[0]["headers"]["X-Placement"] == "b"


async def test_gate_opens_during_cutover_write_waits_for_the_flip(placement, nodes, session):
    """Open again, but the partition is in cutover: the write moves from waiting on
    the gate to waiting on the partition, and lands on the target after the flip."""
    a, b = nodes
    async with running_sidecar(config(placement, hold_seconds=10)) as sc:
        await sc.store.begin("t1", "b")
        await sc.store.enter_cutover("t1")
        open_ = closed_guard(sc)
        task = asyncio.create_task(put(session, sc.port, data=b"x"))
        await until(lambda: sc.ctx.hold.count == 1)
        open_[0] = True
        await until(lambda: "t1" in sc.ctx.hold._waiters)   # re-admitted: cutover → parked on t1
        assert not task.done() and not writes(a) and not writes(b)
        e = await sc.store.complete("t1")
        status, _, _ = await task
        assert status == 200 and not writes(a) and len(writes(b)) == 1
        assert writes(b)[0]["headers"]["X-Placement-Epoch"] == str(int(e))
        assert sc.ctx.hold.count == 0


async def test_gate_stays_closed_hold_runs_out_with_fail_closed_problem(placement, nodes, session):
    a, b = nodes
    async with running_sidecar(config(placement, hold_seconds=0.3)) as sc:
        closed_guard(sc)
        status, headers, body = await put(session, sc.port)
        assert status == 503 and headers["Retry-After"] == "1"
        doc = json.loads(body)
        assert doc["reason"] == "fail_closed" and doc["partition"] == "t1" and doc["placement"] == "a"
        assert not writes(a) and not writes(b)
        assert sc.ctx.hold.count == 0 and not sc.ctx.hold._closed


async def test_fail_closed_hold_count_bound(placement, nodes, session):
    a, b = nodes
    async with running_sidecar(config(placement, hold_max=1, hold_seconds=10)) as sc:
        open_ = closed_guard(sc)
        first = asyncio.create_task(put(session, sc.port, data=b"first"))
        await until(lambda: sc.ctx.hold.count == 1)
        status, _, body = await put(session, sc.port, data=b"second")   # the hold is full: refused at once
        assert status == 503 and b'"reason":"fail_closed"' in body
        open_[0] = True
        assert (await first)[0] == 200
        assert len(writes(a)) == 1 and writes(a)[0]["len"] == 5


@pytest.mark.consul
async def test_sigstopped_sidecar_rejoins_and_sends_queued_write_to_the_new_owner(consul_agent, kv_prefix, tmp_path,
                                                                                  nodes, session):
    """A real Consul-mode sidecar process frozen longer than its lease with a write
    queued on it, while the partition moves a → b. On waking it fails closed (lease
    expired), holds the write, rejoins (new session, fresh read) and only then sends
    it: to b, at the epoch of the move — one upstream write, the client sees 200."""
    from gate._consul_consensus import open_consul

    from ._fleet import Fleet

    a, b = nodes
    lease = 2.0
    consensus, store, _ = await open_consul(consul_agent.url, kv_prefix)
    fleet = Fleet(consul_agent.url, kv_prefix, tmp_path)
    try:
        await store.set_node("a", a.url)
        await store.set_node("b", b.url)
        await store.set("t1", "a")
        sc = await fleet.sidecar("hold-sc", extra=["--lease-seconds", str(lease), "--session-ttl", "10",
                                                   "--hold-seconds", "10"])
        port = sc.info["ports"][0]
        for _ in range(100):   # writable once its participant has joined
            status, _, _ = await put(session, port, data=b"first")
            if status == 200:
                break
            await asyncio.sleep(0.1)
        assert status == 200 and len(writes(a)) == 1
        sc.signal(signal.SIGSTOP)
        try:
            task = asyncio.create_task(put(session, port, data=b"queued"))
            await store.begin("t1", "b")          # no controller: nothing waits on the frozen sidecar
            await store.enter_cutover("t1")
            e = await store.complete("t1")
            await asyncio.sleep(lease + 1.0)     # > lease + one renewal interval: it wakes with its lease run out
            assert not task.done()
        finally:
            sc.signal(signal.SIGCONT)
        status, _, body = await task
        assert status == 200, body
        assert len(writes(a)) == 1                # nothing more on the old owner
        assert len(writes(b)) == 1 and writes(b)[0]["len"] == 6
        assert writes(b)[0]["headers"]["X-Placement-Epoch"] == str(int(e))
        async with session.get(sc.info["admin"] + "/metrics") as r:
            text = await r.text()
        held = [ln for ln in text.splitlines() if ln.startswith("epochgate_hold_duration_seconds_count")]
        assert held and float(held[0].split()[1]) >= 1, held   # it was held, not just admitted late
    finally:
        fleet.stop()
        await consensus.close()
