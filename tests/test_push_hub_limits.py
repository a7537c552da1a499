"""The hub's bounds on Fleet/Follow (issue 31, gate/_push_hub.py): at most ``max_streams``
streams at once (a participant past the cap is refused RESOURCE_EXHAUSTED and acks in Consul),
and a participant id or session that is not one bounded key segment is refused
INVALID_ARGUMENT naming the field — a clear status, the hub serving on.

The hub follows a stand-in store that never answers (pure stream handling, no Consul).
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from gate import PushHub
from gate.pb.epochgate.v1 import epochgate_pb2 as pb

from ._push_util import serve_hub

SESSION = "0b6f1b6e-9a6c-4bde-8f0e-2a1f5c3d4e5f"


class SilentStore:
    async def watch(self, key, index, wait_s):
        await asyncio.Event().wait()


async def _open(target: str, pid: str, session: str = SESSION):
    ch = grpc.aio.insecure_channel(target)
    call = ch.stream_stream("/epochgate.v1.Fleet/Follow", request_serializer=pb.FleetAck.SerializeToString,
                            response_deserializer=pb.FleetPush.FromString)()
    await call.write(pb.FleetAck(participant=pid, session=session))
    return ch, call


async def _status(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async with asyncio.timeout(10):   # an accepted stream would wait for pushes: fail, not hang
            await call.read()
    return err.value.code(), err.value.details()


async def _until(cond, what: str, timeout_s: float = 10.0) -> None:
    end = asyncio.get_running_loop().time() + timeout_s
    while not cond():
        assert asyncio.get_running_loop().time() < end, what
        await asyncio.sleep(0.01)


class Capped(PushHub):
    def __init__(self, consensus, fence, **kw):
        super().__init__(consensus, fence, max_streams=2, **kw)


async def test_streams_past_the_cap_are_refused_and_a_reconnect_is_not():
    hub, server, target = await serve_hub(SilentStore(), hub_cls=Capped)
    chans = []
    try:
        for pid in ("a", "b"):
            ch, call = await _open(target, pid)
            chans.append(ch)
        await _until(lambda: hub.connected("a", SESSION) and hub.connected("b", SESSION), "two streams")
        ch, third = await _open(target, "c")
        chans.append(ch)
        code, details = await _status(third)
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and "cap of 2" in details
        assert not hub.connected("c", SESSION) and hub.refused_streams == 1
        ch, again = await _open(target, "a", "1b6f1b6e-9a6c-4bde-8f0e-2a1f5c3d4e5f")   # a's new session: replaces
        chans.append(ch)
        await _until(lambda: hub.connected("a", "1b6f1b6e-9a6c-4bde-8f0e-2a1f5c3d4e5f"), "a's new stream")
        assert hub.refused_streams == 1 and len(hub._streams) == 2
    finally:
        for ch in chans:
            await ch.close()
        await hub.stop()
        await server.stop(None)


@pytest.mark.parametrize("pid, session, field", [
    ("x" * 1000, SESSION, "participant"),
    ("a/b", SESSION, "participant"),
    ("..", SESSION, "participant"),
    ("ok", "s" * 65, "session"),
    ("ok", "bad\nsession", "session"),
], ids=["long-id", "slash", "dot-dot", "long-session", "control-char"])
async def test_a_bad_participant_id_or_session_is_refused_by_name(pid, session, field):
    hub, server, target = await serve_hub(SilentStore())
    ch, call = await _open(target, pid, session)
    try:
        code, details = await _status(call)
        assert code is grpc.StatusCode.INVALID_ARGUMENT and field in details, details
        assert hub._streams == {} and hub.refused_streams == 1
        ch2, good = await _open(target, "fine")   # the hub serves on
        await _until(lambda: hub.connected("fine", SESSION), "a good stream after a refusal")
        await ch2.close()
    finally:
        await ch.close()
        await hub.stop()
        await server.stop(None)
