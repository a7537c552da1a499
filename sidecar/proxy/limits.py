"""Bounds on what clients can make one sidecar process hold — one path for every protocol.

Every connection the listener accepts is in ``ctx.clients`` from its first byte to
its close, whatever it turns out to speak (``detect.DetectConn`` until it has
chosen, then ``conn.ClientConn`` for HTTP/1.1 or ``h2.server.H2ServerConn`` for
HTTP/2, over TCP or TLS). Each of them offers the same face to these bounds
(``ClientFace``): ``current`` (the request being answered, ``None`` when idle —
always ``None`` on HTTP/2, whose ``close_idle`` is graceful), ``last_active``,
``head_since`` (when the head in progress began, 0 when none), ``close_idle()``,
``head_timed_out()`` and ``exchanges()`` (the requests or streams in progress:
the trickle cut, ``trickle.py``, walks them). The periodic sweep
(``sweep_clients``) reads nothing else, so no kind of connection can make it
fail for the others.

* **Connection cap.** At most ``--max-connections`` client connections per
  process, counted at accept (``admit_connection``), before any protocol is
  chosen — HTTP/1.1, h2c and TLS alike. One more is refused and closed at once,
  ``epochgate_connections_refused_total``: a 503 problem on HTTP/1.1 or when
  nothing was read yet, SETTINGS + GOAWAY on TLS that chose ``h2`` by ALPN;
  ``epochgate_client_connections``.
* **Head bytes as they arrive.** httptools reports a header only once it is
  complete, so a check in ``on_header`` runs after the whole value was
  buffered (a 48 MiB header: +100 MB per connection). ``ClientConn`` counts
  the bytes of a head *before* feeding them to the parser and feeds at most
  ``--max-header-bytes``; a head not complete by then is answered 431. On
  HTTP/2 an encoded header block (HEADERS + CONTINUATION) larger than
  ``H2_BLOCK_FACTOR`` × ``--max-header-bytes`` is GOAWAY ENHANCE_YOUR_CALM while
  it is still arriving (``h2`` alone keeps up to 64 CONTINUATION frames: 1 MiB).
* **Head deadline.** A head must arrive complete within ``--head-timeout`` (20 s)
  of its first byte (one byte a minute otherwise holds a connection for
  ever): 408 and close on HTTP/1.1; GOAWAY on HTTP/2 while a header block (or a
  HEADERS/CONTINUATION frame) is incomplete; close for a connection still
  sending the HTTP/2 preface. ``epochgate_request_head_timeouts_total``.
* **Body budget.** Request-body bytes kept in memory — buffered before an
  upstream connection is ready, parked with a held write, or kept to replay a
  write the application refused — count against one ``--body-budget`` per
  process, HTTP/1.1 requests and HTTP/2 streams alike (``charge``/``uncharge``/
  ``keep_for_replay``; the request's ``charged`` is what it holds). A body that
  would overrun it is not kept for replay, and while the others' bytes fill it
  no write is held: it gets the 503 at once instead. A kept body is checked
  once, when it is kept: a refused write's next attempts send the same list
  (``pending is replay``) and it stays charged, so bytes parked by another
  request between two attempts never cost the held write its replay.
"""

from __future__ import annotations

from typing import Any

from . import httpmsg as H

#: an HTTP/2 header block may be encoded up to this many times ``--max-header-bytes``
#: (HPACK's Huffman code can make a value longer than it is): the cap h2's decoder has
H2_BLOCK_FACTOR = 4

BUSY_503 = H.response(503, H.problem_body(503, "too-many-connections", "too many connections",
                                          "this sidecar is at its connection limit; retry"), close=True,
                      extra=[(b"Retry-After", b"1")])


def _busy_h2() -> bytes:
    """Our SETTINGS then GOAWAY (NO_ERROR, last stream 0: nothing processed, retry)."""
    from hyperframe.frame import GoAwayFrame, SettingsFrame

    return (SettingsFrame(0).serialize()
            + GoAwayFrame(0, last_stream_id=0, error_code=0, additional_data=b"too many connections").serialize())


def admit_connection(ctx: Any, conn: Any, transport: Any, h2: bool = False) -> bool:
    """Count a new client connection, or refuse it (see the module doc). The one place the
    cap is checked: the listener's first protocol calls it for every connection."""
    if len(ctx.clients) >= ctx.max_connections:
        ctx.stats.metrics.connections_refused.inc()
        transport.write(_busy_h2() if h2 else BUSY_503)
        transport.close()
        return False
    ctx.clients.add(conn)
    return True


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


def charge(req: Any, n: int) -> None:
    """``req`` now holds ``n`` more body bytes (buffered or parked: taken whatever the room,
    bounded by the request's own flow control; ``may_hold`` is what refuses)."""
    req.charged += n
    ctx = req.ctx  # (a typed local where compiled: one look-up on the request, C fields after)
    b = ctx.budget
    b.used += n
    if b.used > b.peak:
        b.peak = b.used


def uncharge(req: Any, n: int) -> None:
    if n:
        req.charged -= n
        ctx = req.ctx
        b = ctx.budget
        b.used -= n


def keep_for_replay(req: Any, data: Any) -> None:
    """Keep ``data`` to replay ``req`` (an admitted write), within ``--retry-body-max`` and
    the body budget; once one piece does not fit, nothing is kept (``req.replay`` None)."""
    n = len(data)
    ctx = req.ctx
    budget = ctx.budget
    if req.replay_len + n <= ctx.retry_body_max and budget.used + n <= budget.total:
        req.replay_len += n
        req.replay.append(data)
        charge(req, n)
    else:
        req.replay = None  # this write cannot be replayed: an app refusal is relayed as is
        uncharge(req, req.replay_len)
        req.replay_len = 0


def sweep_clients(ctx: Any, now: float) -> None:
    """Idle connections closed, overdue heads answered (called from the tick): one pass
    over every client connection, whatever its protocol (``ClientFace``)."""
    idle_s = ctx.idle_timeout
    limit = ctx.head_timeout
    late = []
    idle = []
    for c in ctx.clients:
        if c.current is not None:
            continue
        if c.head_since and now - c.head_since > limit:
            late.append(c)
        elif now - c.last_active > idle_s:
            idle.append(c)
    for conn in idle:
        conn.close_idle()
    for conn in late:
        ctx.stats.metrics.head_timeouts.inc()
        conn.head_timed_out()
