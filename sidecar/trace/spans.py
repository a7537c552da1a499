"""Request records (``recorder._Rec``) → OpenTelemetry spans, off the request path.

One trace per sampled request, following the HTTP semantic conventions:

* a SERVER span for the client's request (``http.request.method``, ``url.path``,
  ``http.response.status_code``, ``network.protocol.version``, ``client.address``,
  ``error.type`` on a 5xx or a failed exchange), child of the client's ``traceparent``
  when one came; events ``resolve`` (phase, epoch, placement, per resolve) and
  ``admit`` (the write admitted at that epoch, per attempt);
* an INTERNAL ``hold`` span per park (``epochgate.hold.epoch``: the epoch the write was
  refused at, whose successor it waited for; ``epochgate.hold.woke_epoch``: the epoch it
  woke to — absent when the hold's bound ran out);
* a CLIENT span per upstream attempt (``server.address``/``server.port``, ``url.full``,
  ``http.response.status_code``, ``http.request.resend_count`` from the second attempt on,
  ``error.type``: the status of a refused or failed attempt, or the failure's name) —
  its id is the one sent upstream in ``traceparent``, so the node's span is its child.

Every span carries ``epochgate.partition`` and those that know it
``epochgate.placement``/``epochgate.epoch``/``epochgate.phase``/``epochgate.decision``.
"""

from __future__ import annotations

import time
from time import perf_counter
from typing import Any
from urllib.parse import urlsplit

from .recorder import (A_EPOCH, A_ERR, A_N, A_NODE, A_PLACEMENT, A_SID, A_STATUS, A_T0, A_T1, A_URL, _Rec)


class SpanBuilder:
    """Makes the SDK's ``ReadableSpan`` for each record and hands it to the processor."""

    def __init__(self, processor: Any, resource: Any, scope: Any, new_span_id: Any) -> None:
        from opentelemetry.sdk.trace import Event, ReadableSpan
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

        self.processor = processor
        self.resource = resource
        self.scope = scope
        self.new_span_id = new_span_id
        self._Span, self._Event, self._Ctx, self._State = ReadableSpan, Event, SpanContext, TraceState
        self._flags = TraceFlags(TraceFlags.SAMPLED)
        self.SERVER, self.CLIENT, self.INTERNAL = SpanKind.SERVER, SpanKind.CLIENT, SpanKind.INTERNAL
        self._error = Status(StatusCode.ERROR)
        self._unset = Status(StatusCode.UNSET)
        # perf_counter seconds → Unix nanoseconds (both clocks read once; drift over a run is far below a span)
        self.wall0 = time.time_ns()
        self.pc0 = perf_counter()
        self.spans = 0
        self.exemplar: Any = None  # exemplars.exemplar_setter(): trace ids on the latency histogram

    def ns(self, t: float) -> int:
        return self.wall0 + int((t - self.pc0) * 1e9)

    def build_all(self, recs: list[_Rec]) -> None:
        for rec in recs:
            self.build(rec)

    def _span(self, name: str, ctx: Any, parent: Any, kind: Any, attrs: dict[str, Any], t0: float, t1: float,
              error: bool = False, events: Any = ()) -> None:
        self.processor.on_end(self._Span(name, ctx, parent, self.resource, attrs, events, (), kind,
                                         status=self._error if error else self._unset, start_time=self.ns(t0),
                                         end_time=self.ns(t1), instrumentation_scope=self.scope))
        self.spans += 1

    def build(self, rec: _Rec) -> None:
        (method, target, version, peer, status, outcome, partition, phase, epoch, placement, decision, is_write,
         t0, t1, grpc) = rec.snap
        target = target.decode("latin-1") if isinstance(target, bytes) else target
        path, _, query = target.partition("?")
        attrs: dict[str, Any] = {"http.request.method": method, "url.path": path, "url.scheme": "http",
                                 "network.protocol.version": version, "client.address": peer,
                                 "epochgate.partition": partition, "epochgate.decision": decision,
                                 "epochgate.outcome": outcome, "epochgate.write": bool(is_write)}
        if query:
            attrs["url.query"] = query
        if status:
            attrs["http.response.status_code"] = status
        if placement:
            attrs.update({"epochgate.placement": placement, "epochgate.epoch": epoch, "epochgate.phase": phase})
        if grpc:
            attrs["rpc.system"] = "grpc"
        failed = status >= 500 or outcome not in ("ok", "held_ok")
        if failed:
            attrs["error.type"] = str(status) if status >= 500 else outcome
        tid, flags = rec.trace_id, self._flags
        p = rec.parent
        parent = None if p is None else self._Ctx(
            p.trace_id, p.span_id, True, flags, self._State.from_header([p.state.decode("latin-1")]) if p.state else None)
        server = self._Ctx(tid, rec.server_id, False, flags)
        ns, Event = self.ns, self._Event
        events = [Event(name, {"epochgate.phase": ph, "epochgate.epoch": ep, "epochgate.placement": pl}, ns(t))
                  for name, t, ph, ep, pl in rec.events]
        self._span(method, server, parent, self.SERVER, attrs, t0, t1, failed, events)
        if self.exemplar is not None:
            self.exemplar(bool(is_write), t1 - t0, tid)
        for h_t0, h_t1, h_epoch, h_phase, woke in rec.holds:
            ha = {"epochgate.partition": partition, "epochgate.hold.epoch": h_epoch, "epochgate.phase": h_phase}
            if woke is not None:
                ha["epochgate.hold.woke_epoch"] = woke
            self._span("hold", self._Ctx(tid, self.new_span_id(), False, flags), server, self.INTERNAL, ha, h_t0, h_t1)
        for a in rec.attempts:
            url = urlsplit(a[A_URL])
            ca: dict[str, Any] = {"http.request.method": method, "server.address": url.hostname or "",
                                  "server.port": url.port or (443 if url.scheme == "https" else 80),
                                  "url.full": a[A_URL].rstrip("/") + target,
                                  "epochgate.partition": partition, "epochgate.node": a[A_NODE],
                                  "epochgate.placement": a[A_PLACEMENT], "epochgate.epoch": a[A_EPOCH]}
            st = a[A_STATUS]
            if st:
                ca["http.response.status_code"] = st
            if a[A_N]:
                ca["http.request.resend_count"] = a[A_N]
            err = a[A_ERR] or (str(st) if st >= 500 else None)
            if err is not None:
                ca["error.type"] = err
            self._span(method, self._Ctx(tid, a[A_SID], False, flags), server, self.CLIENT, ca, a[A_T0], a[A_T1],
                       err is not None)
