"""Bounds on what clients can make one sidecar process hold.

* **Head bytes as they arrive.** httptools reports a header only once it is
  complete, so a check in ``on_header`` runs after the whole value was
  buffered (a 48 MiB header: +100 MB per connection). ``ClientConn`` counts
  the bytes of a head *before* feeding them to the parser and feeds at most
  ``--max-header-bytes``; a head not complete by then is answered 431.
* **Head deadline.** A head must arrive complete within ``--head-timeout`` (20 s)
  of its first byte (one byte a minute otherwise holds a connection for
  ever): 408 and close, ``epochgate_request_head_timeouts_total``.
* **Connection cap.** At most ``--max-connections`` client connections per
  process; one more is answered 503 and closed at once,
  ``epochgate_connections_refused_total``; ``epochgate_client_connections``.
* **Body budget.** Request-body bytes kept in memory — buffered before an
  upstream connection is ready, parked with a held write, or kept to replay a
  write the application refused — count against one ``--body-budget`` per
  process. A body that would overrun it is not kept for replay, and while the
  others' bytes fill it no write is held: it gets the 503 at once instead.
"""

from __future__ import annotations

from typing import Any

from . import httpmsg as H

BUSY_503 = H.response(503, H.problem_body(503, "too-many-connections", "too many connections",
                                          "this sidecar is at its connection limit; retry"), close=True,
                      extra=[(b"Retry-After", b"1")])


class BodyBudget:
    """Bytes of request bodies held in memory by this process (see the module doc)."""

    __slots__ = ("total", "used", "peak")

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self.peak = 0

    def may_hold(self, req: Any) -> bool:
        """May ``req`` be parked? Only while the *other* requests' bytes leave room."""
        return self.used - req.charged < self.total

    def fits(self, n: int) -> bool:
        return self.used + n <= self.total


def sweep_heads(ctx: Any, now: float) -> None:
    """Answer 408 on connections whose request head is overdue (called from the tick)."""
    limit = ctx.head_timeout
    late = [c for c in ctx.clients if c.head_since and c.current is None and now - c.head_since > limit]
    for conn in late:
        ctx.stats.metrics.head_timeouts.inc()
        conn.head_timed_out()
