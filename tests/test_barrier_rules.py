"""DESIGN §5: each numbered rule, against real Consul, with the broken variant.

Three in-process sidecars ("pods": participant + write gate) per test, their
session and table-read connections through separate fault proxies. A write is
*lost* when a pod admits it at an epoch older than the cutover after the
barrier passed (it would commit on ``from`` after the delta was copied). Each
test runs the protocol as built (``ok``) and with one rule broken (``broken``):
the broken run must lose a write (or, for rule 3's liveness half, never pass
the barrier) — that is what shows the test can fail.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from gate._consul_consensus import open_consul
from gate._participant import Participant
from gate._replica import Replica
from gate._sessions import ConsulHTTP
from sidecar.control.barrier import Barrier, BarrierTimeout

from ._barrier_harness import Pod, lost_writes, wait_until

pytestmark = [pytest.mark.consul]

P = "p1"


class World:
    """A store with partition p1 draining a→b, and healthy pods."""

    async def setup(self, url: str, prefix: str, n_healthy: int = 2) -> "World":
        self.url, self.prefix = url, prefix
        self.consensus, self.store, _ = await open_consul(url, prefix)
        await self.store.set(P, "a")
        self.e0 = await self.store.begin(P, "b")
        self.consul = ConsulHTTP(url)
        self.barrier = Barrier(self.consul, prefix, poll_wait_s=0.5)
        self.pods: list[Pod] = []
        await asyncio.gather(*(self.add(f"ok{i}") for i in range(n_healthy)))
        return self

    async def add(self, pid: str, wait: bool = True, **kw) -> Pod:
        pod = Pod(self.url, self.prefix, pid, **kw)
        self.pods.append(pod)
        await pod.start(wait=wait)
        return pod

    async def cutover(self, deadline_s: float, barrier: Barrier | None = None, before_commit=None):
        """Returns (cutover epoch, passed wall time or None)."""
        b = barrier or self.barrier
        try:
            res = await b.cutover(self.store, P, deadline_s, before_commit=before_commit)
            return res.epoch, res.passed_wall
        except BarrierTimeout as exc:
            return exc.result.epoch, None

    async def close(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.pods))
        await self.consul.close()
        await self.consensus.close()


@pytest.fixture
async def world(consul_agent, kv_prefix):
    w = await World().setup(consul_agent.url, kv_prefix)
    try:
        yield w
    finally:
        await w.close()


async def test_barrier_passes_when_all_acked(world):
    pods = world.pods + [await world.add("p")]
    for pod in pods:
        assert pod.write(P).admitted
    epoch, passed = await world.cutover(5.0)
    assert passed is not None
    for pod in pods:
        assert await wait_until(lambda: pod.participant.published >= epoch, 2)   # its ack's answer arrived
        a = pod.write(P)
        assert not a.admitted and a.reason == "cutover"


async def test_ack_waits_for_inflight_writes(world):
    pod = await world.add("p")
    w = pod.write(P, keep_inflight=True)
    assert w.admitted
    task = asyncio.create_task(world.cutover(5.0))
    await asyncio.sleep(0.6)
    assert not task.done()                 # the barrier waits for the in-flight write
    assert pod.participant.published < pod.participant.current_epoch()
    pod.gate.done(P, w.epoch)
    epoch, passed = await task
    assert passed is not None
    assert await wait_until(lambda: pod.participant.published >= epoch, 2)


# ---- rule 1: register before you read -------------------------------------------------

class ReadFirst(Participant):
    """Broken rule 1: reads the table, then opens a session and registers."""

    async def _join(self) -> None:
        self._joined = False
        self.generation += 1
        self._rejoin, self._wake = asyncio.Event(), asyncio.Event()
        self._published = self._seen = type(self._published)(0)
        self._cutovers = {}
        await self._read_table()
        await self._open_session()
        await self._register()
        self._joined = True
        self._joined_once.set()
        self._wake.set()


@pytest.mark.parametrize("variant", ["ok", "broken"])
async def test_rule1_register_before_read(world, variant):
    read_done, release = asyncio.Event(), asyncio.Event()

    async def hook(pod, replica):
        pod.watch_proxy.cut()   # the starting sidecar's view stays where its read left it
        read_done.set()
        await release.wait()

    cls = Participant if variant == "ok" else ReadFirst
    late = await world.add("late", wait=False, cls=cls, replica_hook=hook)
    await asyncio.wait_for(read_done.wait(), 10)
    epoch, passed = await world.cutover(2.0)
    release.set()
    await wait_until(lambda: late.participant._joined, 5)
    late.write(P)
    lost = lost_writes(world.pods, P, epoch, passed)
    if variant == "ok":
        assert passed is None, "the barrier passed while a registered participant had not acked"
        assert not lost
    else:
        assert lost, "rule 1 broken but no write lost: the test cannot see the rule"


# ---- rule 2: the controller lists after its cutover commits ----------------------------

class ListFirst(Barrier):
    """Broken rule 2: lists the participants before committing the cutover."""

    async def cutover(self, store, partition, deadline_s, before_commit=None):
        listed, index = await self.list()
        if before_commit is not None:
            await before_commit()
        epoch = await store.enter_cutover(partition)
        return await self.wait(epoch, listed, index, time.monotonic(), deadline_s)


@pytest.mark.parametrize("variant", ["ok", "broken"])
async def test_rule2_list_after_commit(world, variant):
    late: list[Pod] = []

    async def join_late():   # a sidecar joins between the list and the commit
        pod = await world.add("late")
        pod.watch_proxy.cut()
        late.append(pod)

    barrier = world.barrier if variant == "ok" else ListFirst(world.consul, world.prefix, poll_wait_s=0.5)
    epoch, passed = await world.cutover(2.0, barrier, before_commit=join_late)
    late[0].write(P)
    lost = lost_writes(world.pods, P, epoch, passed)
    if variant == "ok":
        assert passed is None and not lost
    else:
        assert lost


# ---- rule 3: a stale table fails closed and leaves -------------------------------------

class StaleLeavesButAdmits(Participant):
    """Broken rule 3 (safety half): gives the session up but keeps admitting."""

    def check(self):
        r = super().check()
        return None if r in ("stale_table", "lease_expired") else r

    async def _serve(self, acker):
        while not self.table_stale():
            await asyncio.sleep(0.05)
        await self._consul.session_destroy(self.session)
        await asyncio.sleep(3600)


class StaleStays(Participant):
    """Broken rule 3 (liveness half): fails closed but keeps its session."""

    def table_stale(self) -> bool:
        return False


@pytest.mark.parametrize("variant", ["ok", "leaves-but-admits", "stays"])
async def test_rule3_stale_table_fails_closed_and_leaves(world, variant):
    cls = {"ok": Participant, "leaves-but-admits": StaleLeavesButAdmits, "stays": StaleStays}[variant]
    pod = await world.add("stale", cls=cls)
    pod.watch_proxy.cut()
    pod.clock.offset += pod.participant.lease_s   # its last table read is now a lease old
    await asyncio.sleep(0.3)
    epoch, passed = await world.cutover(pod.participant.lease_s)
    pod.write(P)
    lost = lost_writes(world.pods, P, epoch, passed)
    if variant == "ok":
        assert passed is not None, "the barrier waited on a participant whose table was stale"
        assert not lost
    elif variant == "leaves-but-admits":
        assert lost
    else:
        assert passed is None


# ---- rule 4: a lost session stops writes and starts over -------------------------------

class RejoinWithOldView(Participant):
    """Broken rule 4: after losing its session it registers again and keeps its old table."""

    async def _read_table(self) -> None:
        if self.replica is None:
            await super()._read_table()

    async def _leave(self) -> None:
        sid, self.session = self.session, None
        self._joined = False
        if sid is not None and not self._stopping:
            return
        await super()._leave()


@pytest.mark.parametrize("variant", ["ok", "broken"])
async def test_rule4_lost_session_starts_over(world, variant):
    cls = Participant if variant == "ok" else RejoinWithOldView
    pod = await world.add("lost", cls=cls, ttl_s=20)   # lease 10 s: the broken rejoin happens well inside it
    old = pod.participant.session
    pod.watch_proxy.cut()
    pod.session_proxy.cut()
    await world.consul.session_destroy(old)           # the session is lost (expired, destroyed)
    epoch, passed = await world.cutover(3.0)
    assert passed is not None
    pod.session_proxy.heal()
    assert await wait_until(lambda: pod.participant.session not in (None, old), 4.0)
    await asyncio.sleep(0.1)
    pod.write(P)
    lost = lost_writes(world.pods, P, epoch, passed)
    assert bool(lost) == (variant == "broken")


# ---- rule 5: session lease < TTL -------------------------------------------------------

class NoLease(Participant):
    """Broken rule 5: ignores how long ago its session was last renewed."""

    def check(self):
        r = super().check()
        return None if r == "lease_expired" else r


@pytest.mark.parametrize("variant", ["ok", "broken"])
async def test_rule5_lease_shorter_than_ttl(world, variant):
    pod = await world.add("cut", cls=Participant if variant == "ok" else NoLease)
    part = pod.participant
    pod.session_proxy.cut()                         # renewals stop getting through ...
    part._lease.renewed_at -= part.ttl_s - 0.5           # ... for TTL − 0.5 s (time-travel the renewal age)
    assert await wait_until(lambda: time.monotonic() - part.replica.last_read < 0.3, 5)   # table still fresh
    pod.watch_proxy.cut()                           # then the table reads stop too
    await world.consul.session_destroy(part.session or "")   # Consul may expire it from now on
    epoch, passed = await world.cutover(3.0)
    assert passed is not None
    pod.write(P)
    lost = lost_writes(world.pods, P, epoch, passed)
    assert bool(lost) == (variant == "broken")


# ---- rule 6: every process that admits writes is a participant -------------------------

@pytest.mark.parametrize("variant", ["ok", "broken"])
async def test_rule6_commit_point_admit_from_a_participant(world, variant):
    pod = await world.add("app")
    # the application's own commit-point gate: the sidecar's gate (a participant), or a
    # bare replica of its own (not a participant) reading through the same pod network
    bare = Replica(pod.consensus, wait_s=1.0)
    await bare.start()
    w = pod.write(P, keep_inflight=True)                # admitted by the sidecar, in flight
    assert w.admitted
    pod.watch_proxy.cut()
    pod.session_proxy.cut()                             # the pod is cut off from Consul
    pod.clock.offset += pod.participant.ttl_s           # ... for a TTL
    await world.consul.session_destroy(pod.participant.session or "")   # so Consul expired it
    epoch, passed = await world.cutover(3.0)
    assert passed is not None
    # the application reaches its commit point now and admits again
    if variant == "ok":
        ok = bool(pod.gate.admit(P, w.epoch))
    else:
        ok = bool(bare.admit_write(P, w.epoch))
    await bare.stop()
    if ok:
        pod.log.append(type(w)(pod.id, P, w.epoch, time.time(), True, "commit"))
    lost = lost_writes(world.pods, P, epoch, passed)
    assert bool(lost) == (variant == "broken")


async def test_rule4_session_ended_from_outside_is_seen_before_the_next_renewal(world):
    pod = await world.add("ext", ttl_s=20)             # renewals every 2.5 s
    old = pod.participant.session
    await world.consul.session_destroy(old)
    assert await wait_until(lambda: not pod.participant.writable(), 5)
    assert "gone" in pod.participant._reason          # the watch on sidecars/<id>, not a refused renewal
    assert await wait_until(lambda: pod.participant.writable() and pod.participant.session != old, 10)
