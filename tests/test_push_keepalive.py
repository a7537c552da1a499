"""Keepalive on Fleet/Follow (issue 31; gate/_push_hub.py ``keepalive_options``/``server_options``).

A stream whose peer vanished without a FIN — here a loopback proxy that stops forwarding in both
directions and keeps both sockets open, as a frozen controller or a dropped NAT entry looks — is
noticed by both ends within keepalive + timeout: the participant's link goes down (it acks in
Consul and blocks on the log again) and the hub closes the participant's stream, so a barrier that
would otherwise wait 30 s for a stream ack reads the participant's key and passes.
"""

from __future__ import annotations

import asyncio

import pytest

import gate._push_hub as push_hub
from gate import ConsulConsensus, ConsulHTTP, PushHub
from gate._consensus_store import ConsensusStore
from sidecar.control.barrier import Barrier

from ._push_util import FreezingProxy, push_participant, serve_hub, stop_participants

pytestmark = [pytest.mark.consul]


async def _until(cond, what: str, timeout_s: float = 20.0) -> None:
    end = asyncio.get_running_loop().time() + timeout_s
    while not cond():
        assert asyncio.get_running_loop().time() < end, what
        await asyncio.sleep(0.01)


async def test_a_half_open_stream_is_noticed_and_the_barrier_falls_back(consul_agent, kv_prefix, monkeypatch):
    monkeypatch.setattr(push_hub, "KEEPALIVE_S", 0.5)          # the participant's pings
    monkeypatch.setattr(push_hub, "KEEPALIVE_TIMEOUT_S", 0.5)
    consensus = ConsulConsensus(consul_agent.url, kv_prefix)
    store = ConsensusStore(consensus)
    await store.set("p", "a")
    hub, server, target = await serve_hub(consensus, options=PushHub.server_options(0.5, 0.5))
    proxy = FreezingProxy(int(target.rsplit(":", 1)[1]))
    kv = ConsulHTTP(consul_agent.url)
    p = await push_participant(consul_agent.url, kv_prefix, "s0", await proxy.start())
    try:
        await _until(lambda: p.push_up and hub.connected("s0", p.session), "stream up")
        await store.begin("p", "b")
        proxy.freeze()   # from here on each end's peer is silent, no FIN, no RST
        barrier = Barrier(kv, kv_prefix, hub=hub, fallback_after_s=30.0)   # only a closed stream falls back
        res = await barrier.cutover(store, "p", 20.0)
        assert res.acked == {"s0"} and not res.dropped
        assert not hub.connected("s0", p.session)          # the hub's keepalive closed it
        await _until(lambda: not p.push_up, "the participant noticed its half-open stream")
        entry = await kv.get(f"{kv_prefix}sidecars/s0")
        assert entry is not None and int(entry.value) >= res.epoch   # its ack went to Consul
    finally:
        await stop_participants([p])
        await proxy.close()
        await hub.stop()
        await server.stop(None)
        await kv.close()
        await consensus.close()


async def test_an_idle_stream_pinged_often_is_not_sent_away(consul_agent, kv_prefix, monkeypatch):
    """grpc's default server policy answers more than one ping per 5 minutes without data with
    GOAWAY too_many_pings (after two strikes): ``server_options`` accepts the participants'."""
    monkeypatch.setattr(push_hub, "KEEPALIVE_S", 0.2)
    monkeypatch.setattr(push_hub, "KEEPALIVE_TIMEOUT_S", 1.0)
    consensus = ConsulConsensus(consul_agent.url, kv_prefix)
    await ConsensusStore(consensus).set("p", "a")
    hub, server, target = await serve_hub(consensus, options=PushHub.server_options(30.0, 1.0))
    proxy = FreezingProxy(int(target.rsplit(":", 1)[1]))
    p = await push_participant(consul_agent.url, kv_prefix, "s0", await proxy.start())
    try:
        await _until(lambda: p.push_up and hub.connected("s0", p.session), "stream up")
        stream, start = hub._streams["s0"], proxy.bytes_up
        # an HTTP/2 PING frame is 17 bytes: wait for 10 pings' worth from the participant, no data
        await _until(lambda: proxy.bytes_up - start >= 10 * 17, "the participant's pings")
        assert p.push_up and hub._streams.get("s0") is stream, "the stream was sent away"
    finally:
        await stop_participants([p])
        await proxy.close()
        await hub.stop()
        await server.stop(None)
        await consensus.close()
