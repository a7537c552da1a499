"""Replica logic over MemoryConsensus: snapshot, log following, gaps,
truncation, garbage, index reset, backoff. Injected clock and sleep; no sleeps."""

from __future__ import annotations

import asyncio

import pytest

from gate import (
    ADMIT,
    Backoff,
    BackendError,
    ConfigError,
    ConsensusStore,
    MemoryConsensus,
    PartitionState,
    Reject,
    Replica,
)
from gate._consensus import put


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Swappable:
    """A Consensus whose backing store can be replaced (an agent restarted with
    no data: the index goes backwards) or made to fail (the agent is down)."""

    def __init__(self, inner: MemoryConsensus) -> None:
        self.inner = inner
        self.fail = 0  # fail this many calls
        self.fail_watch = 0  # fail this many blocking queries
        self.watch_calls = 0
        self.gate: asyncio.Event | None = None

    def _maybe_fail(self) -> None:
        if self.fail:
            self.fail -= 1
            raise BackendError("agent down")

    def __getattr__(self, name):
        attr = getattr(self.inner, name)

        async def call(*a, **kw):
            self._maybe_fail()
            return await attr(*a, **kw)
        return call

    async def watch(self, key, index, wait_s):
        self.watch_calls += 1
        if self.gate is not None:
            await self.gate.wait()
        self._maybe_fail()
        if self.fail_watch:
            self.fail_watch -= 1
            raise BackendError("agent down")
        return await self.inner.watch(key, index, wait_s)


async def seeded(n: int = 3, **kw) -> tuple[MemoryConsensus, ConsensusStore]:
    c = MemoryConsensus()
    s = ConsensusStore(c, **kw)
    for i in range(n):
        await s.set(f"t{i}", "a")
    return c, s


def same_as_store(r: Replica, parts: dict) -> bool:
    return r.partitions() == parts


async def test_snapshot_then_follows_log_entries():
    c, s = await seeded()
    clock = Clock()
    r = Replica(c, clock=clock)
    await r.start(follow=False)
    assert same_as_store(r, await s.partitions()) and r.snapshots == 1 and r.last_read == 100.0
    e = await s.begin("t1", "b")
    clock.t = 101.0
    await r.refresh()
    assert r.state("t1") == (PartitionState.draining("a", "b"), e)
    assert r.get("t1") == ("a", e) and r.current_epoch() == e
    assert r.admit_write("t1", e) is ADMIT
    assert isinstance(r.admit_write("t0", e), Reject)
    assert r.updates == 1 and r.snapshots == 1 and r.last_read == 101.0


async def test_gap_is_filled_from_the_log_without_a_snapshot():
    c, s = await seeded()
    r = Replica(c)
    await r.start(follow=False)
    await s.begin("t1", "b")
    await s.enter_cutover("t1")
    await s.set("t9", "c")
    await r.refresh()
    assert same_as_store(r, await s.partitions())
    assert r.updates == 3 and r.snapshots == 1 and r.seq == 6


async def test_log_truncated_past_a_lagging_replica_rereads_snapshot():
    c, s = await seeded(log_keep=3)
    r = Replica(c)
    await r.start(follow=False)
    for i in range(8):
        await s.set(f"t{i % 4}", "ab"[i % 2])
    await r.refresh()
    assert same_as_store(r, await s.partitions())
    assert r.snapshots == 2


async def test_subscribers_see_real_changes_only():
    c, s = await seeded()
    r = Replica(c)
    await r.start(follow=False)
    seen = []
    r.subscribe(lambda p, st, e: seen.append((p, st, e)))
    await r.refresh()
    assert seen == []
    e = await s.begin("t2", "b")
    await r.refresh()
    await r.refresh()
    assert seen == [("t2", PartitionState.draining("a", "b"), e)]


async def test_quiet_store_still_counts_as_a_fresh_read():
    c, _ = await seeded()
    clock = Clock()
    r = Replica(c, clock=clock)
    await r.start(follow=False)
    clock.t = 150.0
    await r.refresh()
    assert r.last_read == 150.0


async def test_garbage_partition_value_in_a_snapshot_stops_the_replica_until_it_parses(caplog):
    """DESIGN §4.3 fail closed: a snapshot with a partition value it cannot parse is not
    applied (that partition may be in cutover); every write is refused; it resumes once
    the value is rewritten."""
    c, s = await seeded(log_keep=2)
    clock = Clock()
    r = Replica(c, clock=clock)
    await r.start(follow=False)
    good, read_at, epoch = r.state("t1"), r.last_read, r.current_epoch()
    await c.txn([put("partitions/t1", b"{nonsense")])
    for i in range(4):  # push the log past the replica: next refresh re-reads the snapshot
        await s.set("t0", "ab"[i % 2])
    clock.t += 1
    await r.refresh()
    assert r.blocked is not None and r.blocked.key == "partitions/t1" and r.blocked.snapshot
    assert r.state("t1") == good and r.current_epoch() == epoch and r.last_read == read_at  # nothing applied
    assert r.admit_write("t0", r.get("t0").epoch).reason.value == "fail_closed"   # every partition
    await r.refresh()
    assert r.blocks == 1 and r.errors == 1            # one stop, counted once: not once per poll
    e = await s.set("t1", "c")                        # the value is rewritten: a fresh read parses
    await r.refresh()
    assert r.blocked is None and r.state("t1") == (PartitionState.active("c"), e)
    assert r.admit_write("t1", e) is ADMIT and r.last_read == clock.t
    said = [m for m in caplog.messages if "stopped at" in m or "resumed" in m]
    assert len(said) == 2 and "stopped at partitions/t1" in said[0] and "resumed" in said[1]  # per change, not poll


async def test_garbage_log_entry_stops_the_replica_there():
    c, s = await seeded()
    r = Replica(c)
    await r.start(follow=False)
    # A foreign writer puts junk where the next entry would go, and in the head.
    await c.txn([put("log/e/0000000000000004", b"junk"), put("log/head", b"junk")])
    await r.refresh()
    assert r.blocked is not None and r.blocked.seq == 4 and r.seq == 3
    e = await s.begin("t0", "b")  # the store carries on after the junk: the replica does not
    await r.refresh()
    await r.refresh()
    assert r.seq == 3 and r.state("t0")[0] == PartitionState.active("a") and r.current_epoch() < e
    assert r.admit_write("t1", r.get("t1").epoch).reason.value == "fail_closed"
    assert r.errors == 2 and r.blocks == 1  # the head and the entry, once each; one stop
    await c.truncate("log/e/", e)  # the log is rewritten without it: a snapshot decides
    await s.set("t2", "b")
    await r.refresh()
    assert r.blocked is None and r.state("t0") == (PartitionState.draining("a", "b"), e)


async def test_unparseable_cutover_entry_is_not_applied_past_nor_acked():
    """The finding (issue 26 #12): a cutover entry it cannot parse (a newer writer), then an
    entry it can. Skipping moved the table epoch past the cutover — a participant then
    acked it without draining and kept admitting at the draining epoch (INV-M1)."""
    c, s = await seeded()
    r = Replica(c)
    await r.start(follow=False)
    d = await s.begin("t0", "b")
    await r.refresh()
    newer = b'{"seq":5,"p":"t0","op":"enter_cutover","state":{"phase":"cutover","v":2}}'
    await c.txn([put("log/e/0000000000000005", newer), put("log/head", newer), put("partitions/t0", b'{"v":2}')])
    cut = c.index
    await s.set("t1", "b")   # a later entry it can parse
    await r.refresh()
    assert r.current_epoch() < cut          # what a participant acks: nothing at or past the cutover
    assert r.blocked is not None and r.blocked.seq == 5
    assert r.admit_write("t0", d).reason.value == "fail_closed"   # not ADMIT at the draining epoch


async def test_index_going_backwards_rereads_the_snapshot():
    c, s = await seeded(n=5)
    for _ in range(3):
        await s.set("t0", "b")
    sw = Swappable(c)
    r = Replica(sw, wait_s=0.01)
    await r.start(follow=False)
    old_index = r.index
    # The store comes back from an older backup: fewer writes, different placements.
    c2, s2 = await seeded(n=2)
    await s2.set("t1", "z")
    sw.inner = c2
    await r.refresh()
    assert r.resets == 1 and r.index < old_index
    assert same_as_store(r, await s2.partitions())  # t2..t4 are gone; lower epochs replaced
    assert r.current_epoch() == max(e for _, e in (await s2.partitions()).values())  # not the old generation's
    e = await s2.begin("t0", "b")
    await r.refresh()
    assert r.state("t0") == (PartitionState.draining("a", "b"), e)


async def test_wiped_store_keeps_last_table_and_recovers_when_reseeded():
    c, s = await seeded()
    sw = Swappable(c)
    clock = Clock()
    r = Replica(sw, clock=clock)
    await r.start(follow=False)
    before = r.partitions()
    sw.inner = MemoryConsensus()  # restarted dev agent: nothing at all, index ~1
    await sw.inner.txn([put("other/x", b"1")])
    clock.t = 200.0
    await r.refresh()
    assert r.partitions() == before and r.stale_store
    assert r.last_read == 100.0  # not fresh: the sidecar's lease will fail writes closed
    s2 = ConsensusStore(sw.inner)
    await s2.set("t0", "b")
    await r.refresh()
    assert not r.stale_store and r.last_read == 200.0
    assert r.partitions() == await s2.partitions()


async def test_nodes_from_snapshot_and_log():
    c, s = await seeded()
    await s.set_node("a", "http://127.0.0.1:9001")
    r = Replica(c)
    await r.start(follow=False)
    assert r.nodes == {"a": "http://127.0.0.1:9001"}
    await s.set_node("b", "http://127.0.0.1:9002")
    await r.refresh()
    assert r.nodes == {"a": "http://127.0.0.1:9001", "b": "http://127.0.0.1:9002"}


async def test_start_raises_when_store_unreachable():
    sw = Swappable(MemoryConsensus())
    sw.fail = 1
    r = Replica(sw)
    with pytest.raises(BackendError):
        await r.start()
    assert not r.running


async def test_refresh_is_single_flight():
    c, s = await seeded()
    sw = Swappable(c)
    r = Replica(sw)
    await r.start(follow=False)
    sw.gate = asyncio.Event()
    calls = [asyncio.ensure_future(r.refresh()) for _ in range(5)]
    await asyncio.sleep(0)
    sw.gate.set()
    await asyncio.gather(*calls)
    assert sw.watch_calls == 1


def test_backoff_doubles_up_to_cap_with_jitter():
    b = Backoff(0.1, 1.0, rng=lambda: 1.0)
    assert [round(b.next(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.next() == pytest.approx(0.1)
    low = Backoff(0.1, 1.0, rng=lambda: 0.0)
    assert [round(low.next(), 3) for _ in range(5)] == [0.05, 0.1, 0.2, 0.4, 0.5]
    with pytest.raises(ConfigError, match="backoff"):
        Backoff(0, 1)


def test_wait_is_validated():
    with pytest.raises(ConfigError, match="wait_s"):
        Replica(MemoryConsensus(), wait_s=0)


async def test_follow_loop_backs_off_on_failures_then_recovers():
    c, s = await seeded()
    sw = Swappable(c)
    delays: list[float] = []
    slept = asyncio.Event()

    async def fake_sleep(d: float) -> None:
        delays.append(d)
        if len(delays) == 4:
            slept.set()
        await asyncio.sleep(0)

    clock = Clock()
    r = Replica(sw, wait_s=5.0, clock=clock, sleep=fake_sleep, backoff=Backoff(0.1, 0.5, rng=lambda: 1.0))
    applied = asyncio.Event()
    r.subscribe(lambda p, st, e: applied.set())
    sw.fail_watch = 4
    await r.start()  # the snapshot reads fine; the next 4 blocking queries fail
    try:
        await asyncio.wait_for(slept.wait(), 5)
        clock.t = 300.0
        e = await s.begin("t1", "b")
        await asyncio.wait_for(applied.wait(), 5)
        assert delays == [0.1, 0.2, 0.4, 0.5]  # doubling, capped
        assert r.errors == 4 and r.state("t1")[1] == e and r.last_read == 300.0
        assert r.backoff.failures == 0  # reset after a good read
    finally:
        await r.stop()
        await r.stop()  # idempotent
    assert not r.running
