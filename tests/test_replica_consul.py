"""The consensus store and replica against real Consul: following, garbage,
truncation, agent restart (index goes backwards), leader SIGKILL on a cluster."""

from __future__ import annotations

import asyncio
import threading
import urllib.request

import pytest

from gate import BackendError, ConsensusStore, ConsulConsensus, PartitionState, Replica, open_consul

pytestmark = pytest.mark.consul


async def wait_until(cond, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``cond`` (integration tests only: a real agent answers in its own time)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def raw_put(url: str, key: str, value: bytes) -> None:
    req = urllib.request.Request(f"{url}/v1/kv/{key}", data=value, method="PUT")
    assert urllib.request.urlopen(req, timeout=5).read().strip() == b"true"


@pytest.fixture
async def trio(consul_agent, kv_prefix):
    c, store, replica = await open_consul(consul_agent.url, kv_prefix, wait_s=1.0)
    store.log_keep = 4
    try:
        yield c, store, replica
    finally:
        await replica.stop()
        await c.close()


async def test_replica_follows_transitions(trio):
    c, store, r = trio
    for i in range(20):
        await store.set(f"t{i}", "a")
    await store.set_node("a", "http://127.0.0.1:9001")
    await r.start()
    assert r.partitions() == await store.partitions() and r.nodes == {"a": "http://127.0.0.1:9001"}
    e = await store.begin("t3", "b")
    await wait_until(lambda: r.state("t3") == (PartitionState.draining("a", "b"), e), what="draining applied")
    e = await store.enter_cutover("t3")
    await wait_until(lambda: r.current_epoch() == e, what="cutover applied")
    await store.set_node("b", "http://127.0.0.1:9002")
    await wait_until(lambda: "b" in r.nodes, what="node applied")
    assert r.partitions() == await store.partitions()
    assert r.snapshots == 1 and r.errors == 0


async def test_garbage_under_the_prefix_stops_the_replica_until_a_fresh_read_parses(trio, consul_agent, kv_prefix):
    """DESIGN §4.3: fail closed, not skip — a garbage log entry stops the replica there (no apply,
    every write refused); a garbage partition value stops a snapshot; a rewrite lifts it."""
    c, store, r = trio
    for i in range(3):
        await store.set(f"t{i}", "a")
    await r.start()
    good = r.state("t1")
    raw_put(consul_agent.url, f"{kv_prefix}log/e/0000000000000004", b"[1,2,3]")
    raw_put(consul_agent.url, f"{kv_prefix}log/head", b"not json")
    await wait_until(lambda: r.blocked is not None, what="stopped at the garbage entry")
    assert r.blocked.seq == 4 and r.seq == 3
    e = await store.set("t2", "b")  # the store carries on past the garbage head; the replica does not
    await wait_until(lambda: r.index >= e, what="the next head seen")
    assert r.state("t2")[0] == PartitionState.active("a") and r.current_epoch() < e
    assert r.admit_write("t0", r.get("t0").epoch).reason.value == "fail_closed"
    await r.stop()  # the log moves past log_keep (the entry is trimmed): the next read is a snapshot
    raw_put(consul_agent.url, f"{kv_prefix}partitions/t1", b"\x00\x01garbage")
    for i in range(6):
        await store.set("t0", "ab"[i % 2])
    await r.refresh()
    assert r.blocked is not None and r.blocked.key == "partitions/t1" and r.state("t1") == good
    await store.set("t1", "a")   # rewritten: a fresh read parses
    await r.refresh()
    assert r.blocked is None and r.partitions() == await store.partitions()


async def test_log_truncated_past_a_lagging_replica(trio):
    c, store, r = trio
    for i in range(5):
        await store.set(f"t{i}", "a")
    await r.start(follow=False)  # a replica that is not keeping up
    for i in range(12):
        await store.set(f"t{i % 5}", "ab"[i % 2])
    assert len(await c.scan("log/e/")) == 4
    await r.refresh()
    assert r.snapshots == 2
    assert r.partitions() == await store.partitions()


async def test_agent_restart_index_goes_backwards(fresh_consul_agent):
    """A dev agent keeps KV in memory: a restart loses everything and its raft
    index starts over. The replica keeps serving its last table (not fresh, so
    a sidecar fails writes closed), then converges once the store is re-seeded."""
    agent = fresh_consul_agent
    c, store, r = await open_consul(agent.url, "eg/", wait_s=0.5)
    r.backoff.cap_s = 0.2
    try:
        for i in range(30):  # push the index well above a fresh agent's
            await store.set(f"t{i % 10}", "ab"[i % 2])
        await r.start()
        before, index_before = r.partitions(), r.index
        await asyncio.to_thread(agent.stop)
        await wait_until(lambda: r.errors >= 1, what="replica notices the outage")
        assert r.partitions() == before
        agent.start()
        await asyncio.to_thread(agent.wait_ready)
        await wait_until(lambda: r.stale_store, what="replica sees the wiped store")
        assert r.partitions() == before  # last good table still served
        assert r.resets >= 1 or r.index < index_before
        stale_read = r.last_read
        for i in range(10):  # re-seed (different placements, so convergence shows)
            await store.set(f"t{i}", "c")
        parts = await store.partitions()
        await wait_until(lambda: r.partitions() == parts, timeout=15, what="converged to re-seeded store")
        assert not r.stale_store and r.last_read > stale_read
        e = await store.begin("t0", "a")
        await wait_until(lambda: r.state("t0") == (PartitionState.draining("c", "a"), e), what="following again")
    finally:
        await r.stop()
        await c.close()


@pytest.mark.cluster
async def test_leader_sigkill_during_transitions(consul_cluster):
    leader = consul_cluster.leader_server()
    follower = next(s for s in consul_cluster.servers if s is not leader)
    c = ConsulConsensus(follower.url, "eg/", timeout_s=5)
    store = ConsensusStore(c)
    r = Replica(c, wait_s=1.0)
    r.backoff.cap_s = 0.3
    ok: dict[str, tuple[str, int]] = {}
    failed = 0
    try:
        await store.set("seed", "a")
        await r.start()
        i = 0
        killer = None
        while len(ok) < 60 and i < 400:
            p, node = f"s{i}", "ab"[i % 2]
            i += 1
            if len(ok) == 20 and killer is None:
                killer = threading.Thread(target=leader.kill)
                killer.start()
            try:
                ok[p] = (node, await store.set(p, node))
            except BackendError:
                failed += 1
                await asyncio.sleep(0.05)
        killer.join()
        assert len(ok) == 60, f"only {len(ok)} successes, {failed} failures"
        assert leader.proc.poll() is not None and consul_cluster.leader_server() is not leader
        print(f"leader killed after 20 transitions; {failed} transitions failed, replica errors {r.errors}")
        parts = await store.partitions()
        for p, (node, epoch) in ok.items():
            assert parts[p] == (PartitionState.active(node), epoch), p
            assert [h.epoch for h in await store.history(p)] == [epoch]
        await wait_until(lambda: r.partitions() == parts, timeout=20, what="replica converges after failover")
        assert r.running
    finally:
        await r.stop()
        await c.close()
