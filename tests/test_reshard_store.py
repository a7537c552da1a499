"""A reshard on the consensus store (DESIGN §12.2, §12.3): one transaction per step for all sources,
the flip deleting the sources and creating the destinations at one epoch, removal entries
(``"state": null``) that a replica applies and an older reader cannot parse, fenced by ``at_epoch``.
In memory, and against a real Consul agent (delete-cas in a /v1/txn)."""

from __future__ import annotations

import asyncio

import pytest

from gate import (
    ConsensusStore,
    MemoryConsensus,
    NotMigrating,
    PartitionState,
    Phase,
    Replica,
    StaleAttempt,
    open_consul,
)
from gate._consensus_store import LogEntry

INTO = (("slot-1-of-4", "a"), ("slot-3-of-4", "b"))


async def _split_and_merge(store, replica):
    async def synced():
        for _ in range(500):
            if replica.partitions() == await store.partitions():
                return replica.partitions()
            await asyncio.sleep(0.01)
        raise AssertionError("the replica did not follow")

    await store.set("slot-0", "a")
    await store.set("slot-1", "a")
    e1 = await store.begin_reshard(["slot-1"], INTO)
    assert (await synced())["slot-1"] == (PartitionState(Phase.DRAINING, "a", "b", INTO), e1)
    with pytest.raises(StaleAttempt):
        await store.enter_cutover_all(["slot-1"], at_epoch=e1 - 1)   # a paused controller's late call
    e2 = await store.enter_cutover_all(["slot-1"], at_epoch=e1)
    with pytest.raises(NotMigrating):
        await store.complete(["slot-1"][0], at_epoch=e2)              # not finished as a move
    e3 = await store.complete_reshard(["slot-1"], at_epoch=e2)
    table = await synced()
    assert table == {"slot-0": table["slot-0"], "slot-1-of-4": (PartitionState.active("a"), e3),
                     "slot-3-of-4": (PartitionState.active("b"), e3)}
    assert [(h.op, h.phase) for h in await store.history("slot-1")][-2:] == [
        ("enter_cutover", "cutover"), ("complete_reshard", "removed")]
    halves = ["slot-1-of-4", "slot-3-of-4"]                           # and merge back: two sources
    m1 = await store.begin_reshard(halves, (("slot-1", "a"),))
    assert {e for _, e in [(await store.state(h)) for h in halves]} == {m1}
    m2 = await store.enter_cutover_all(halves, at_epoch=m1)
    m3 = await store.complete_reshard(halves, at_epoch=m2)
    table = await synced()
    assert sorted(table) == ["slot-0", "slot-1"] and table["slot-1"] == (PartitionState.active("a"), m3)


async def test_split_and_merge_in_memory_with_a_replica():
    c = MemoryConsensus()
    store = ConsensusStore(c)
    replica = Replica(c)
    await replica.start()
    try:
        await _split_and_merge(store, replica)
    finally:
        await replica.stop()


def test_a_null_state_parses_only_as_a_flips_removal():
    assert LogEntry.from_dict({"seq": 3, "p": "slot-1", "op": "complete_reshard", "state": None}).state is None
    with pytest.raises(ValueError):
        LogEntry.from_dict({"seq": 3, "p": "slot-1", "op": "complete_migration", "state": None})


@pytest.mark.consul
async def test_split_and_merge_on_consul(consul_agent, kv_prefix):
    c, store, replica = await open_consul(consul_agent.url, kv_prefix, wait_s=1.0)
    await replica.start()
    try:
        await _split_and_merge(store, replica)
    finally:
        await replica.stop()
        await c.close()
