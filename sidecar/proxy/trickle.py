"""A client trickling its body cannot hold a cutover open (DESIGN §5, §7).

A write is admitted once its head is in and the upstream connection exists;
its body then streams. The cutover ack waits for every write admitted at an
older epoch, so a client sending one byte a second could hold a cutover (and
with it every write of the partition) until the controller's deadline aborts
the move — and do it again on the next attempt.

So when a participant starts waiting for a partition's writes to drain
(``InflightTracker.on_wait``), every such write whose request body is still
arriving gets ``BODY_GRACE_S``; then it is cut: its upstream connection is
closed — the application gets a truncated body and cannot commit it — and
the client gets a 503 problem saying the write was not applied (retrying it
is safe). HTTP/1.1 requests and HTTP/2 streams alike (on HTTP/2 the upstream
stream is reset, or the HTTP/1.1 node's connection closed; a gRPC call gets
UNAVAILABLE). Writes whose body has arrived are never cut: they are waited for.

The bound: a trickling client delays a cutover's ack by at most
``BODY_GRACE_S`` plus the application's time to answer a truncated request.
"""

from __future__ import annotations

from typing import Any

BODY_GRACE_S = 1.0


def _cut(ctx: Any, partition: str, below_epoch: int) -> None:
    for conn in list(ctx.clients):
        for req in conn.exchanges():  # HTTP/1.1's current request, or every HTTP/2 stream (limits)
            if (req.done or not req.admitted or req.body_done or req.partition != partition
                    or req.epoch >= below_epoch):
                continue
            req.fail(503, "body-too-slow", "request body too slow",
                     f"partition {partition!r} entered cutover while this write's body was still arriving "
                     f"({BODY_GRACE_S:g}s grace); the write was not applied — retry it",
                     outcome="error")


def watch_trickling(ctx: Any, tracker: Any) -> None:
    """Install the cut on ``tracker`` (the sidecar's ``InflightTracker``)."""

    def on_wait(partition: str, below_epoch: int) -> None:
        ctx.loop.call_later(BODY_GRACE_S, _cut, ctx, partition, below_epoch)

    tracker.on_wait = on_wait
