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
    def __init__(self, tracer: Any, ids: Any, new_span_id: Any) -> None:
        from opentelemetry import trace as api
        from opentelemetry.context import Context
        from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

        self.tracer = tracer
        self.ids = ids
        self.new_span_id = new_span_id
        self._api = api
        self._Context = Context
        self._remote = lambda p: api.set_span_in_context(NonRecordingSpan(SpanContext(
            p.trace_id, p.span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED),
            trace_state=TraceState.from_header([p.state.decode("latin-1")]) if p.state else None)), Context())
        self.SERVER, self.CLIENT, self.INTERNAL = SpanKind.SERVER, SpanKind.CLIENT, SpanKind.INTERNAL
        self._error = Status(StatusCode.ERROR)
        # perf_counter seconds → Unix nanoseconds (both clocks read once; drift over a run is far below a span)
        self.wall0 = time.time_ns()
        self.pc0 = perf_counter()
        self.spans = 0

    def ns(self, t: float) -> int:
        return self.wall0 + int((t - self.pc0) * 1e9)

    def build_all(self, recs: list[_Rec]) -> None:
        for rec in recs:
            self.build(rec)

    def build(self, rec: _Rec) -> None:
        (method, target, version, peer, status, outcome, partition, phase, epoch, placement, decision, is_write,
         t0, t1, grpc) = rec.snap
        ns, ids, tracer = self.ns, self.ids, self.tracer
        path = target.decode("latin-1") if isinstance(target, bytes) else target
        path, _, query = path.partition("?")
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
        ids.trace_id = rec.trace_id
        ids.span_id = rec.server_id
        parent = self._remote(rec.parent) if rec.parent is not None else self._Context()
        server = tracer.start_span(method, context=parent, kind=self.SERVER, attributes=attrs, start_time=ns(t0))
        for name, t, ph, ep, pl in rec.events:
            server.add_event(name, {"epochgate.phase": ph, "epochgate.epoch": ep, "epochgate.placement": pl},
                             timestamp=ns(t))
        inside = self._api.set_span_in_context(server, self._Context())
        for h_t0, h_t1, h_epoch, h_phase, woke in rec.holds:
            ids.span_id = self.new_span_id()
            ha = {"epochgate.partition": partition, "epochgate.hold.epoch": h_epoch, "epochgate.phase": h_phase}
            if woke is not None:
                ha["epochgate.hold.woke_epoch"] = woke
            tracer.start_span("hold", context=inside, kind=self.INTERNAL, attributes=ha,
                              start_time=ns(h_t0)).end(end_time=ns(h_t1))
        for a in rec.attempts:
            ids.span_id = a[A_SID]
            url = urlsplit(a[A_URL])
            ca: dict[str, Any] = {"http.request.method": method, "server.address": url.hostname or "",
                                  "server.port": url.port or (443 if url.scheme == "https" else 80),
                                  "url.full": a[A_URL].rstrip("/") + target.decode("latin-1")
                                  if isinstance(target, bytes) else a[A_URL].rstrip("/") + target,
                                  "epochgate.partition": partition, "epochgate.node": a[A_NODE],
                                  "epochgate.placement": a[A_PLACEMENT], "epochgate.epoch": a[A_EPOCH]}
            st = a[A_STATUS]
            if st:
                ca["http.response.status_code"] = st
            if a[A_N]:
                ca["http.request.resend_count"] = a[A_N]
            err = a[A_ERR] or (str(st) if st >= 500 else None)
            span = tracer.start_span(method, context=inside, kind=self.CLIENT, attributes=ca, start_time=ns(a[A_T0]))
            if err is not None:
                span.set_attribute("error.type", err)
                span.set_status(self._error)
            span.end(end_time=ns(a[A_T1]))
        if failed:
            server.set_status(self._error)
        server.end(end_time=ns(t1))
        self.spans += 2 + len(rec.holds) + len(rec.attempts)
