"""One proxied HTTP/2 stream: resolve → gate → forward → relay, with the same
rules as the HTTP/1.1 ``Request`` (DESIGN §7), per stream.

The partition key comes from the request's headers (gRPC metadata), ``:path``
or ``:authority`` by the same ``--partition-from`` rules; reads and writes by
method and ``:path`` (``--route`` rules classify gRPC methods, e.g.
``"POST ^/kv.v1.Store/Get$=read"``; otherwise every gRPC call, a POST, is a
write). The stamp is set as ``x-partition``/``x-placement``/
``x-placement-epoch``; a write is admitted immediately before its HEADERS go
upstream and counted in flight until the upstream's stream ends.

The upstream leg is an HTTP/2 stream (``h2c://`` nodes, ``https://`` ones that
chose ``h2``: ``_h2_upstream.H2Leg``) or an HTTP/1.1 exchange
(``_h2_h1.H1Leg``). Legs report ``resp_head``/``resp_data``/``resp_trailers``/
``resp_end`` and failures; the exchange reports ``req_sent`` so the client's
window is handed back only once its bytes have left (see ``_h2_conn``).

Refusals: a gRPC call refused by the gate and not held ends Trailers-Only
with ``grpc-status`` 14 (UNAVAILABLE), ``grpc-retry-pushback-ms`` and the
problem fields as trailing metadata; other requests get the 503 problem. The
application's own refusal — the 503 stale-epoch problem, or the gate
interceptor's ``ABORTED`` with ``x-epochgate-reason`` — is retried like a held
write when the whole request was kept (``--retry-body-max``), it was complete
before the answer came, and, for gRPC, it is a single message (unary or
server-streaming calls refused before their first response message: nothing
reached the client and nothing committed). Calls that stream requests are
never replayed. The response half (relay, refusal spotting, the proxy's own
answers) is ``_h2_response.H2ResponseMixin``, with the stream's end (``finish``); reading and
checking the request head, ``head.py``.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Any

from gate import Phase, Reject, RejectReason, problem_document

from .head import length_error, read_head
from .response import H2ResponseMixin
from .upstream import h2pool
from ..exstate import REROUTE_MAX
from ..hookpath import is_hook_path
from ..limits import charge, keep_for_replay, uncharge
from ..orphan import orphan_stream
from ..resolve import resolve
from ..router import KeyError400
from ..target import TargetError, normalize

if TYPE_CHECKING:
    from ..context import ProxyContext
    from .server import H2ServerConn

_HOLDABLE = (RejectReason.CUTOVER, RejectReason.STALE_EPOCH, RejectReason.FAIL_CLOSED)
_PHASES = {p.value: p for p in Phase}
# compiled: time.perf_counter's clock read in C (stream.pxd's _clock, as exchange.py's), no call
_COMPILED = not __file__.endswith(".py")


class H2Exchange(H2ResponseMixin):
    """One client stream (see module doc)."""

    __slots__ = (
        "ctx", "sconn", "sid", "method", "method_b", "path", "authority", "fwd", "keyh", "bad", "rid", "rid_given", "head_route",
        "clen", "rcvd",  # (+ exfields.ExchangeFields')
        "xff", "ctype", "grpc", "admitted", "decision",
        "node", "reroutes", "replays", "pooled_retries", "hold_timer", "held_at", "was_held", "leg", "spare", "pending", "body_done", "trailers",
        "head_sent", "to_ack", "status", "resp_started", "resp_held", "resp_buf",
        "resp_ended", "done", "deadline", "t0", "t_adm", "t_up", "sent")

    def make(self, ctx: "ProxyContext", sconn: "H2ServerConn", sid: int, headers: list[tuple[bytes, bytes]],
             ended: bool) -> "H2Exchange":
        """A new stream: ``new_stream``, reached through the template ``MAKER`` by server.py's
        ``on_head``, which cannot cimport this module (docs/compiled-build.md "Object makers")."""
        return new_stream(ctx, sconn, sid, headers, ended)

    def _defaults(self) -> None:
        """What a compiled stream's C fields start as (``new_stream`` sets the others)."""
        self.bad: tuple[int, str, str] | None = None
        self.rcvd = 0                  # DATA bytes received from the client
        self.is_write = self.admitted = False
        self.node: Any = None
        # the retry budgets, one counter each (sidecar/proxy/exstate.py names their bounds)
        self.reroutes = self.replays = self.pooled_retries = 0
        self.hold_timer: Any = None
        self.held_at = 0.0
        self.was_held = False
        self.leg: Any = None
        self.spare: Any = None
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.head_sent = False
        self.replay: list[bytes] | None = None
        self.replay_len = 0
        self.charged = 0      # body bytes held against ctx.budget (parked or kept for replay: limits)
        self.sent = 0         # body bytes sent upstream in this attempt
        self.to_ack = 0       # client bytes received and not yet handed back (flow control)
        self.status = 0
        self.resp_started = False
        self.resp_held: list[tuple[bytes, bytes]] | None = None
        self.resp_buf: list[bytes] | None = None
        self.resp_ended = False
        self.done = False
        self.deadline = 0.0
        self.t0 = self.t_res = self.t_adm = self.t_up = 0.0

    # ------------------------------------------------------------ routing and gating
    def dispatch(self) -> None:
        self.t0 = _clock() if _COMPILED else perf_counter()  # noqa: F821 (compiled: a C read, stream.pxd)
        if self.bad is not None:
            status, title, detail = self.bad
            slug = "request-header-too-large" if status == 431 else "bad-request"
            return self.fail(status, slug, title, detail, outcome="bad_request")
        known = self.head_route
        if known is not None and known.routed:
            # this connection's last good head, routed before: the same checks (hook path, target) and
            # rules on the same fields give the same target, kind and partition (see _head)
            self.path = known.r_path
            self.is_write = known.r_write
            self.partition = known.r_partition
            return self.route()
        if is_hook_path(self.path):   # the mover hooks belong to the controller (DESIGN §6)
            return self.fail(404, "not-found", "not found",
                             "the /_epochgate/ mover hooks are not served through the sidecar", outcome="bad_request")
        # One normalised target for the rules and the upstream, as on HTTP/1.1 (sidecar/proxy/target.py).
        try:
            self.path, rpath, _authority = normalize(self.path, self.method, self.ctx.max_path)
        except TargetError as exc:
            return self.fail(exc.status, "bad-request", exc.title, exc.detail, outcome="bad_request")
        router = self.ctx.router
        path, _, query = self.path.partition(b"?")
        spath = rpath if rpath is not None else path.decode("latin-1")
        self.is_write = router.is_write(self.method, spath)
        try:
            self.partition = router.partition(spath, query, self.keyh, self.authority)
        except KeyError400 as exc:
            return self.fail(400, "bad-partition-key", exc.title, exc.detail, outcome="bad_request", rule=exc.rule)
        if known is not None:
            known.r_path = self.path
            known.r_write = self.is_write
            known.r_partition = self.partition
            known.routed = True
        self.route()

    def route(self) -> None:
        """Resolve, get an upstream, admit a write right before sending (re-run after holds/retries)."""
        ctx = self.ctx
        node = resolve(self, ctx)
        if node is None:
            return
        target = h2pool(ctx).target(self, node)
        if target is None:
            return  # connecting: route() runs again when it is done
        if self.is_write:
            wg = ctx.gate  # compiled: a WriteGate (stream.pxd), admit is a C call (as exchange.py's route)
            r = wg.admit(self.partition, self.epoch)
            self.t_adm = _clock() if _COMPILED else perf_counter()  # noqa: F821
            if not r.admitted:
                target.unused()
                ctx.stats.decision(self.phase, "reject", r.reason.value)
                return self.rejected(r)
            ctx.stats.decision(self.phase, "admit", "none")
            self.admitted = True
            self.decision = "admit"
            if self.hold_timer is not None:
                ctx.hold.release(self)
        else:
            self.decision = "read"
        self.attach(target)

    def rejected(self, r: Any) -> None:
        ctx = self.ctx
        if r.reason is RejectReason.STALE_EPOCH and self.reroutes < REROUTE_MAX:
            self.reroutes += 1
            return self.route()
        if (r.reason in _HOLDABLE and self.sconn.transport is not None and ctx.budget.may_hold(self)
                and ctx.hold.try_hold(self)):
            self.was_held = True
            self.decision = "held"
            return
        if self.hold_timer is not None:
            ctx.hold.release(self)
        self.refuse(r)

    def refuse(self, r: Any) -> None:
        if r.phase is None and self.phase in _PHASES:
            r = Reject(r.reason, r.current, _PHASES[self.phase])
        self.decision = "reject"
        doc = problem_document(r, self.partition, retry_after_s=1,
                               detail=f"writes to partition {self.partition!r} are refused ({r.reason.value}); retry")
        if not self.grpc:
            extra = [(k.lower().encode(), v.encode()) for k, v in doc.headers.items() if k != "Content-Type"]
            return self.answer(503, doc.encode(), "rejected", extra)
        b = doc.body
        md = [(b"grpc-retry-pushback-ms", b"%d" % (int(doc.headers["Retry-After"]) * 1000)),
              (b"retry-after", doc.headers["Retry-After"].encode()),
              (b"x-epochgate-type", str(b["type"]).encode()), (b"x-epochgate-reason", str(b["reason"]).encode()),
              (b"x-partition", self.partition.encode())]
        if b["phase"] is not None:
            md.append((b"x-epochgate-phase", str(b["phase"]).encode()))
        if b["epoch"] is not None:
            md += [(b"x-placement", str(b["placement"]).encode()), (b"x-placement-epoch", b"%d" % b["epoch"])]
        self.grpc_answer(14, str(b["detail"]), md, "rejected")

    def hold_wake(self) -> None:
        if self.done:
            return
        if self.sconn.transport is None:
            return self.finish("error")
        self.route()

    def hold_expired(self) -> None:
        if self.done:
            return
        src = self.ctx.source
        st = src.state(self.partition)
        at = None if st is None else src.lookup(self.partition)
        reason = RejectReason.CUTOVER if st is not None and st[0].phase.value == "cutover" else RejectReason.STALE_EPOCH
        if not self.ctx.gate.writable():
            reason = RejectReason.FAIL_CLOSED
        self.refuse(Reject(reason, at, None if st is None else st[0].phase))

    # ------------------------------------------------------------ request → upstream
    def attach(self, target: Any) -> None:
        ctx = self.ctx
        pending, self.pending = self.pending, []
        carried = pending is self.replay  # a replay (response.py): the kept bytes go again, still kept
        if not carried:
            if self.charged:  # parked bytes leave now; the ones kept for replay are charged again (_send)
                uncharge(self, self.charged)
            if self.is_write and ctx.retry_body_max:
                self.replay = []
                self.replay_len = 0
        self.sent = 0
        known = self.head_route
        if known is not None and known.added and known.a_epoch == self.epoch and known.a_placement == self.placement:
            # the fields added around the request id: the same for every stream of a remembered head
            # (same client connection and partition) at the same placement and epoch (_head)
            before = known.a_before
            stamp = known.a_stamp
        else:
            before = [(b"x-forwarded-for", self.sconn.peer if self.xff is None else self.xff + b", " + self.sconn.peer),
                      (b"x-forwarded-proto", b"https" if self.sconn.tls else b"http")]
            if self.authority is not None:
                before.append((b"x-forwarded-host", self.authority))
            stamp = [(b"x-partition", self.partition.encode()), (b"x-placement", self.placement.encode()),
                     (b"x-placement-epoch", b"%d" % self.epoch)]
            if known is not None:
                known.a_epoch = self.epoch
                known.a_placement = self.placement
                known.a_before = before
                known.a_stamp = stamp
                known.added = True
        extra = before + stamp  # (one new list; the request id inserted: one concatenation less)
        if not self.rid_given:
            self.rid = ctx.request_id()
            extra.insert(len(before), (b"x-request-id", self.rid))
        if ctx.tracer is not None:  # this attempt's traceparent (sidecar/trace)
            ctx.tracer.h2_attempt(self, extra)
        ends = self.body_done and not pending
        self.head_sent = True
        self.t_up = _clock() if _COMPILED else perf_counter()  # noqa: F821
        self.deadline = ctx.now + ctx.read_timeout
        ctx.waiting.add(self)
        self.leg = target.start(self, extra, ends)
        if carried:
            for data in pending:
                self.sent += len(data)
                self.leg.send(data)
        else:
            for data in pending:
                self._send(data)
        if self.body_done and not ends:
            self.leg.end(None)  # (trailers go to no node: client_end)

    def _send(self, data: bytes) -> None:
        self.sent += len(data)
        if self.replay is not None:
            keep_for_replay(self, data)  # within --retry-body-max and --body-budget, as on HTTP/1.1
        self.leg.send(data)

    def malformed(self, detail: str) -> None:
        """A request found malformed after its head was accepted: never forwarded as it is.
        Before the head went upstream: the 400 problem; after: the upstream leg is cut (an
        HTTP/1.1 node's connection closes, never pooled) and the stream is reset PROTOCOL_ERROR."""
        if self.done:
            return
        if self.head_sent or self.resp_started:
            return self.abort("bad_request", 1)
        self.fail(400, "bad-request", "malformed request", detail, outcome="bad_request")

    def client_data(self, data: bytes) -> None:
        self.to_ack += len(data)
        if not self.done:
            err = length_error(self, len(data), False)
            if err is not None:
                self.malformed(err)
        if self.done:
            self.req_sent(len(data))
        elif self.leg is not None:
            self._send(data)
        else:
            self.pending.append(data)  # bounded by the stream window: not acknowledged until sent
            charge(self, len(data))

    def client_end(self, trailers: list[tuple[bytes, bytes]] | None) -> None:
        """The client's stream ended (by DATA, or trailers). Request trailers go to no node, of
        either kind: like HTTP/1.1 chunked trailers they arrive after the head was checked and
        stamped, and must not add fields (a stamp, say) to it (DESIGN §7)."""
        if self.body_done:
            return
        self.body_done = True
        self.trailers = trailers
        if self.done:
            return
        err = length_error(self, 0)
        if err is not None:
            return self.malformed(err)
        if self.leg is not None:
            self.leg.end(None)

    def req_sent(self, n: int) -> None:
        """``n`` request bytes left for the upstream: hand the client's window back (replays excepted)."""
        a = n if n <= self.to_ack else self.to_ack
        if a:
            self.to_ack -= a
            self.sconn.ack(self.sid, a)

    def client_reset(self) -> None:
        """The client reset the stream (or its connection went): an admitted write whose
        request ended stays counted until the upstream exchange ends (``orphan``, as on
        HTTP/1.1); otherwise the upstream leg is cut."""
        if self.done:
            return
        if not orphan_stream(self):
            self._drop_leg()
        self.finish("error")


def new_stream(ctx: "ProxyContext", sconn: "H2ServerConn", sid: int, headers: list[tuple[bytes, bytes]],
               ended: bool) -> H2Exchange:
    """The one way an ``H2Exchange`` is made (the maker pattern, docs/compiled-build.md "Object
    makers"): compiled, the type's allocation and C field stores, not the type's call and
    ``__init__``'s argument parsing. A field starts as None, 0, 0.0 or False there (response.pxd's
    C fields): only the others are set here (the rest, ``_defaults``, for the plain-Python build's
    slots); then the head is read (``_head``)."""
    ex = H2Exchange.__new__(H2Exchange)
    ex.ctx = ctx
    ex.sconn = sconn
    ex.sid = sid
    if not _COMPILED:
        ex._defaults()
    ex.partition = ""
    ex.phase = "none"
    ex.epoch = 0
    ex.placement = ""
    ex.decision = "-"
    ex.pending = []
    ex.body_done = ended
    read_head(ex, ctx, sconn, headers, ended)
    return ex


#: the template server.py makes each stream through (``MAKER.make``: a C call through response.pxd's
#: ``H2ResponseMixin``, where server.pxd cannot cimport this module's ``new_stream``)
MAKER = H2Exchange.__new__(H2Exchange)
