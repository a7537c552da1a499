"""``PushLink``: a participant's end of the push path (issue 31; the hub is gate/_push_hub.py).

One per join (session): it dials the controller, says who it is (participant,
session), then applies each pushed ``log/head`` through the replica
(``Replica.on_push``) and acks over the same stream. The rules it keeps:

* **only in log order**: the replica applies a push only when it continues
  the log it has applied (its first sequence number ≤ the last applied + 1);
  a gap, an unparseable head, a stopped replica: nothing is applied and the
  replica reads the log from Consul now (``Replica.kick``). An ack is always
  the participant's applied-and-drained epoch, so it never passes an entry
  that was not applied;
* **fenced**: a push whose fence is below the highest this link has seen
  comes from a deposed controller and is refused (the stream is dropped; the
  link dials again). Stale or duplicated indexes are ignored by the replica;
* **down means Consul**: while the stream is not up the participant acks
  through ``sidecars/<id>`` as before, and when it goes down it writes there
  at once what it acked by stream, so the barrier's fallback read sees it.

The replica's table freshness (rule 3) still comes from its own Consul reads:
while the link is up it reads ``log/head`` without blocking every lease/3
instead of holding a blocking query that every commit wakes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

import grpc

from ._backoff import Backoff
from ._consensus import Versioned
from ._consensus_store import HEAD
from . import _push_hub
from ._push_hub import FOLLOW_METHOD, keepalive_options
from .pb.epochgate.v1 import epochgate_pb2 as pb

log = logging.getLogger("epochgate.push")


class PushLink:
    """Holds the stream for one participant generation. ``on_change(up)`` is called
    when the link goes up or down (the participant re-publishes to Consul on down)."""

    def __init__(self, target: str, participant: str, session: str, replica: Any, *,
                 acked: Callable[[], int], on_change: Callable[[bool], None], token: str | None = None) -> None:
        self.target = target
        # the controller's control API token (DESIGN §9), when it requires one
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.participant = participant
        self.session = session
        self.replica = replica
        self._acked = acked
        self._on_change = on_change
        self.fence = 0          # highest fence seen (monotonic for the link's life)
        self.up = False
        self.pushes = 0
        self.refused = 0        # pushes from a deposed controller
        self.gaps = 0           # pushes that did not continue the log: read from Consul
        self._call: Any = None
        self._task: asyncio.Task[None] | None = None
        self._want = 0                # the ack to send (highest epoch acked)
        self._dirty = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"push-{self.participant}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._set_up(False)

    def ack(self, epoch: int) -> bool:
        """Queue an ack if the stream is up (False: publish to Consul instead). Only the
        newest matters (an ack is a high-water mark): the writer sends the latest."""
        if not self.up or self._call is None:
            return False
        self._want = max(self._want, int(epoch))
        self._dirty.set()
        return True

    async def _writer(self, call: Any) -> None:
        """The stream's only writer (grpc.aio allows one write at a time)."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            # participant and session went in the hello and bind the stream: an ack is its
            # epoch and fence (~8 B instead of ~56: the per-participant strings are not re-sent)
            await call.write(pb.FleetAck(epoch=self._want, fence=self.fence))

    def _set_up(self, up: bool) -> None:
        if up != self.up:
            self.up = up
            self._on_change(up)

    async def _run(self) -> None:
        backoff = Backoff(base_s=0.05, cap_s=2.0)   # redial: the project's one jittered backoff
        while True:
            try:
                # keepalive: a half-open stream (the controller frozen or gone without a FIN)
                # ends within KEEPALIVE_S + KEEPALIVE_TIMEOUT_S, and the participant acks in Consul
                options = keepalive_options(_push_hub.KEEPALIVE_S, _push_hub.KEEPALIVE_TIMEOUT_S)
                # its own TCP connection: grpc otherwise shares one among the channels of a process
                # to the same target (participants of one process — a bench worker — on one socket)
                options.append(("grpc.use_local_subchannel_pool", 1))
                async with grpc.aio.insecure_channel(self.target, options=options) as channel:
                    await self._follow(channel)
                    backoff.reset()
            except (grpc.RpcError, OSError, asyncio.InvalidStateError) as exc:
                log.info("participant %s: push stream to %s ended: %s", self.participant, self.target, exc)
            finally:
                self._call = None
                self._set_up(False)
            await asyncio.sleep(backoff.next())

    async def _follow(self, channel: grpc.aio.Channel) -> None:
        follow = channel.stream_stream(FOLLOW_METHOD, request_serializer=pb.FleetAck.SerializeToString,
                                       response_deserializer=pb.FleetPush.FromString)
        call = follow(metadata=self._metadata)
        self._call = call
        await call.write(pb.FleetAck(participant=self.participant, session=self.session, epoch=0, fence=0))
        writer = asyncio.create_task(self._writer(call))
        try:
            while True:
                read = asyncio.ensure_future(call.read())
                await asyncio.wait({read, writer}, return_when=asyncio.FIRST_COMPLETED)
                if not read.done():   # the writer failed: the stream is broken
                    read.cancel()
                    return
                push = read.result()
                if push is grpc.aio.EOF:
                    return
                if push.fence < self.fence:
                    self.refused += 1   # a deposed controller: drop its stream, dial again
                    log.warning("participant %s: refused a push of fence %d (seen %d)", self.participant,
                                push.fence, self.fence)
                    call.cancel()
                    return
                resend = push.fence > self.fence   # a newer generation has not heard our ack yet
                if resend:
                    self.fence = push.fence
                self.pushes += 1
                applied = await self.replica.on_push(Versioned(HEAD, push.head, push.index))
                if not applied:
                    self.gaps += 1
                    self.replica.kick()   # read the log from Consul now
                if resend or not self.up:
                    self._want = max(self._want, int(self._acked()))
                    self._set_up(True)
                    self._dirty.set()
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            if not writer.cancelled() and writer.done() and writer.exception() is not None:
                log.info("participant %s: push ack not sent: %s", self.participant, writer.exception())
