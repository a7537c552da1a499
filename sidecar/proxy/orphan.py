"""A write whose client went away keeps counting until its upstream exchange ends.

DESIGN §7: an admitted write stays counted in flight until the upstream's
response ends — the cutover ack (§5) waits for it. A client that closes its
connection does not stop the application: it goes on working on the request
and may commit it. So when the client of an admitted write disconnects after
the whole request was sent upstream, the upstream connection is handed to an
``Orphan``, which discards the response and ends the in-flight count when the
response ends, the upstream closes, or ``--read-timeout`` passes (the same bound
a write with its client present has; then the upstream connection is closed).

A write whose body was not fully sent is cut instead (the upstream connection
is closed): the application gets a truncated body and cannot commit it.

HTTP/2 clients are held to the same rule (issue 26): a client that resets the
stream of an admitted write (RST_STREAM, GOAWAY, or the connection lost) after
its request ended hands the upstream leg — a stream on an HTTP/2 node, or an
HTTP/1.1 exchange — to a ``LegOrphan``, which ends the count when the upstream
answers, resets, closes, or ``--read-timeout`` passes (then the leg is cancelled).
A stream reset before its request ended is cut (the upstream stream is reset or
the HTTP/1.1 connection closed): the application never gets a whole request.
"""

from __future__ import annotations

from typing import Any


class _Counted:
    """An admitted write's in-flight count, ended once (by the upstream, or the timer)."""

    __slots__ = ("ctx", "partition", "epoch", "timer", "ended")

    def __init__(self, ctx: Any, partition: str, epoch: int, timeout_s: float) -> None:
        self.ctx, self.partition, self.epoch = ctx, partition, epoch
        self.ended = False
        self.timer = ctx.loop.call_later(timeout_s, self._expire)

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            self.timer.cancel()
            self.ctx.gate.done(self.partition, self.epoch)

    def _cut(self) -> None:
        raise NotImplementedError

    def _expire(self) -> None:
        self._cut()
        self._end()


class Orphan(_Counted):
    """Stands in for the finished client-side exchange on its upstream connection."""

    __slots__ = ("up", "cout")
    tunnel = False

    def __init__(self, ctx: Any, partition: str, epoch: int, up: Any, timeout_s: float) -> None:
        super().__init__(ctx, partition, epoch, timeout_s)
        self.up = up
        self.cout = None

    def _cut(self) -> None:
        self.up.exchange = None
        self.up.close()

    # the UpstreamConn callbacks (see sidecar/proxy/upstream.py)
    def flush_client(self) -> None:
        pass

    def on_response_head(self, head: Any) -> None:
        pass

    def on_response_body(self, body: bytes) -> None:
        pass

    def on_response_end(self) -> None:
        self.up.release(False)
        self._end()

    def upstream_lost(self, up: Any) -> None:
        self._end()

    def upstream_failed(self, msg: str) -> None:
        self._end()

    def upstream_paused(self, paused: bool) -> None:
        pass

    def upstream_upgraded(self, rest: bytes) -> None:
        self.up.exchange = None
        self.up.close()
        self._end()


def orphan_write(req: Any) -> bool:
    """Hand an admitted write whose client is gone to an ``Orphan`` (True), or leave it to
    the caller to cut (False: not a write in flight, or its body was not fully sent)."""
    up = req.up
    if not req.admitted or up is None or not req.sent_all or req.tunnel or req.done:
        return False
    req.up = None
    req.admitted = False          # the orphan ends the count, not the finished request
    up.exchange = Orphan(req.ctx, req.partition, req.epoch, up, req.ctx.read_timeout)
    return True


class LegOrphan(_Counted):
    """Stands in for a finished HTTP/2 client stream (``h2.stream.H2Exchange``) on its
    upstream leg (``h2.upstream.H2Leg`` or ``h2.h1.H1Leg``): the response is discarded,
    its window handed back, and the count ends with the upstream exchange."""

    __slots__ = ("leg", "method")

    def __init__(self, ex: Any, leg: Any, timeout_s: float) -> None:
        super().__init__(ex.ctx, ex.partition, ex.epoch, timeout_s)
        self.leg = leg
        self.method = ex.method  # (H1Leg reads it)

    def _cut(self) -> None:
        self.leg.cancel()

    # the calls a leg makes on its exchange
    def resp_head(self, headers: Any, ended: bool) -> None:
        if ended:
            self._end()

    def resp_data(self, data: bytes) -> None:
        self.leg.ack_resp(len(data))

    def resp_trailers(self, trailers: Any) -> None:
        self._end()

    def resp_end(self) -> None:
        self._end()

    def up_lost(self, never_processed: bool, msg: str) -> None:
        self._end()

    def req_sent(self, n: int) -> None:
        pass


def orphan_stream(ex: Any) -> bool:
    """Hand an admitted HTTP/2 write whose client stream is gone to a ``LegOrphan`` (True),
    or leave it to the caller to cut (False: not a write in flight, or its request had not
    ended — the upstream never gets it whole)."""
    leg = ex.leg
    if not ex.admitted or leg is None or not ex.body_done or ex.done:
        return False
    ex.leg = None
    ex.admitted = False           # the orphan ends the count, not the finished stream
    leg.ex = LegOrphan(ex, leg, ex.ctx.read_timeout)
    return True
