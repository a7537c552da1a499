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
"""

from __future__ import annotations

from typing import Any


class Orphan:
    """Stands in for the finished client-side exchange on its upstream connection."""

    __slots__ = ("ctx", "partition", "epoch", "up", "timer", "ended", "cout")
    tunnel = False

    def __init__(self, ctx: Any, partition: str, epoch: int, up: Any, timeout_s: float) -> None:
        self.ctx, self.partition, self.epoch, self.up = ctx, partition, epoch, up
        self.ended = False
        self.cout = None
        self.timer = ctx.loop.call_later(timeout_s, self._expire)

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            self.timer.cancel()
            self.ctx.gate.done(self.partition, self.epoch)

    def _expire(self) -> None:
        self.up.exchange = None
        self.up.close()
        self._end()

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
