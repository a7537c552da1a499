"""One contract for every MigrationStore: the embedded table, the consensus store
over MemoryConsensus, and the consensus store over a real Consul agent."""

from __future__ import annotations

import asyncio

import pytest

from gate import (
    AlreadyMigrating,
    BackendError,
    ConfigError,
    ConsensusStore,
    ConsulConsensus,
    EmbeddedStore,
    MemoryConsensus,
    MigrationStore,
    NoOpMove,
    NotCutover,
    NotDraining,
    NotMigrating,
    PartitionState,
    Phase,
    UnknownPartition,
)
from gate._consensus import put


@pytest.fixture(params=["table", "memory", pytest.param("consul", marks=pytest.mark.consul)])
async def store(request):
    if request.param == "table":
        yield EmbeddedStore()
    elif request.param == "memory":
        yield ConsensusStore(MemoryConsensus())
    else:
        agent = request.getfixturevalue("consul_agent")
        prefix = request.getfixturevalue("kv_prefix")
        c = ConsulConsensus(agent.url, prefix)
        try:
            yield ConsensusStore(c)
        finally:
            await c.close()


async def test_is_a_migration_store(store):
    assert isinstance(store, MigrationStore)


async def test_set_then_state(store):
    e = await store.set("t1", "a")
    assert e > 0
    assert await store.state("t1") == (PartitionState.active("a"), e)
    assert await store.state("nope") is None
    assert await store.partitions() == {"t1": (PartitionState.active("a"), e)}


async def test_full_migration_epochs_strictly_increase(store):
    e0 = await store.set("t1", "a")
    e1 = await store.begin("t1", "b")
    assert await store.state("t1") == (PartitionState.draining("a", "b"), e1)
    e2 = await store.enter_cutover("t1")
    assert await store.state("t1") == (PartitionState.cutover("a", "b"), e2)
    e3 = await store.complete("t1")
    assert await store.state("t1") == (PartitionState.active("b"), e3)
    assert e0 < e1 < e2 < e3


@pytest.mark.parametrize("cut", [False, True])
async def test_abort_returns_to_source(store, cut):
    await store.set("t1", "a")
    await store.begin("t1", "b")
    if cut:
        await store.enter_cutover("t1")
    e = await store.abort("t1")
    assert await store.state("t1") == (PartitionState.active("a"), e)


async def test_only_the_moved_partition_changes_epoch(store):
    e1 = await store.set("t1", "a")
    await store.set("t2", "a")
    await store.begin("t2", "b")
    assert (await store.state("t1"))[1] == e1


async def test_set_overrides_a_migration(store):
    await store.set("t1", "a")
    await store.begin("t1", "b")
    e = await store.set("t1", "c")
    assert await store.state("t1") == (PartitionState.active("c"), e)


@pytest.mark.parametrize("setup, call, exc", [
    ([], ("begin", "t1", "b"), UnknownPartition),
    ([], ("enter_cutover", "t1"), UnknownPartition),
    ([], ("complete", "t1"), UnknownPartition),
    ([], ("abort", "t1"), UnknownPartition),
    ([("set", "t1", "a")], ("begin", "t1", "a"), NoOpMove),
    ([("set", "t1", "a")], ("enter_cutover", "t1"), NotMigrating),
    ([("set", "t1", "a")], ("complete", "t1"), NotMigrating),
    ([("set", "t1", "a")], ("abort", "t1"), NotMigrating),
    ([("set", "t1", "a"), ("begin", "t1", "b")], ("begin", "t1", "c"), AlreadyMigrating),
    ([("set", "t1", "a"), ("begin", "t1", "b")], ("complete", "t1"), NotCutover),
    ([("set", "t1", "a"), ("begin", "t1", "b"), ("enter_cutover", "t1")], ("enter_cutover", "t1"), NotDraining),
    ([("set", "t1", "a"), ("begin", "t1", "b"), ("enter_cutover", "t1")], ("begin", "t1", "c"), AlreadyMigrating),
])
async def test_refusals_change_nothing(store, setup, call, exc):
    for name, *args in setup:
        await getattr(store, name)(*args)
    before = await store.partitions()
    with pytest.raises(exc) as info:
        await getattr(store, call[0])(*call[1:])
    assert info.value.partition == "t1"
    assert await store.partitions() == before


async def test_bad_input_names_the_field(store):
    with pytest.raises(ConfigError, match="partition"):
        await store.set("", "a")
    with pytest.raises(ConfigError, match="node"):
        await store.set("t1", "bad node!")
    with pytest.raises(ConfigError, match="nodes.a"):
        await store.set_node("a", "ftp://x")


async def test_node_registry(store):
    await store.set_node("a", "http://127.0.0.1:9001")
    await store.set_node("b", "http://127.0.0.1:9002/")
    await store.set_node("a", "http://127.0.0.1:9011")
    assert await store.nodes() == {"a": "http://127.0.0.1:9011", "b": "http://127.0.0.1:9002"}


# ---- consensus-store specifics (memory + Consul) ----------------------------

@pytest.fixture(params=["memory", pytest.param("consul", marks=pytest.mark.consul)])
async def cstore(request):
    if request.param == "memory":
        c = MemoryConsensus()
    else:
        c = ConsulConsensus(request.getfixturevalue("consul_agent").url, request.getfixturevalue("kv_prefix"))
    try:
        yield ConsensusStore(c, actor="tester", log_keep=8)
    finally:
        await c.close()


async def test_epoch_is_the_commit_index(cstore):
    e = await cstore.set("t1", "a")
    cur = await cstore.consensus.head("partitions/t1")
    head = await cstore.consensus.head("log/head")
    assert cur.seqno == head.seqno == e  # state, log head and history: one commit


async def test_history_records_every_transition(cstore):
    epochs = [await cstore.set("t1", "a"), await cstore.begin("t1", "b"), await cstore.enter_cutover("t1"),
              await cstore.complete("t1")]
    await cstore.set("t2", "a")
    h = await cstore.history("t1")
    assert [x.epoch for x in h] == epochs
    assert [(x.op, x.phase, x.source, x.target) for x in h] == [
        ("set", "active", "a", None), ("begin_migration", "draining", "a", "b"),
        ("enter_cutover", "cutover", "a", "b"), ("complete_migration", "active", "b", None)]
    assert all(x.actor == "tester" and x.time > 0 for x in h)
    assert h[1].to_dict() == {"epoch": epochs[1], "op": "begin_migration", "phase": "draining", "from": "a",
                              "to": "b", "time": h[1].time, "actor": "tester"}
    assert await cstore.compact_history("t1", epochs[2]) == 2
    assert [x.epoch for x in await cstore.history("t1")] == epochs[2:]


async def test_log_is_bounded_and_gap_free(cstore):
    for i in range(20):
        await cstore.set("t1", "ab"[i % 2])
    entries = await cstore.consensus.scan("log/e/")
    assert len(entries) == 8  # log_keep
    seqs = [int(v.key.rsplit("/", 1)[1]) for v in entries]
    assert seqs == list(range(13, 21))
    cstore.log_keep = 3
    assert await cstore.compact_log() == 5
    assert len(await cstore.consensus.scan("log/e/")) == 3


async def test_racing_controllers_exactly_one_wins(cstore):
    """Six controllers (each its own client and connection) fire the same
    transition at once: exactly one wins each round, the others get the state
    machine's refusal, and history holds each winning transition exactly once."""
    c = cstore.consensus
    clients = [c] + [ConsulConsensus(c.url, c.prefix) if isinstance(c, ConsulConsensus) else c for _ in range(5)]
    ctls = [ConsensusStore(k, actor=f"ctl{i}") for i, k in enumerate(clients)]
    try:
        await cstore.set("t1", "a")
        rounds = [("begin", ("t1", "b"), AlreadyMigrating), ("enter_cutover", ("t1",), NotDraining),
                  ("complete", ("t1",), NotMigrating)]
        winners = []
        for name, args, loser in rounds:
            results = await asyncio.gather(*(getattr(s, name)(*args) for s in ctls), return_exceptions=True)
            wins = [(i, r) for i, r in enumerate(results) if not isinstance(r, BaseException)]
            assert len(wins) == 1, results
            assert all(isinstance(r, loser) for r in results if isinstance(r, BaseException)), results
            winners.append(wins[0])
        h = await cstore.history("t1")
        assert [x.op for x in h] == ["set", "begin_migration", "enter_cutover", "complete_migration"]
        assert [(x.actor, x.epoch) for x in h[1:]] == [(f"ctl{i}", e) for i, e in winners]
        assert len({x.seq for x in h}) == len(h)
        assert sum(s.conflicts for s in ctls) > 0
    finally:
        for k in clients[1:]:
            if k is not c:
                await k.close()


async def test_racing_on_different_partitions_all_commit(cstore):
    await asyncio.gather(*(cstore.set(f"p{i}", "a") for i in range(10)))
    parts = await cstore.partitions()
    assert sorted(parts) == [f"p{i}" for i in range(10)]
    assert len({e for _, e in parts.values()}) == 10  # every transition its own epoch
    entries = await cstore.consensus.scan("log/e/")
    assert [int(v.key.rsplit("/", 1)[1]) for v in entries] == list(range(3, 11))  # gap-free, trimmed to 8


async def test_unreadable_state_is_a_backend_error_and_set_overrides_it(cstore):
    await cstore.set("t1", "a")
    await cstore.consensus.txn([put("partitions/t1", b"{garbage")])
    with pytest.raises(BackendError, match="partitions/t1"):
        await cstore.begin("t1", "b")
    assert "t1" not in await cstore.partitions()
    e = await cstore.set("t1", "b")
    assert await cstore.state("t1") == (PartitionState.active("b"), e)


async def test_garbage_log_head_does_not_stop_transitions(cstore):
    await cstore.set("t1", "a")
    await cstore.consensus.txn([put("log/head", b"\xff not json")])
    await cstore.set("t1", "b")
    seqs = [int(v.key.rsplit("/", 1)[1]) for v in await cstore.consensus.scan("log/e/")]
    assert seqs == [1, 2]


@pytest.mark.consul
async def test_consul_transport_failure_is_backend_error():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    c = ConsulConsensus(f"http://127.0.0.1:{port}", "x/", timeout_s=2)
    try:
        for call in (c.head("k"), c.txn([]), c.read_prefix("p/"), c.watch("k", 5, 0.1), c.list_keys("p/")):
            with pytest.raises(BackendError):
                await call
        with pytest.raises(BackendError):
            await ConsensusStore(c).set("t1", "a")
    finally:
        await c.close()
    with pytest.raises(BackendError, match="closed"):
        await c.head("k")


async def test_consul_consensus_rejects_bad_config():
    with pytest.raises(ConfigError, match="consul"):
        ConsulConsensus("localhost:8500")
    with pytest.raises(ConfigError, match="prefix"):
        ConsulConsensus("http://127.0.0.1:8500", "noslash")


@pytest.mark.consul
async def test_consul_token_is_sent_on_txn(consul_agent, kv_prefix):
    """The token goes on every request, txn included (py-consul's txn.put drops it):
    a bogus token on a dev agent (ACLs off) is accepted, and the header is set."""
    c = ConsulConsensus(consul_agent.url, kv_prefix, token="s3cr3t")
    try:
        assert c._session.headers["X-Consul-Token"] == "s3cr3t"
        assert await ConsensusStore(c).set("t1", "a") > 0
    finally:
        await c.close()


async def test_phase_of_states_round_trip(cstore):
    await cstore.set("t1", "a")
    await cstore.begin("t1", "b")
    (state, _), = (await cstore.partitions()).values()
    assert state.phase is Phase.DRAINING
