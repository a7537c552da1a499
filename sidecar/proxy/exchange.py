"""One proxied request: resolve → gate → forward → stream the response back.

A ``Request`` is created by the client connection when a request head has
been parsed (``_proxy.ClientConn``); it drives everything after that with
plain callbacks (no task per request on the fast path): the upstream
connection's parser calls ``on_response_*``, the client's parser calls
``client_body``/``client_body_end``, the hold calls ``hold_wake``/
``hold_expired``, the context's tick calls ``timed_out``.

Writes are admitted immediately before the request head goes upstream and
stay counted in flight until the upstream's response ends (``finish``).
A write refused for cutover or a stale epoch never reached the application,
so it may be held and retried; so may one the application itself refused with
a stale-epoch problem, if its whole body was kept (``replay``). The life cycle
(states, legal moves, retry budgets, pause reasons) is ``_exstate``; the head
the connection parsed is ``self.head`` (``_reqhead.ReqHead``). This module is the exchange's
life cycle, routing and gating; the request's way upstream (head, body, replay) is
``forward.ForwardMixin``, its response ``response.ResponseMixin``: one type, three halves.

Inlined copies (each marked "inlined" where it stands): ``pool.get_idle`` and
``stats.decision`` in ``route``, ``_send``/``_uw`` in ``client_body`` and ``_send_end``
in ``client_body_end`` (forward.py), ``_cw`` in ``_response`` (twice) and ``pool.put`` in
``UpstreamConn.release``. They stay
because the bench says so: calling the one copy of each instead cost +2.7 % CPU
per GET and +6.7 % per 1 KiB PUT (``bench_exchange_ab.py``, median per-round
ratio of 10 rounds; baseline max/min 1.13 / 1.30).
"""

from __future__ import annotations

import asyncio
import os
import socket
from time import perf_counter
from typing import TYPE_CHECKING, Any

from gate import Phase, Reject, RejectReason

from . import httpmsg as H
from .exstate import CONNECTING, DONE, FORWARDING, HELD, NEW, P_HELD, REROUTE_MAX, RESPONDING, ROUTING, TUNNEL, step
from .forward import PENDING_HIGH, ForwardMixin  # noqa: F401  (PENDING_HIGH: importable from here as before)
from .router import SAFE_METHODS, KeyError400
from .reqhead import new_head
from .resolve import resolve
from .upstream import UpstreamConn

if TYPE_CHECKING:
    from .context import Node, ProxyContext
    from .conn import ClientConn
    from .upstream import UpstreamConn

_HOLDABLE = (RejectReason.CUTOVER, RejectReason.STALE_EPOCH, RejectReason.FAIL_CLOSED)  # never reached the app
_PHASES = {p.value: p for p in Phase}
_SAFE = SAFE_METHODS  # (typed in exchange.pxd: dispatch's membership test is a C set look-up)
#: route's admit counter key per phase (its tuple made once: bench_exchange_instr, "Stop 39")
_ADMIT_KEYS: dict[str, tuple[str, str, str]] = {}
#: this module runs compiled (an extension module's file is not the ``.py``): see ``new_request``
_COMPILED = not __file__.endswith(".py")


def client_gone(transport: Any) -> bool:
    """True when the client has closed its side (FIN or RST) of a connection we are
    not reading. Peeks one byte on a duplicate of the socket (uvloop's socket object
    has no ``recv``); called only when a held request wakes, never per request."""
    if transport is None or transport.is_closing():
        return True
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        with socket.socket(fileno=os.dup(sock.fileno())) as dup:
            return dup.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False  # still open, nothing sent since
    except OSError:
        return True  # reset


def _gone(up: Any) -> bool:
    """An idle connection that closed meanwhile (``pool.get_idle``'s test, inlined in ``route``)."""
    if isinstance(up, UpstreamConn):
        uc = up
        return uc.closed or uc.transport.is_closing()
    return up.closed or up.transport.is_closing()


class Request(ForwardMixin):
    """One request/response exchange. Slotted: a request sets more attributes
    than an instance dict shares keys for (30), and slot stores beat dict
    growth."""

    __slots__ = (
        "ctx", "conn", "ctransport", "node", "pending", "admitted",  # (+ exfields.ExchangeFields', exbase.ClientExchange's)
        "decision", "state", "reroutes", "pooled_retries", "replays", "hold_timer", "held_at",
        "was_held", "up", "spare", "pending_len", "body_done", "sent_all", "status",
        "resp_chunked", "resp_eof", "resp_keep", "resp_buf", "resp_held", "interim", "no_resp_body", "tunnel", "deadline", "cout", "t0", "t_adm", "t_up")

    def make(self, ctx: "ProxyContext", conn: "ClientConn") -> "Request":
        """A new exchange for the connection's next request: ``new_request``, reached through the
        template ``MAKER`` by ``conn.py``, which cannot cimport this module (docs/compiled-build.md
        "Object makers")."""
        return new_request(ctx, conn)

    def _zero(self) -> None:
        """The fields whose start value is None, False or 0 (what the compiled type starts with;
        ``new_request`` sets the others)."""
        self.charged = 0  # body bytes this request holds against ctx.budget (_limits)
        self.is_write = False
        self.admitted = False
        self.node: "Node | None" = None
        self.reroutes = 0        # budgets, each spent by its own cause (_exstate)
        self.pooled_retries = 0
        self.replays = 0
        self.hold_timer: asyncio.TimerHandle | None = None
        self.held_at = 0.0
        self.was_held = False
        # request body
        self.up: "UpstreamConn | None" = None
        self.spare: "UpstreamConn | None" = None  # connected, not yet used (see route)
        self.pending_len = 0
        self.body_done = False
        self.sent_all = False
        self.replay: list[bytes] | None = None
        self.replay_len = 0
        # response
        self.status = 0
        self.resp_chunked = False
        self.resp_eof = False
        self.resp_keep = False
        self.resp_buf: list[bytes] | None = None
        self.resp_held: Any = None
        self.interim = False
        self.no_resp_body = False
        # == (state is TUNNEL), kept as a slot: UpstreamConn.data_received (and _orphan's
        # Orphan, a class attribute there) reads it on every upstream read; a property is a call
        self.tunnel = False
        self.deadline = 0.0
        self.uout: list[bytes] | None = None  # batched writes to the upstream (within one client read)
        self.cout: list[bytes] | None = None  # batched writes to the client (within one upstream read)
        # timings (perf_counter)
        self.t0 = self.t_res = self.t_adm = self.t_up = 0.0

    def __repr__(self) -> str:
        return (f"<Request {self.state.name} {self.head.method} {self.head.url.decode('latin-1')!r} "
                f"partition={self.partition!r} epoch={self.epoch} decision={self.decision}>")

    # derived from the state, for the modules that ask (_proxy, _orphan, _trickle, _upstream)
    @property
    def done(self) -> bool:
        return self.state is DONE

    @property
    def head_sent(self) -> bool:
        """The head went upstream for the current attempt (and the exchange is not over)."""
        s = self.state
        return s is FORWARDING or s is RESPONDING or s is TUNNEL

    # ------------------------------------------------------------ routing
    def dispatch(self) -> None:
        """Called once the head is parsed and this is the connection's current request."""
        self.t0 = _clock() if _COMPILED else perf_counter()  # noqa: F821 (compiled: a C read of the clock, exchange.pxd)
        ctx = self.ctx
        hd = self.head
        if hd.bad is not None:
            status, title, detail = hd.bad
            return self.fail(status, "bad-request", title, detail, outcome="bad_request")
        router = ctx.router
        fast = router.fast_header
        if fast is not None:  # one header rule, no route rules: a dict lookup for a key seen before
            raw = hd.keyh.get(fast)
            if raw is not None:
                if raw == router.fast_raw:  # the key of the request before: compiled, a memcmp
                    hit = router.fast_hit
                else:
                    hit = router.fast_cache.get(raw)
                    if hit is not None:
                        router.fast_raw = raw
                        router.fast_hit = hit
                if hit is not None:
                    self.is_write = hd.method not in _SAFE
                    self.partition = hit
                    return self.route()
        path, _, query = hd.url.partition(b"?")
        spath = path.decode("latin-1") if hd.rpath is None else hd.rpath
        self.is_write = router.is_write(hd.method, spath)
        try:
            self.partition = router.partition(spath, query, hd.keyh, hd.host)
        except KeyError400 as exc:
            return self.fail(400, "bad-partition-key", exc.title, exc.detail, outcome="bad_request", rule=exc.rule)
        self.route()

    def route(self) -> None:
        """Resolve the partition, get an upstream connection and — for a write — admit it
        immediately before forwarding (DESIGN §7). Re-run on hold wake-ups and retries
        (the edges into ROUTING in ``_exstate.TRANSITIONS``)."""
        self.state = step(self.state, ROUTING)
        ctx = self.ctx
        node = resolve(self, ctx)
        if node is None:
            return
        pool = ctx.pool  # compiled: an UpstreamPool here (exchange.pxd), its idle stack a C read
        up = self.spare
        if up is not None:
            self.spare = None
            if up.key != node.key or up.closed:  # connected for a placement that has since moved
                pool.put(up)
                up = None
        if up is None:
            stack = pool.idle.get(node.key)  # pool.get_idle(), inlined for the usual hit
            if stack:
                up = stack.pop()
                if _gone(up):
                    up = pool.get_idle(node.key)
            if up is None:  # connect first, then resolve and admit again: admission stays next to the send
                self.state = step(self.state, CONNECTING)
                ctx.loop.create_task(self._connect(node))
                return
        if self.is_write:
            wg = ctx.gate  # compiled: a WriteGate (exchange.pxd), admit is a C call
            r = wg.admit(self.partition, self.epoch)
            self.t_adm = _clock() if _COMPILED else perf_counter()  # noqa: F821
            if not r.admitted:
                ctx.pool.put(up)
                ctx.stats.decision(self.phase, "reject", r.reason.value)
                return self.rejected(r)
            dec = ctx.stats.decisions  # ctx.stats.decision(), inlined
            key = _ADMIT_KEYS.get(self.phase)  # one key per phase: the same tuple as the one in ``dec``
            if key is None:                    # matches by identity, not hashed and compared per field
                key = _ADMIT_KEYS[self.phase] = (self.phase, "admit", "none")  # (a handful of phases)
            dec[key] = dec.get(key, 0) + 1
            self.admitted = True
            self.decision = "admit"
            if self.hold_timer is not None:
                ctx.hold.release(self)
        else:
            self.decision = "read"
        self.attach(up)

    def rejected(self, r: Reject) -> None:
        ctx = self.ctx
        if r.reason is RejectReason.STALE_EPOCH and self.reroutes < REROUTE_MAX:
            self.reroutes += 1  # the table moved between resolve and admit: resolve again
            return self.route()
        if (r.reason in _HOLDABLE and self.conn.transport is not None and ctx.budget.may_hold(self)
                and ctx.hold.try_hold(self)):
            self.state = step(self.state, HELD)
            self.was_held = True
            self.decision = "held"
            self.conn.pause(P_HELD)
            return
        if self.hold_timer is not None:
            ctx.hold.release(self)
        self.reject_503(r)

    def reject_503(self, r: Reject) -> None:
        if r.phase is None and self.phase in _PHASES:  # the phase this request was resolved in
            r = Reject(r.reason, r.current, _PHASES[self.phase])
        self.decision = "reject"
        body, extra = H.stale_epoch_problem(
            r, self.partition, f"writes to partition {self.partition!r} are refused ({r.reason.value}); retry")
        self.answer(503, body, "rejected", extra)

    def hold_wake(self) -> None:
        if self.state is not HELD:
            return
        if client_gone(self.conn.transport):
            # A held write's connection is not read (paused), so a client that gave
            # up was never noticed: do not send its write now — it may be retrying.
            self.abort("error")
            return
        self.route()

    def hold_expired(self) -> None:
        if self.state is DONE:  # (it may be CONNECTING after a wake: the hold's bound still answers it)
            return
        st = self.ctx.source.state(self.partition)
        at = None if st is None else self.ctx.source.lookup(self.partition)
        reason = RejectReason.CUTOVER if st is not None and st[0].phase.value == "cutover" else RejectReason.STALE_EPOCH
        if not self.ctx.gate.writable():
            reason = RejectReason.FAIL_CLOSED   # held because the sidecar fails closed, and it still does
        self.reject_503(Reject(reason, at, None if st is None else st[0].phase))

    async def _connect(self, node: "Node") -> None:
        try:
            up = await self.ctx.pool.connect(node.key)
        except asyncio.TimeoutError:
            return self.fail(502, "upstream-connect-timeout", "upstream connect timed out",
                             f"no connection to node {node.name!r} within {self.ctx.pool.connect_timeout:g}s",
                             outcome="timeout")
        except OSError as exc:
            return self.fail(502, "upstream-unavailable", "upstream unavailable",
                             f"cannot connect to node {node.name!r}: {exc.strerror or exc}", outcome="upstream_error")
        if self.state is not CONNECTING:  # the client left meanwhile
            self.ctx.pool.put(up)
            return
        self.spare = up
        self.route()

def new_request(ctx: "ProxyContext", conn: "ClientConn") -> Request:
    """The one way a ``Request`` is made (the maker pattern, docs/compiled-build.md "Object makers"):
    compiled, the type's ``tp_new`` and C field stores, no call
    through the type and ``__init__``'s argument parsing (bench_exchange_instr, "Stop 39"). The
    allocation already holds None / False / 0 / 0.0 in every field, so only the fields with
    another start value are set here; the plain build sets the rest in ``_zero``."""
    r = Request.__new__(Request)
    r.ctx = ctx
    r.conn = conn
    r.ctransport = conn.transport
    r.head = new_head()  # filled by the client connection's parser callbacks
    r.pending = []
    r.keep_alive = True  # this connection carries another request after this one (from head.keep)
    # routing and gating
    r.partition = ""
    r.phase = "none"
    r.epoch = 0
    r.placement = ""
    r.decision = "-"
    r.state = NEW  # the life cycle (_exstate): changed only through step()
    if not _COMPILED:
        r._zero()
    return r


#: the template ``conn.py`` makes each exchange through (``MAKER.make``: a C call through
#: exbase.pxd's ``ClientExchange``, where conn.pxd cannot cimport this module's ``new_request``)
MAKER = Request.__new__(Request)
