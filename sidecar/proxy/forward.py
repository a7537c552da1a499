"""The request's way upstream, one half of the HTTP/1.1 exchange (``exchange.Request`` derives
from ``ForwardMixin``; ``response.ResponseMixin`` is the other half, ``exchange.py`` the life
cycle, routing and gating): the forwarded head (``attach``: written once the write was admitted,
DESIGN §7), the body as it arrives or as it was parked, the batched upstream writes (one
syscall per client read: ``uout``, ``flush_up``) and the body kept to replay a refused write
(``keep_for_replay``, ``replay_request``, within ``--retry-body-max`` and the body budget).
The exchange's fields live in the base type (``response.pxd``): every half reads them as C fields.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Any

from . import httpmsg as H
from . import limits as _limits
from .limits import keep_for_replay as _keep_for_replay, uncharge as _uncharge
from .exstate import DONE, FORWARDING, P_BUFFERED, P_HELD_OR_BUFFERED, P_UPSTREAM_FULL, RESPONDING, step
from .response import ResponseMixin
from .upstream import UpstreamConn

if TYPE_CHECKING:
    from .upstream import UpstreamConn

PENDING_HIGH = 256 * 1024
#: this module runs compiled (an extension module's file is not the ``.py``): the C clock and join
_COMPILED = not __file__.endswith(".py")


def _transport(up: Any) -> Any:
    """``up.transport``: compiled, a C read for an ``UpstreamConn`` (the usual one; an h2c node's
    ``H2Bridge`` is not one and stays a look-up), where the untyped ``up`` made it a Python attribute
    look-up per use (~130 instructions: bench_exchange_instr, docs/compiled-build.md "Stop 39")."""
    if isinstance(up, UpstreamConn):
        uc = up
        return uc.transport
    return up.transport


class ForwardMixin(ResponseMixin):
    __slots__ = ()

    def attach(self, up: "UpstreamConn") -> None:
        self.state = step(self.state, FORWARDING)
        self.up = up
        # compiled, an UpstreamConn's fields are C writes and reads here (an h2c node's bridge is not one)
        uc = up if isinstance(up, UpstreamConn) else None
        if uc is not None:
            uc.exchange = self
        else:
            up.exchange = self
        node = self.node
        ctx = self.ctx
        hd = self.head
        parts = [hd.method_b, b" ", hd.url, b" HTTP/1.1\r\nHost: ", node.netloc, b"\r\n"]
        parts.extend(hd.kept(hd.ctoks) if hd.ctoks else hd.fwd)  # (flat lines, or one block: ReqHead.fwd)
        # the usual lines one append per piece: compiled, each is a C call, where ``parts += (…)``
        # built a tuple and extended through the number protocol (~150 instructions a line)
        if hd.xff is None:
            parts.append(self.conn.xff_line)
        else:
            parts += (b"X-Forwarded-For: ", hd.xff, b", ", self.conn.peer, b"\r\n")
        if hd.xfp is None:
            parts.append(b"X-Forwarded-Proto: http\r\n")
        if hd.xfh is None and hd.host is not None:
            parts.append(b"X-Forwarded-Host: ")
            parts.append(hd.host)
            parts.append(b"\r\n")
        if not hd.rid_given:
            hd.rid = rid = ctx.request_id()  # (compiled: a C call, context.pxd)
            parts.append(b"X-Request-Id: ")
            parts.append(rid)
            parts.append(b"\r\n")
        parts.append(ctx.stamp(self.partition, self.placement, self.epoch))  # (compiled: a C call, context.pxd)
        if hd.upgrade:
            parts += (b"Connection: upgrade\r\nUpgrade: ", hd.upgrade, b"\r\n")
        elif hd.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        elif hd.clen is not None:
            parts.append(b"Content-Length: ")
            parts.append(hd.clen)
            parts.append(b"\r\n")
        if ctx.tracer is not None:  # this attempt's traceparent (sidecar/trace)
            parts.append(ctx.tracer.attempt(self))
        parts.append(b"\r\n")
        if self.is_write and ctx.retry_body_max and not hd.upgrade and self.replay is not self.pending:
            if self.replay:
                self.uncharge(self.replay_len)
            self.replay = []
            self.replay_len = 0
        self.t_up = _clock() if _COMPILED else perf_counter()  # noqa: F821
        self.deadline = ctx.now + ctx.read_timeout
        ctx.waiting.add(self)
        # head and the body bytes at hand leave in one send; compiled, joined in C (httpmsg.pxd's
        # join_bytes, cimported as _cjoin: a name only the compiled module has)
        self.uout = [_cjoin(parts) if _COMPILED else b"".join(parts)]  # noqa: F821
        if self.conn.wpaused:
            up.transport.pause_reading()
        if hd.expect and not self.body_done and not self.pending:
            self.ctransport.write(H.CONTINUE_100)
        if self.pending and not hd.upgrade:  # an upgrade's bytes wait for the 101 (upstream_upgraded)
            pending, self.pending, self.pending_len = self.pending, [], 0
            if pending is self.replay:  # a replay (replay_request): the kept bytes go again, still kept
                for data in pending:
                    self._uw(H.chunk(data) if hd.chunked else data)
            else:  # parked bytes leave the budget; the ones kept for replay are charged again (_send)
                self.uncharge(sum(map(len, pending)))
                for data in pending:
                    self._send(data)
        if self.conn.flags & P_HELD_OR_BUFFERED:
            self.conn.resume(P_HELD_OR_BUFFERED)
        if self.body_done:
            self._send_end()
        if uc.paused if uc is not None else up.paused:
            self.conn.pause(P_UPSTREAM_FULL)
        if not self.conn.in_feed:
            self.flush_up()

    def flush_up(self) -> None:
        """Send what was batched for the upstream (one syscall per client read)."""
        out = self.uout
        self.uout = None
        up = self.up
        if out and up is not None:
            _transport(up).write(out[0] if len(out) == 1 else _cjoin(out) if _COMPILED else b"".join(out))  # noqa: F821

    def _uw(self, data: bytes) -> None:
        out = self.uout
        if out is not None:
            out.append(data)
        elif self.conn.in_feed:
            self.uout = [data]
        else:
            self.up.transport.write(data)

    def _send(self, data: bytes) -> None:
        if self.head.upgrade:
            self.flush_up()
            self.up.transport.write(data)
            return
        self._uw(H.chunk(data) if self.head.chunked else data)
        if self.replay is not None:
            self.keep_for_replay(data)

    def keep_for_replay(self, data: bytes) -> None:
        """Keep ``data`` to replay the write, within ``--retry-body-max`` and the body budget."""
        _keep_for_replay(self, data)

    def uncharge(self, n: int) -> None:
        _uncharge(self, n)

    def _send_end(self) -> None:
        if self.head.chunked:
            self._uw(H.LAST_CHUNK)
        self.sent_all = True

    def client_body(self, data: bytes) -> None:
        s = self.state
        if s is DONE:
            return
        hd = self.head
        if hd.upgrade:  # bytes after an upgrade head: they reach the upstream only after its 101
            return self._park(data)
        if self.up is not None and (s is FORWARDING or s is RESPONDING):
            if hd.upgrade or hd.chunked:
                return self._send(data)
            out = self.uout  # self._send() → self._uw(), inlined for a plain body
            if out is not None:
                out.append(data)
            elif self.conn.in_feed:
                self.uout = [data]
            else:
                self.up.transport.write(data)
            if self.replay is not None:
                self.keep_for_replay(data)
        else:
            self._park(data)

    def _park(self, data: bytes) -> None:
        """Buffer body bytes until they can be sent (charged to the body budget)."""
        n = len(data)
        self.pending.append(data)
        self.pending_len += n
        _limits.charge(self, n)
        if self.pending_len > PENDING_HIGH:
            self.conn.pause(P_BUFFERED)

    def client_body_end(self) -> None:
        self.body_done = True
        s = self.state
        if self.up is not None and (s is FORWARDING or s is RESPONDING):
            if self.head.chunked:  # self._send_end(), inlined
                self._uw(H.LAST_CHUNK)
            self.sent_all = True

    def upstream_paused(self, paused: bool) -> None:
        if paused:
            self.conn.pause(P_UPSTREAM_FULL)
        else:
            self.conn.resume(P_UPSTREAM_FULL)

    def replay_request(self) -> bool:
        """Send the kept body again (``pending`` is the ``replay`` list itself); False if it was not
        kept whole. The bytes stay kept and charged once: the budget was checked when they were
        first kept, so another request's parked bytes cannot push a held write's body out of the
        budget between two of its attempts (which then let that other request be held in its place)."""
        if self.replay is None or not self.body_done:
            return False
        self.pending = self.replay
        self.pending_len = self.replay_len
        self.sent_all = False
        return True
