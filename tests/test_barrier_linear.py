"""The barrier reads O(N) from Consul per cutover (gate/_ackwatch.py), and
its per-key waits keep rule 2's meaning: acked ≥ E under the listed session,
or dropped when the key is gone or held by another session. Real Consul;
participants here are bare sessions holding ``sidecars/<id>`` so each ack is
under the test's control."""

from __future__ import annotations

import asyncio
import time

import pytest

from gate import MemoryConsensus
from gate._consensus_store import ConsensusStore
from gate._sessions import ConsulHTTP
from sidecar.control.barrier import Barrier, BarrierTimeout

pytestmark = [pytest.mark.consul]


class Fleet:
    def __init__(self, consul: ConsulHTTP, prefix: str) -> None:
        self.consul, self.prefix = consul, prefix
        self.sessions: dict[str, str] = {}

    async def join(self, pid: str) -> None:
        sid = await self.consul.session_create(f"t-{pid}", 10)
        self.sessions[pid] = sid
        assert await self.consul.acquire(f"{self.prefix}sidecars/{pid}", b"0", sid)

    async def ack(self, pid: str, epoch: int) -> None:
        assert await self.consul.acquire(f"{self.prefix}sidecars/{pid}", str(epoch).encode(), self.sessions[pid])

    async def close(self) -> None:
        for sid in self.sessions.values():
            try:
                await self.consul.session_destroy(sid)
            except Exception:  # noqa: BLE001 - already gone
                pass


@pytest.fixture
async def fleet(consul_agent, kv_prefix):
    consul = ConsulHTTP(consul_agent.url)
    f = Fleet(consul, kv_prefix)
    try:
        yield f
    finally:
        await f.close()
        await consul.close()


async def _store() -> ConsensusStore:
    store = ConsensusStore(MemoryConsensus())
    await store.set("p", "a")
    await store.begin("p", "b")
    return store


async def test_acks_one_by_one_cost_one_answer_each(fleet):
    n = 30
    await asyncio.gather(*(fleet.join(f"s{i}") for i in range(n)))
    barrier = Barrier(fleet.consul, fleet.prefix)
    store = await _store()
    started = asyncio.Event()

    async def ack_slowly(epoch_box: list[int]) -> None:
        await started.wait()
        for i in range(n):           # one at a time: the old wait re-read all n keys after each
            await fleet.ack(f"s{i}", epoch_box[0])
            await asyncio.sleep(0.005)

    box: list[int] = []
    orig = store.enter_cutover

    async def enter_cutover(p):
        e = await orig(p)
        box.append(e + 1_000_000)     # acks well above any Consul index of this agent
        started.set()
        return e
    store.enter_cutover = enter_cutover   # type: ignore[method-assign]
    acker = asyncio.create_task(ack_slowly(box))
    res = await barrier.cutover(store, "p", 10.0)
    await acker
    assert res.acked == {f"s{i}" for i in range(n)} and not res.dropped
    # one list plus about one answer per participant (a retry on a spurious wake at most)
    assert barrier.reader.requests <= 1 + 2 * n, barrier.reader.requests
    assert barrier.bytes_received < n * 1500, barrier.bytes_received


async def test_lost_and_taken_over_sessions_are_dropped_and_silence_times_out(fleet):
    for pid in ("gone", "taken", "silent", "good"):
        await fleet.join(pid)
    barrier = Barrier(fleet.consul, fleet.prefix)
    store = await _store()
    epoch = await store.enter_cutover("p")
    listed, index = await barrier.list()
    assert set(listed) == {"gone", "taken", "silent", "good"}

    # after the list, before the wait: a restarted process took "taken"'s id and
    # published a high epoch under its new session — that is no ack of the listed one
    old = fleet.sessions["taken"]
    new = await fleet.consul.session_create("t-taken-2", 10)
    await fleet.consul.session_destroy(old)
    fleet.sessions["taken"] = new
    assert await fleet.consul.acquire(f"{fleet.prefix}sidecars/taken", b"999999999", new)

    async def act() -> None:
        await asyncio.sleep(0.05)
        await fleet.consul.session_destroy(fleet.sessions["gone"])      # key deleted with the session
        await fleet.ack("good", int(epoch))

    task = asyncio.create_task(act())
    with pytest.raises(BarrierTimeout) as info:
        await barrier.wait(epoch, listed, index, time.monotonic(), 1.5)
    await task
    r = info.value.result
    assert r.dropped == {"gone", "taken"} and r.acked == {"good"} and r.pending == {"silent"}
