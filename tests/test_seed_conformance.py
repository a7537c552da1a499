"""Seed conformance (issue 22): ``get(p)`` is ``Option<PlacementAt>`` on every store and
replica (``None`` for an unknown partition; ``get_or_raise`` keeps the raising form), and
a Consensus ``truncate`` / ``compact_history`` refuses an empty key and a seqno past the
newest entry instead of silently wiping the audit trail, and reports what it deleted."""

from __future__ import annotations

import pytest

from gate import ConfigError, ConsensusStore, ConsulConsensus, MemoryConsensus, PlacementTable, Replica, UnknownPartition
from gate._consensus import put


def test_table_get_is_an_option():
    t = PlacementTable({"t1": "a"})
    assert t.get("nope") is None and t.lookup("nope") is None
    assert t.get("t1") == ("a", 1) == t.get_or_raise("t1")
    with pytest.raises(UnknownPartition):
        t.get_or_raise("nope")


async def test_replica_get_is_an_option():
    c = MemoryConsensus()
    store = ConsensusStore(c)
    e = await store.set("t1", "a")
    r = Replica(c, wait_s=0.05)
    assert r.get("t1") is None          # before the first read: nothing known, no exception
    await r.start()
    try:
        assert r.get("t1") == ("a", e) and r.get("nope") is None
        with pytest.raises(UnknownPartition):
            r.get_or_raise("nope")
    finally:
        await r.stop()


def test_participant_reads_are_an_option():
    from gate._current_replica import CurrentReplica

    class Reads(CurrentReplica):
        replica = None
        _subs: list = []

    r = Reads()
    assert r.get("t1") is None
    with pytest.raises(UnknownPartition):
        r.get_or_raise("t1")
    r.replica = PlacementTable({"t1": "a"})
    assert r.get("t1") == ("a", 1) and r.get("t2") is None


@pytest.fixture(params=["memory", pytest.param("consul", marks=pytest.mark.consul)])
async def consensus(request):
    if request.param == "memory":
        c = MemoryConsensus()
    else:
        c = ConsulConsensus(request.getfixturevalue("consul_agent").url, request.getfixturevalue("kv_prefix"))
    try:
        yield c
    finally:
        await c.close()


async def test_truncate_refuses_what_would_wipe_everything(consensus):
    seqs = [await consensus.txn([put(f"h/x/{i}", b"v")]) for i in range(4)]
    with pytest.raises(ConfigError, match="key"):
        await consensus.truncate("", seqs[-1])
    with pytest.raises(ConfigError, match="seqno"):
        await consensus.truncate("h/x/", seqs[-1] + 1)
    assert len(await consensus.scan("h/x/")) == 4          # nothing deleted by a refusal
    assert await consensus.truncate("h/x/", seqs[-1]) == 3  # up to the newest: it survives
    assert [v.seqno for v in await consensus.scan("h/x/")] == seqs[-1:]
    assert await consensus.truncate("h/none/", 10**9) == 0  # nothing under the key: nothing to refuse


async def test_compact_history_refuses_a_future_epoch_and_counts(consensus):
    store = ConsensusStore(consensus)
    epochs = [await store.set("t1", "ab"[i % 2]) for i in range(3)]
    later = await store.set("t2", "a")                     # the table moved on; t1's history did not
    with pytest.raises(ConfigError, match="seqno"):
        await store.compact_history("t1", later)
    assert await store.compact_history("t1", epochs[-1]) == 2
    assert [int(h.epoch) for h in await store.history("t1")] == epochs[-1:]


async def test_consul_truncate_counts_only_what_it_deleted(consul_agent, kv_prefix):
    """An entry rewritten between the read and the delete (its delete-cas fails) is kept
    and not counted — the whole-chunk txn fails, the rest are deleted one by one."""
    c = ConsulConsensus(consul_agent.url, kv_prefix)
    try:
        seqs = [await c.txn([put(f"h/y/{i}", b"v")]) for i in range(3)]
        newest = await c.txn([put("h/y/9", b"v")])
        items, _ = await c.read_prefix("h/y/")
        real_txn = c.txn
        rewritten = False

        async def txn_rewriting_first(ops):   # someone rewrites h/y/0 right before our delete
            nonlocal rewritten
            if not rewritten:
                rewritten = True
                await real_txn([put("h/y/0", b"new")])
            return await real_txn(ops)

        c.txn = txn_rewriting_first
        assert await c.truncate("h/y/", newest) == 2
        c.txn = real_txn
        assert sorted(v.key for v in await c.scan("h/y/")) == ["h/y/0", "h/y/9"]
        assert len(seqs) == 3 and len(items) == 4
    finally:
        await c.close()
