"""The push path of the barrier (issue 31; gate/_push_hub.py, gate/_push_link.py).

Real Consul, real participants (own sessions, replicas and push streams), a
real hub on a loopback gRPC port. A cutover's barrier passes on stream acks
without a single ack written to Consul; with the push channel killed
mid-cutover it passes through the fallback (participants ack in
``sidecars/<id>``, the barrier reads it); and an ack counts only at the
listed session, the hub's fence and an epoch ≥ E.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from gate import ConsulConsensus, ConsulHTTP, PushHub
from gate._consensus_store import ConsensusStore
from gate.pb.epochgate.v1 import epochgate_pb2 as pb
from sidecar.control.barrier import Barrier

from ._push_util import push_participant, serve_hub, stop_participants

pytestmark = [pytest.mark.consul]


async def _until(cond, timeout_s: float = 20.0) -> None:
    end = asyncio.get_running_loop().time() + timeout_s
    while not cond():
        assert asyncio.get_running_loop().time() < end, "condition not reached"
        await asyncio.sleep(0.01)


async def _sidecar_epochs(kv: ConsulHTTP, prefix: str) -> dict[str, int]:
    return {e.key.rsplit("/", 1)[1]: int(e.value or b"0") for e in (await kv.list(f"{prefix}sidecars/"))[0]}


async def _close(ps, hub, server, kv, consensus) -> None:
    await stop_participants(ps)
    await hub.stop()
    await server.stop(None)
    await kv.close()
    await consensus.close()


async def test_barrier_passes_on_stream_acks_without_consul_acks(consul_agent, kv_prefix):
    consensus = ConsulConsensus(consul_agent.url, kv_prefix)
    store = ConsensusStore(consensus)
    await store.set("p", "a")
    hub, server, target = await serve_hub(consensus)
    kv = ConsulHTTP(consul_agent.url)
    ps = [await push_participant(consul_agent.url, kv_prefix, f"s{i}", target) for i in range(4)]
    try:
        await _until(lambda: all(p._link is not None and p._link.up for p in ps))
        await store.begin("p", "b")
        barrier = Barrier(kv, kv_prefix, hub=hub)
        res = await barrier.cutover(store, "p", 20.0)
        assert res.acked == {f"s{i}" for i in range(4)} and not res.dropped
        assert all(e < res.epoch for e in (await _sidecar_epochs(kv, kv_prefix)).values())   # none by Consul
        assert all(p.replica.state("p")[0].phase.name == "CUTOVER" for p in ps)
        assert hub.acks >= 4
    finally:
        await _close(ps, hub, server, kv, consensus)


class WithholdingHub(PushHub):
    """Forwards nothing once ``hold`` is set: the cutover's push never leaves."""

    hold = False

    def _broadcast(self, msg: bytes) -> None:
        if not self.hold:
            super()._broadcast(msg)


async def test_push_channel_killed_mid_cutover_fallback_completes_the_barrier(consul_agent, kv_prefix):
    consensus = ConsulConsensus(consul_agent.url, kv_prefix)
    store = ConsensusStore(consensus)
    await store.set("p", "a")
    hub, server, target = await serve_hub(consensus, hub_cls=WithholdingHub)
    kv = ConsulHTTP(consul_agent.url)
    ps = [await push_participant(consul_agent.url, kv_prefix, f"s{i}", target) for i in range(3)]
    try:
        await _until(lambda: all(p._link is not None and p._link.up for p in ps))
        await store.begin("p", "b")
        hub.hold = True
        barrier = Barrier(kv, kv_prefix, hub=hub, fallback_after_s=30.0)   # only a dead stream falls back
        committed = asyncio.Event()
        orig = store.enter_cutover

        async def enter_cutover(p):
            e = await orig(p)
            committed.set()
            return e
        store.enter_cutover = enter_cutover

        async def kill_channel():
            await committed.wait()
            await server.stop(None)   # every stream dies with the cutover unpushed

        killer = asyncio.ensure_future(kill_channel())
        res = await barrier.cutover(store, "p", 20.0)
        await killer
        assert res.acked == {"s0", "s1", "s2"} and not res.dropped
        assert all(e >= res.epoch for e in (await _sidecar_epochs(kv, kv_prefix)).values())   # by Consul
        assert hub.acks == 0 or all(not p._link.up for p in ps)
    finally:
        await _close(ps, hub, server, kv, consensus)


async def _raw_stream(target: str):
    ch = grpc.aio.insecure_channel(target)
    call = ch.stream_stream("/epochgate.v1.Fleet/Follow", request_serializer=pb.FleetAck.SerializeToString,
                            response_deserializer=pb.FleetPush.FromString)()
    return ch, call


async def test_an_ack_counts_only_at_epoch_session_and_fence(consul_agent, kv_prefix):
    """The guard: ``PushHub`` counts a stream ack for a barrier at E only when epoch ≥ E,
    under the listed session and this hub's fence. A stale ack (the pre-barrier's, or a
    deposed controller's generation, or an old session's) must never pass the barrier."""
    consensus = ConsulConsensus(consul_agent.url, kv_prefix)
    hub, server, target = await serve_hub(consensus, fence=7)
    ch, call = await _raw_stream(target)
    try:
        await call.write(pb.FleetAck(participant="x", session="S1"))
        await _until(lambda: hub.connected("x", "S1"))
        fut = hub.ack_future("x", "S1", 100)
        await call.write(pb.FleetAck(participant="x", session="S1", epoch=99, fence=7))   # stale epoch
        await _until(lambda: hub.acks == 1)
        await call.write(pb.FleetAck(participant="x", session="S0", epoch=100, fence=7))  # another session
        await call.write(pb.FleetAck(participant="x", session="S1", epoch=100, fence=6))  # a deposed generation
        await _until(lambda: hub.refused_acks == 2)
        assert not fut.done(), "a stale ack passed the barrier"
        await call.write(pb.FleetAck(participant="x", session="S1", epoch=101, fence=7))
        assert await asyncio.wait_for(fut, 10) is True
        # the stream closes: a barrier waiting on it turns to Consul (False), never passes
        fut2 = hub.ack_future("x", "S1", 500)
        call.cancel()
        assert await asyncio.wait_for(fut2, 10) is False
    finally:
        await ch.close()
        await hub.stop()
        await server.stop(None)
        await consensus.close()


async def test_a_deposed_controllers_push_is_refused(consul_agent, kv_prefix):
    consensus = ConsulConsensus(consul_agent.url, kv_prefix)
    store = ConsensusStore(consensus)
    await store.set("p", "a")
    new_hub, new_server, new_target = await serve_hub(consensus, fence=2)
    old_hub, old_server, old_target = await serve_hub(consensus, fence=1)
    ps = [await push_participant(consul_agent.url, kv_prefix, "s0", new_target)]
    link = ps[0]._link
    try:
        await _until(lambda: link.up and link.fence == 2)
        link.target = old_target                 # its next dial reaches the deposed controller
        await new_server.stop(None)
        await _until(lambda: link.refused >= 1)
        assert link.fence == 2 and not link.up
    finally:
        await stop_participants(ps)
        for h, s in ((new_hub, new_server), (old_hub, old_server)):
            await h.stop()
            await s.stop(None)
        await consensus.close()


async def test_the_stream_carries_the_control_token(consul_agent, kv_prefix):
    """A controller whose control API requires a token (DESIGN §9) serves Fleet/Follow behind
    it: a participant with the token links, one without is refused and acks in Consul."""
    from sidecar.api.auth import TokenInterceptor

    consensus = ConsulConsensus(consul_agent.url, kv_prefix)
    store = ConsensusStore(consensus)
    await store.set("p", "a")
    hub = PushHub(consensus, 1, wait_s=2.0)
    server = grpc.aio.server(interceptors=[TokenInterceptor("s3cret")])
    hub.add_to(server)
    target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    await hub.start()
    ps = []
    try:
        ps.append(await push_participant(consul_agent.url, kv_prefix, "with", target, push_token="s3cret"))
        ps.append(await push_participant(consul_agent.url, kv_prefix, "without", target))
        await _until(lambda: ps[0].push_up)
        await store.begin("p", "b")   # a push: the token-less one never gets it by stream
        await _until(lambda: ps[1].replica.state("p")[0].phase.name == "DRAINING")
        assert ps[0].push_up and not ps[1].push_up and ps[1]._link.pushes == 0
    finally:
        await stop_participants(ps)
        await hub.stop()
        await server.stop(None)
        await consensus.close()


async def test_a_hub_that_stops_leading_closes_its_streams(consul_agent, kv_prefix):
    """Only the leading controller pushes: a participant on a standby's or a deposed
    controller's stream would ack to no barrier. Once ``active()`` is false the hub closes
    its streams (within its wait) and refuses new ones; the participants ack in Consul."""
    consensus = ConsulConsensus(consul_agent.url, kv_prefix)
    store = ConsensusStore(consensus)
    await store.set("p", "a")
    leading = [True]
    hub, server, target = await serve_hub(consensus, wait_s=0.5)
    hub.active = lambda: leading[0]
    kv = ConsulHTTP(consul_agent.url)
    ps = [await push_participant(consul_agent.url, kv_prefix, "s0", target)]
    try:
        await _until(lambda: ps[0].push_up)
        leading[0] = False
        await _until(lambda: not ps[0].push_up and not hub.connected("s0", ps[0].session))
        await store.begin("p", "b")
        res = await Barrier(kv, kv_prefix, hub=hub).cutover(store, "p", 20.0)
        assert res.acked == {"s0"}   # by its key in Consul
        assert not ps[0].push_up     # refused again on every redial
    finally:
        await _close(ps, hub, server, kv, consensus)
