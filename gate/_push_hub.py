"""``PushHub``: the controller's side of the push path (issue 31, DESIGN §5).

The barrier used to cost Consul about 4 ms of CPU per participant per cutover
(docs/fleet-scale.md): every replica's blocking query woke, every participant
wrote its ack (a raft write on three servers), every own-key watch and every
barrier watch woke. Here the controller follows ``log/head`` itself (one
blocking query) and pushes each answer — the raw committed value and its
Consul index, never a write of its own it has not read back — to every
participant over one gRPC stream each; participants ack "applied and drained
up to epoch" on the same stream. Consul keeps the log, the sessions
(membership and leases) and ``sidecars/<id>``, which a participant still
writes when its stream is down: the barrier reads that key for every
participant it cannot count by stream (gate/_ackwatch.py).

Counting an ack (the check ``tests/test_push_fallback.py`` and the model,
sidecar/control/protocol_push.py, break on purpose): an ack counts for a
barrier at E only when its epoch ≥ E, its fence is this hub's, and it came
under the session the barrier listed. A stale ack (the pre-barrier's, or one
from before a rejoin) never passes a later barrier.

The pushed heads are pre-serialised once and written to every stream as bytes
(the method's response serialiser is the identity): a push to N participants
costs N socket writes, not N protobuf encodings.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import grpc

from ._backoff import Backoff
from ._blocking import next_blocking_index
from ._consensus_store import HEAD
from ._exceptions import BackendError, ConfigError
from ._ids import key_segment
from ._reachability import failure_level
from .pb.epochgate.v1 import epochgate_pb2 as pb

log = logging.getLogger("epochgate.push")

FOLLOW_METHOD = "/epochgate.v1.Fleet/Follow"
MAX_STREAMS = 16384   # the hub's default cap on Fleet/Follow streams (a participant each)
_MAX_SESSION = 64     # a Consul session id is a 36-character UUID
_QUEUE_MAX = 256   # pushes a slow stream may lag before it is cut (it then reads Consul: no gap applied)

# Keepalive on Fleet/Follow (both ends): a stream whose peer vanished without a FIN (a frozen
# controller, a dropped NAT entry, a host gone) is noticed within KEEPALIVE_S + KEEPALIVE_TIMEOUT_S
# (8 s), the participant then acks in Consul and blocks on the log again, and the hub closes the
# participant's stream so its barrier reads that participant's key. A ping every 5 s per stream:
# 200 pings/s at 1,000 participants, answered in grpc's C core.
KEEPALIVE_S = 5.0
KEEPALIVE_TIMEOUT_S = 3.0
# What the server accepts: pings as often as every second, with or without a call or data, never
# counted as strikes (grpc's default is one per 5 minutes without data, then GOAWAY too_many_pings).
_MIN_PING_S = 1.0


def keepalive_options(keepalive_s: float = KEEPALIVE_S, timeout_s: float = KEEPALIVE_TIMEOUT_S) -> list[tuple[str, int]]:
    """gRPC channel/server arguments: ping every ``keepalive_s``, drop the transport when a
    ping is not answered within ``timeout_s``, keep pinging on a stream that carries no data."""
    return [("grpc.keepalive_time_ms", int(keepalive_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),   # 0: no limit (default 2, then pings stop)
            ("grpc.http2.min_time_between_pings_ms", int(keepalive_s * 1000)),
            # grpc ≥ 1.5x times a ping's answer by this one (default 1 min), not only the keepalive's
            ("grpc.http2.ping_timeout_ms", int(timeout_s * 1000))]


def server_options(keepalive_s: float = KEEPALIVE_S, timeout_s: float = KEEPALIVE_TIMEOUT_S) -> list[tuple[str, int]]:
    """Arguments for a gRPC server that serves ``Fleet/Follow`` (``PushHub.add_to``): its own
    keepalive, and a ping policy that accepts the participants' (``keepalive_options``)."""
    return keepalive_options(keepalive_s, timeout_s) + [
        ("grpc.http2.min_ping_interval_without_data_ms", int(min(_MIN_PING_S, keepalive_s) * 1000)),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", int(min(_MIN_PING_S, keepalive_s) * 1000)),
        ("grpc.http2.max_ping_strikes", 0)]   # 0: no limit


def _identity(b: bytes) -> bytes:
    return b


@dataclass(eq=False)
class _Stream:
    pid: str
    session: str
    queue: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(_QUEUE_MAX))
    epoch: int = 0          # highest epoch acked on this stream (under ``session``)
    open: bool = True


class PushHub:
    """Follows ``log/head`` and pushes it to every connected participant; keeps their acks.

    ``fence``: this controller's generation (e.g. the ModifyIndex of its
    ``controller/leader`` acquisition); strictly higher for a newer controller.
    ``add_to(server)`` registers the ``Fleet/Follow`` method on a grpc.aio server.
    """

    def __init__(self, consensus: Any, fence: int, *, wait_s: float = 5.0,
                 active: Callable[[], bool] = lambda: True, max_streams: int = MAX_STREAMS) -> None:
        if fence <= 0:
            raise ValueError(f"fence must be a positive integer, got {fence!r}")
        if not isinstance(max_streams, int) or max_streams < 1:
            raise ConfigError("max_streams", f"must be an integer ≥ 1, got {max_streams!r}")
        # Streams held at once: one per participant; past it a participant is refused
        # (RESOURCE_EXHAUSTED) and acks in Consul, as with no stream at all.
        self.max_streams = max_streams
        self.refused_streams = 0
        self.consensus = consensus
        self.fence = int(fence)
        self.wait_s = wait_s
        # Only the leading controller pushes (the controller passes its lock check): a
        # participant on a deposed or standby controller's stream would ack to nobody's
        # barrier, so such a hub closes its streams (within wait_s) and refuses new ones;
        # their participants ack in Consul until they reach the leader.
        self.active = active
        self.index = 0
        self._backoff = Backoff(cap_s=min(5.0, max(0.05, wait_s)))
        self._pushed_seqno: int | None = None   # the log seqno last pushed (a reset forgets it)
        self._head: bytes | None = None     # the last push, serialised
        self._streams: dict[str, _Stream] = {}
        self._waiters: dict[str, list[tuple[str, int, asyncio.Future[bool]]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.bytes_sent = 0       # message bytes + 5-byte gRPC frame prefix, per stream
        self.bytes_received = 0
        self.pushes = 0           # heads read from Consul and pushed
        self.acks = 0
        self.refused_acks = 0     # wrong fence or session: never counted

    # ---- wiring -------------------------------------------------------------

    server_options = staticmethod(server_options)   # pass to grpc.aio.server(options=…)

    def add_to(self, server: grpc.aio.Server) -> None:
        handler = grpc.stream_stream_rpc_method_handler(
            self._follow, request_deserializer=pb.FleetAck.FromString, response_serializer=_identity)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("epochgate.v1.Fleet", {"Follow": handler}),))

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="push-hub")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for s in list(self._streams.values()):
            self._close(s)

    # ---- the barrier's questions --------------------------------------------

    def connected(self, pid: str, session: str) -> bool:
        s = self._streams.get(pid)
        return s is not None and s.open and s.session == session

    def acked(self, pid: str, session: str, epoch: int) -> bool:
        s = self._streams.get(pid)
        return s is not None and s.session == session and s.epoch >= epoch

    def ack_future(self, pid: str, session: str, epoch: int) -> asyncio.Future[bool]:
        """True once ``pid`` acked ≥ ``epoch`` on a stream under ``session``;
        False when no such stream is open (the caller reads Consul instead)."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self.acked(pid, session, epoch):
            fut.set_result(True)
        elif not self.connected(pid, session):
            fut.set_result(False)
        else:
            self._waiters.setdefault(pid, []).append((session, epoch, fut))
        return fut

    # ---- following the log ----------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self.active():
                for st in list(self._streams.values()):
                    self._close(st)
            try:
                value, index = await self.consensus.watch(HEAD, self.index, self.wait_s)
            except BackendError as exc:
                # an absent agent was already said once on its own line (gate/_reachability.py);
                # capped, jittered retries, as every other watch
                log.log(failure_level(exc, logging.INFO), "push hub: log/head read failed: %s", exc)
                await asyncio.sleep(self._backoff.next())
                continue
            self._backoff.reset()
            if next_blocking_index(self.index, index) == 0:
                # the store went backwards (restore, wiped agent): participants re-read it
                # themselves (their own reads see the index drop); start pushing anew
                self.index, self._pushed_seqno = 0, None
                continue
            if value is None or index == self.index or value.seqno <= (self._pushed_seqno or 0):
                self.index = index
                continue
            self.index = index
            self._pushed_seqno = value.seqno
            self._broadcast(pb.FleetPush(fence=self.fence, index=value.seqno, head=value.value).SerializeToString())

    def _broadcast(self, msg: bytes) -> None:
        self._head = msg
        if not self.active():
            return
        self.pushes += 1
        for s in list(self._streams.values()):
            self._send(s, msg)

    def _send(self, s: _Stream, msg: bytes) -> None:
        try:
            s.queue.put_nowait(msg)
        except asyncio.QueueFull:
            log.warning("push hub: %s lags %d pushes; closing its stream (it reads Consul)", s.pid, _QUEUE_MAX)
            self._close(s)

    # ---- one participant's stream ----------------------------------------------

    async def _follow(self, requests: Any, context: grpc.aio.ServicerContext) -> None:
        stream: _Stream | None = None
        reader: asyncio.Task[None] | None = None
        try:
            hello = await anext(aiter(requests), None)
            if hello is None or not hello.participant or not hello.session:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first FleetAck must name participant and session")
                return
            try:   # the id names sidecars/<id> and keys this hub's tables: one bounded key segment
                key_segment(hello.participant, "participant")
                key_segment(hello.session, "session", max_len=_MAX_SESSION)
            except ConfigError as exc:
                self.refused_streams += 1
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"FleetAck: {exc}")
                return
            if not self.active():
                await context.abort(grpc.StatusCode.UNAVAILABLE, "not the leading controller: ack in Consul")
                return
            if hello.participant not in self._streams and len(self._streams) >= self.max_streams:
                self.refused_streams += 1
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"push hub holds its cap of {self.max_streams} streams: ack in Consul")
                return
            self.bytes_received += hello.ByteSize() + 5
            old = self._streams.get(hello.participant)
            if old is not None:
                self._close(old)
            stream = _Stream(hello.participant, hello.session)
            self._streams[stream.pid] = stream   # the hello is not an ack: it has no fence yet
            if self._head is not None:
                self._send(stream, self._head)   # where the log is now: a behind replica catches up
            reader = asyncio.create_task(self._read_acks(stream, requests))
            while stream.open:
                msg = await stream.queue.get()
                if msg is None:
                    break
                await context.write(msg)
                self.bytes_sent += len(msg) + 5
        finally:
            if reader is not None:
                reader.cancel()
            if stream is not None:
                self._close(stream)

    async def _read_acks(self, stream: _Stream, requests: Any) -> None:
        try:
            async for ack in requests:
                self.bytes_received += ack.ByteSize() + 5
                self._on_ack(stream, ack)
        finally:
            self._close(stream)

    def _on_ack(self, stream: _Stream, ack: pb.FleetAck) -> None:
        # The key check: an ack is this participant's word for *this* controller generation
        # and for the session it registered the stream under; anything else is never counted.
        # The stream is bound to (participant, session) by its hello: an ack naming neither is
        # the stream's; one naming another is refused.
        if (ack.fence != self.fence or (ack.session and ack.session != stream.session)
                or (ack.participant and ack.participant != stream.pid)):
            self.refused_acks += 1
            return
        self.acks += 1
        if ack.epoch > stream.epoch:
            stream.epoch = ack.epoch
        waiters = self._waiters.get(stream.pid)
        if waiters:
            keep = []
            for session, epoch, fut in waiters:
                if fut.done():
                    continue
                if session == stream.session and stream.epoch >= epoch:
                    fut.set_result(True)
                else:
                    keep.append((session, epoch, fut))
            self._waiters[stream.pid] = keep

    def _close(self, s: _Stream) -> None:
        if not s.open:
            return
        s.open = False
        try:
            s.queue.put_nowait(None)
        except asyncio.QueueFull:
            pass
        if self._streams.get(s.pid) is s:
            del self._streams[s.pid]
        for session, _epoch, fut in self._waiters.pop(s.pid, []):
            if not fut.done():
                fut.set_result(self.acked(s.pid, session, _epoch))
