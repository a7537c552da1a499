"""What the data path records for a trace: timestamps and a few values, no spans.

``RequestTracer`` is ``ctx.tracer`` when tracing is on (``None`` otherwise: each hook
in the data path is then one attribute check). Its marks are called from the
HTTP/1.1 exchange and the HTTP/2 stream at fixed points:

* ``header``  — the client's ``traceparent``/``tracestate`` (HTTP/1.1 parser; they are
  kept out of the forwarded headers while tracing is on and re-emitted below);
* ``resolved`` — after every resolve (``proxy/resolve.py``: first, after a hold, on a retry);
* ``held``     — the hold parked the request (``proxy/hold.py``);
* ``attempt``  — the head is about to go upstream: returns the ``traceparent`` naming
  this attempt's CLIENT span, so the node's span is its child (``h2_attempt``: HTTP/2);
* ``done``     — the exchange finished (its access-log point).

The first mark decides sampling (``w3c.Sampler``, parent-based ratio). A request
sampled out costs that decision and two dict operations; the headers it came with
go upstream unchanged. A sampled request's record (``_Rec``) gathers perf_counter
timestamps; ``done`` queues it, and a timer (``FLUSH_S``) hands the queue to
``spans.SpanBuilder``, which makes the OpenTelemetry spans off the request path.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from typing import Any, Callable

from .w3c import Parent, Sampler, parse, traceparent

FLUSH_S = 0.25        # records wait at most this long before their spans are built
PENDING_MAX = 10000   # records queued between flushes; more are dropped (counted), never block requests
LIVE_MAX = 100000     # requests being traced at once (a leak bound: every request reaches done)
INBOUND_SWEEP = 1024  # undispatched heads with trace context kept before closed ones are swept

log = logging.getLogger("epochgate.sidecar")


_NOTHING = b""  # a request sampled out that came without trace context: nothing to forward


class _Rec:
    """One sampled request: its ids and what happened, in perf_counter seconds."""

    __slots__ = ("trace_id", "parent", "server_id", "events", "attempts", "open", "holds", "hold", "snap")

    def __init__(self, trace_id: int, parent: Parent | None, server_id: int) -> None:
        self.trace_id = trace_id
        self.parent = parent
        self.server_id = server_id
        self.events: list[tuple[Any, ...]] = []    # ("resolve"|"admit", t, phase, epoch, placement)
        self.attempts: list[list[Any]] = []        # closed upstream attempts (see _attempt)
        self.open: list[Any] | None = None         # the attempt on the wire
        self.holds: list[list[Any]] = []           # [t_start, t_end, epoch, phase, woke_epoch]
        self.hold: list[Any] | None = None         # the park in progress
        self.snap: tuple[Any, ...] = ()            # the exchange as it ended (done)


# an attempt: [span_id, t_start, t_end, status, node, url, epoch, placement, resend_count, error]
A_SID, A_T0, A_T1, A_STATUS, A_NODE, A_URL, A_EPOCH, A_PLACEMENT, A_N, A_ERR = range(10)


class RequestTracer:
    def __init__(self, loop: asyncio.AbstractEventLoop, ratio: float, build: Callable[[list[Any]], None]) -> None:
        self.loop = loop
        self.sampler = Sampler(ratio)
        self.build = build                 # SpanBuilder.build_all (runs in the flush timer)
        self.live: dict[Any, Any] = {}     # request → _Rec, or the bytes to re-emit when sampled out
        self.inbound: dict[Any, list[Any]] = {}  # HTTP/1.1 request → [traceparent, tracestate] as received
        self.pending: list[Any] = []
        self.timer: asyncio.TimerHandle | None = None
        self.sampled = self.sampled_out = self.dropped = 0
        self._sweep_at = INBOUND_SWEEP
        self._h2: dict[type, bool] = {}  # exchange class → carries its headers as ``fwd`` pairs (HTTP/2)

    # ---------------------------------------------------------------- marks (data path)
    def header(self, req: Any, lname: bytes, value: bytes) -> None:
        got = self.inbound.get(req)
        if got is None:
            if len(self.inbound) >= self._sweep_at:
                self._sweep_inbound()
            got = self.inbound[req] = [None, None]
        got[0 if lname == b"traceparent" else 1] = value

    def _sweep_inbound(self) -> None:
        """Forget the heads whose connection closed before they were dispatched (a client
        that sent ``traceparent`` and left mid-head): no mark will ever pop them. Runs when
        the map has doubled since the last sweep, so its cost is amortised O(1) a header."""
        self.inbound = {r: v for r, v in self.inbound.items() if r.conn.transport is not None}
        self._sweep_at = max(INBOUND_SWEEP, 2 * len(self.inbound))

    def _decide(self, x: Any) -> Any:
        raw = self.inbound.pop(x, None)
        if raw is None:
            cls = x.__class__
            h2 = self._h2.get(cls)
            if h2 is None:  # (hasattr raises inside for an HTTP/1.1 exchange: asked once per class)
                h2 = self._h2[cls] = hasattr(x, "fwd")
            if h2:  # an HTTP/2 stream: its header pairs, traceparent among them
                raw = [None, None]
                for name, value in x.fwd:
                    if name == b"traceparent":
                        raw[0] = value
                    elif name == b"tracestate":
                        raw[1] = value
        rec: Any
        if raw is None:  # no trace context came (the usual case): the ratio decides
            s = self.sampler
            low = s.draw()
            if low < s.bound:
                self.sampled += 1
                rec = _Rec(s.new_trace_id(low), None, s.new_span_id())
            else:
                self.sampled_out += 1
                rec = _NOTHING
        else:
            parent = parse(raw[0], raw[1])
            if parent is None:
                s = self.sampler
                low = s.draw()
                sampled = low < s.bound
                tid = s.new_trace_id(low) if sampled else 0
            else:
                sampled, tid = parent.sampled, parent.trace_id
            if sampled:
                self.sampled += 1
                rec = _Rec(tid, parent, self.sampler.new_span_id())
            else:
                self.sampled_out += 1  # forwarded as it came (HTTP/1.1: the lines the parser kept back)
                rec = ((b"traceparent: " + raw[0] + b"\r\n" if raw[0] is not None else b"")
                       + (b"tracestate: " + raw[1] + b"\r\n" if raw[1] is not None else b""))
        if len(self.live) < LIVE_MAX:
            self.live[x] = rec
        return rec

    def _rec(self, x: Any) -> Any:
        rec = self.live.get(x)
        return self._decide(x) if rec is None else rec

    def resolved(self, x: Any) -> None:
        rec = self._rec(x)
        if rec.__class__ is bytes:
            return
        t = x.t_res
        if rec.open is not None:  # replayed at once (the table had moved): the refused attempt ends here
            self._close(rec, x, t, None)
        h = rec.hold
        if h is not None:
            h[1] = t
            h[4] = x.epoch
            rec.holds.append(h)
            rec.hold = None
        rec.events.append(("resolve", t, x.phase, x.epoch, x.placement))

    def held(self, x: Any) -> None:
        rec = self._rec(x)
        if rec.__class__ is bytes:
            return
        now = perf_counter()
        if rec.open is not None:  # the application refused this attempt (stale epoch)
            self._close(rec, x, now, None)
        if rec.hold is None:
            rec.hold = [now, 0.0, x.epoch, x.phase, None]

    def _open(self, rec: _Rec, x: Any, now: float) -> int:
        if rec.open is not None:  # a pooled connection closed under the last attempt: retried
            self._close(rec, x, now, "upstream_closed")
        if x.is_write and x.admitted:
            rec.events.append(("admit", x.t_adm or now, x.phase, x.epoch, x.placement))
        sid = self.sampler.new_span_id()
        node = x.node
        rec.open = [sid, now, 0.0, 0, node.name, node.url, x.epoch, x.placement,
                    len(rec.attempts), None]
        return sid

    def attempt(self, x: Any) -> bytes:
        """HTTP/1.1: the trace-context lines for the head going upstream now."""
        rec = self._rec(x)
        if rec.__class__ is bytes:
            return rec
        sid = self._open(rec, x, perf_counter())
        line = b"traceparent: " + traceparent(rec.trace_id, sid) + b"\r\n"
        p = rec.parent
        if p is not None and p.state:
            line += b"tracestate: " + p.state + b"\r\n"
        return line

    def h2_attempt(self, x: Any, extra: list[tuple[bytes, bytes]]) -> None:
        """HTTP/2: replace the stream's trace context by this attempt's (sampled only)."""
        rec = self._rec(x)
        if rec.__class__ is bytes:
            return
        sid = self._open(rec, x, perf_counter())
        x.fwd = [kv for kv in x.fwd if kv[0] != b"traceparent" and kv[0] != b"tracestate"]
        extra.append((b"traceparent", traceparent(rec.trace_id, sid)))
        p = rec.parent
        if p is not None and p.state:
            extra.append((b"tracestate", p.state))

    def _close(self, rec: _Rec, x: Any, t: float, err: str | None) -> None:
        a = rec.open
        rec.open = None
        a[A_T1] = t
        a[A_STATUS] = x.status
        a[A_ERR] = err
        rec.attempts.append(a)

    def done(self, x: Any, outcome: str, t: float) -> None:
        rec = self.live.pop(x, None)
        if rec is None:
            rec = self._decide(x)
            self.live.pop(x, None)
        if rec.__class__ is bytes:
            return
        if rec.open is not None:
            self._close(rec, x, t, outcome if outcome not in ("ok", "held_ok") else None)
        if rec.hold is not None:  # the hold's bound ran out
            h = rec.hold
            h[1] = t
            rec.holds.append(h)
            rec.hold = None
        head = getattr(x, "head", None)
        if head is not None:   # HTTP/1.1
            method, target, version, peer = head.method, head.url, head.version, x.conn.peer_s
        else:                  # HTTP/2 (gRPC too)
            method, target, version, peer = x.method, x.path, "2", x.sconn.peer_s
        rec.snap = (method, target, version, peer, x.status, outcome, x.partition, x.phase, x.epoch, x.placement,
                    x.decision, x.is_write, x.t0 or t, t, getattr(x, "grpc", False))
        if len(self.pending) >= PENDING_MAX:
            self.dropped += 1
            return
        self.pending.append(rec)
        if self.timer is None:
            self.timer = self.loop.call_later(FLUSH_S, self.flush)

    # ---------------------------------------------------------------- off the request path
    def flush(self) -> None:
        self.timer = None
        recs, self.pending = self.pending, []
        if recs:
            try:
                self.build(recs)
            except Exception:  # a tracing fault must not touch the data path
                log.exception("building trace spans failed")

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.flush()
