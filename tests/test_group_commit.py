"""Group commit (gate/_group_commit.py): concurrent transitions of one store share
transactions; the log stays gap-free, replicas follow batches, a stale cache
never decides a refusal. MemoryConsensus for the logic, real Consul for the wire."""

from __future__ import annotations

import asyncio

import pytest

from gate import AlreadyMigrating, ConsensusStore, GroupCommit, ConsulConsensus, MemoryConsensus, PartitionState, Replica
from gate._consensus_store import decode_head, encode_head, LogEntry


def _grouped(store: ConsensusStore) -> ConsensusStore:
    GroupCommit(store)
    return store


async def _follow_until(replica: Replica, store: ConsensusStore, timeout_s: float = 10.0) -> None:
    want = await store.partitions()
    end = asyncio.get_running_loop().time() + timeout_s
    while replica.partitions() != want:
        assert asyncio.get_running_loop().time() < end, "replica did not converge"
        await asyncio.sleep(0.01)


async def _storm(store: ConsensusStore, n: int) -> None:
    """n partitions migrating at once: begin → cutover → complete each."""
    await asyncio.gather(*(store.set(f"p{i}", "a") for i in range(n)))

    async def move(p: str) -> None:
        await store.begin(p, "b")
        await store.enter_cutover(p)
        await store.complete(p)
    await asyncio.gather(*(move(f"p{i}") for i in range(n)))


async def test_concurrent_transitions_share_commits_and_the_log_stays_gap_free():
    c = MemoryConsensus()
    store = _grouped(ConsensusStore(c, log_keep=1000))
    follower = Replica(c, wait_s=1.0)
    await follower.start()
    try:
        await _storm(store, 20)
        g = store.group
        assert g.transitions == 80
        assert g.commits <= 80 // 4, (g.commits, g.transitions)   # batched, not one commit each
        seqs = [int(v.key.rsplit("/", 1)[1]) for v in await c.scan("log/e/")]
        assert seqs == list(range(1, 81))                           # gap-free, in commit order
        parts = await store.partitions()
        assert parts.keys() == {f"p{i}" for i in range(20)}
        assert all(st == PartitionState.active("b") for st, _ in parts.values())
        for i in range(20):   # each partition's own epochs strictly increase, in state-machine order
            h = await store.history(f"p{i}")
            assert [x.op for x in h] == ["set", "begin_migration", "enter_cutover", "complete_migration"]
            assert all(a.epoch < b.epoch for a, b in zip(h, h[1:]))
        await _follow_until(follower, store)
        assert follower.seq == 80 and follower.snapshots == 1   # followed the batches, never re-read
    finally:
        await follower.stop()


async def test_a_refusal_comes_from_a_fresh_read_not_the_cache():
    """The committer cached p as Draining(a→b) from its own commit; another
    controller aborts it. A begin must succeed (re-read), not be refused as
    AlreadyMigrating on the cached state — and a begin that really is refused
    is refused."""
    c = MemoryConsensus()
    mine = _grouped(ConsensusStore(c))
    other = ConsensusStore(c)
    await mine.set("p", "a")
    await mine.begin("p", "b")
    await other.abort("p")                         # behind mine's cache
    e = await mine.begin("p", "c")
    assert await other.state("p") == (PartitionState.draining("a", "c"), e)
    with pytest.raises(AlreadyMigrating):
        await mine.begin("p", "b")


async def test_a_stale_cache_loses_its_condition_and_rereads():
    c = MemoryConsensus()
    mine = _grouped(ConsensusStore(c))
    other = ConsensusStore(c)
    await mine.set("p", "a")
    await other.set("p", "z")                       # mine still caches Active(a)
    e = await mine.begin("p", "b")
    assert await other.state("p") == (PartitionState.draining("z", "b"), e)
    assert mine.conflicts >= 1


async def test_two_transitions_of_one_partition_never_share_a_commit():
    c = MemoryConsensus()
    store = _grouped(ConsensusStore(c))
    await store.set("p", "a")
    e1, e2 = await asyncio.gather(store.begin("p", "b"), store.enter_cutover("p"))
    assert e1 < e2
    assert (await store.state("p"))[0].phase.value == "cutover"


def test_head_codec_round_trips_a_batch_and_refuses_gaps():
    es = [LogEntry(s, partition=f"p{s}", state=PartitionState.active("a"), op="set") for s in (4, 5, 6)]
    assert decode_head(encode_head(es)) == es
    assert decode_head(encode_head(es[:1])) == es[:1]
    with pytest.raises(ValueError):
        decode_head(encode_head([es[0], es[2]]))


@pytest.mark.consul
async def test_group_commit_on_consul_with_a_following_replica(consul_agent, kv_prefix):
    c = ConsulConsensus(consul_agent.url, kv_prefix)
    rc = ConsulConsensus(consul_agent.url, kv_prefix)
    store = _grouped(ConsensusStore(c))
    await store.set("seed", "a")
    follower = Replica(rc, wait_s=1.0)
    await follower.start()
    try:
        await _storm(store, 20)
        assert store.group.commits < store.group.transitions
        await _follow_until(follower, store)
        assert follower.snapshots == 1
    finally:
        await follower.stop()
        await rc.close()
        await c.close()


async def test_a_replica_that_missed_a_few_entries_reads_just_those():
    c = MemoryConsensus()
    store = ConsensusStore(c)
    await store.set("p", "a")
    r = Replica(c)
    await r.start(follow=False)
    scans = []
    orig = c.scan

    async def counting_scan(*a, **kw):
        scans.append(a)
        return await orig(*a, **kw)
    c.scan = counting_scan   # type: ignore[method-assign]
    for node in ("b", "c", "d"):
        await store.set("p", node)
    await r.refresh()
    assert r.state("p") == await store.state("p") and r.seq == 4
    assert scans == [] and r.snapshots == 1
    for i in range(40):   # too many missed: one scan of the kept log
        await store.set(f"q{i}", "a")
    await r.refresh()
    assert r.partitions() == await store.partitions() and len(scans) == 1


async def test_group_commit_trims_the_log_ten_at_a_time():
    c = MemoryConsensus()
    store = _grouped(ConsensusStore(c, log_keep=20))
    await _storm(store, 20)      # 80 transitions, up to 20 per commit
    seqs = [int(v.key.rsplit("/", 1)[1]) for v in await c.scan("log/e/")]
    assert seqs == list(range(seqs[0], 81)) and 20 <= len(seqs) < 30
    assert max(store.group.transitions / store.group.commits, 0) > 4
