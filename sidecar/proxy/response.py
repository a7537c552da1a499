"""The response half of a proxied request (mixed into ``_exchange.Request``).

Response heads are re-framed for the client hop (the status line carries the
standard reason phrase; parsing the upstream's costs a callback per response): hop-by-hop headers and the
ones ``Connection`` lists are dropped; a body with a ``Content-Length`` keeps
it, any other body is sent chunked to an HTTP/1.1 client (close-delimited to
an HTTP/1.0 one). ``101 Switching Protocols`` turns both connections into a
byte tunnel. An admitted write answered ``503`` with a problem document is
buffered (≤ 64 KiB) to see whether it is the application's stale-epoch
refusal: then the write is retried like a held one instead of being relayed.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Any

from . import httpmsg as H
from .exbase import ClientExchange
from .limits import uncharge as _uncharge
from .exstate import APP_REPLAY_MAX, DONE, FORWARDING, HELD, POOLED_RETRY_MAX, RESPONDING, TUNNEL, step

#: this module runs compiled (an extension module's file is not the ``.py``): ``_clock`` (response.pxd)
_COMPILED = not __file__.endswith(".py")

if TYPE_CHECKING:
    from .exchange import Request
    from .httpmsg import RespHead
    from .upstream import UpstreamConn

RESP_BUF_MAX = 64 * 1024
_STATUS_LINES: dict[int, bytes] = {}  # status → its line with the standard phrase


class ResponseMixin(ClientExchange):
    __slots__ = ()

    # ------------------------------------------------------------ upstream → client
    def on_response_head(self: "Request", head: "RespHead") -> None:
        status = head.status
        if status < 200 and status != 101:
            self.interim = True  # 100/102/103: swallowed, the final response follows
            return
        self.interim = False
        self.resp_keep = head.keep
        self.status = status
        self.deadline = self.ctx.now + self.ctx.read_timeout
        if status == 101 and not self.head.upgrade:
            return self.upstream_failed("upstream switched protocols without an upgrade request")
        if (status == 503 and self.admitted and head.ctype is not None
                and head.ctype.startswith(b"application/problem+json")
                and (self.replay is not None or not self.has_body())):
            self.resp_held = head
            self.resp_buf = []
            return
        self._write_head(head)
        # a HEAD request (_write_head's no_resp_body for a status that has a body: no second str compare)
        if self.no_resp_body and status != 204 and status != 304:
            self._end_response(reusable=False)  # httptools cannot be told to expect no body: finish here, drop the conn

    def has_body(self: "Request") -> bool:
        return self.head.has_body()

    def _write_head(self: "Request", head: "RespHead") -> None:
        """Re-frame ``head`` for the client. Its pieces (status line, the forwarded fields, the framing
        and the end) go into the client batch as they are and are joined once with the body by
        ``flush_client`` (one copy of the head, not two: bench_exchange_instr -0.4k per request)."""
        self.state = step(self.state, RESPONDING)
        rq = self.head
        status = head.status
        reason = head.reason
        if reason:
            first = None
        else:  # the usual case: the standard phrase, keyed by the bare status (no key tuple)
            first = _STATUS_LINES.get(status)
        if first is None:
            first = b"HTTP/1.1 %d %b\r\n" % (status, reason or H.reason(status))
            if not reason and len(_STATUS_LINES) < 1000:
                _STATUS_LINES[status] = first
        lines = head.lines  # flat: name, ": ", value, CRLF per header (or one block: llresp)
        if head.ctoks is not None:
            drop = head.ctoks
            kept: list[bytes] = []
            for i in range(0, len(lines), 4):
                if lines[i].lower() not in drop:
                    kept += lines[i:i + 4]
            lines = kept
        clen = head.clen
        no_body = status == 204 or status == 304 or rq.method == "HEAD"
        self.no_resp_body = no_body
        close = not self.keep_alive or (not self.body_done and rq.has_body()) or self.ctx.closing
        out = self.cout  # the client batch (one write per upstream read), else a list of our own
        parts = [] if out is None else out
        parts.append(first)
        if len(lines) == 1:
            parts.append(lines[0])  # llresp: the forwarded fields are one block
        elif lines:
            parts.extend(lines)
        if status == 101:
            parts.append(b"Connection: upgrade\r\nUpgrade: ")
            parts.append(head.upg or rq.upgrade)
            parts.append(b"\r\n")
            close = False
        elif no_body:
            if clen is not None and status != 204:
                parts.append(b"Content-Length: ")
                parts.append(clen)
                parts.append(b"\r\n")
        elif head.te is None and clen is not None:
            parts.append(b"Content-Length: ")
            parts.append(clen)
            parts.append(b"\r\n")
        else:
            self.resp_eof = head.te is None  # upstream ends this body by closing
            if rq.version == "1.1":
                parts.append(b"Transfer-Encoding: chunked\r\n")
                self.resp_chunked = True
            else:
                close = True  # HTTP/1.0 client: delimit by closing
        if rq.upgrade and status != 101:
            close = True  # the client connection was handed to the upgrade; it cannot carry another request
        if close:
            self.keep_alive = False
            parts.append(b"Connection: close\r\n\r\n")
        elif rq.version == "1.0":
            parts.append(b"Connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        if out is None:
            self.ctransport.write(_cjoin(parts) if _COMPILED else b"".join(parts))  # noqa: F821 (response.pxd)

    def on_response_body(self: "Request", data: bytes) -> None:
        if self.interim or self.state is DONE:
            return
        buf = self.resp_buf
        if buf is not None:
            buf.append(data)
            if sum(map(len, buf)) > RESP_BUF_MAX:  # too big to be a stale-epoch problem: relay it
                self._relay_held()
            return
        self.deadline = self.ctx.now + self.ctx.read_timeout
        if self.resp_chunked:
            data = H.chunk(data)
        out = self.cout  # self._cw(), inlined
        if out is not None:
            out.append(data)
        else:
            self.ctransport.write(data)

    def _cw(self: "Request", data: bytes) -> None:
        out = self.cout
        if out is not None:
            out.append(data)
        else:
            self.ctransport.write(data)

    def flush_client(self: "Request") -> None:
        """Send what was batched for the client (one syscall per upstream read)."""
        out = self.cout
        self.cout = None
        if out and self.conn.transport is not None:
            # compiled, joined in C (httpmsg.pxd join_bytes: the head's pieces and the body, ~8 items)
            self.ctransport.write(out[0] if len(out) == 1 else _cjoin(out) if _COMPILED else b"".join(out))  # noqa: F821

    def _relay_held(self: "Request") -> None:
        head = self.resp_held
        buf = self.resp_buf
        self.resp_held = self.resp_buf = None
        self._write_head(head)
        for data in buf:
            self._cw(H.chunk(data) if self.resp_chunked else data)

    def on_response_end(self: "Request") -> None:
        if self.interim:
            self.interim = False
            return
        if self.state is DONE or self.status == 101:  # 101: the parser raises HttpParserUpgrade next
            return
        if self.resp_held is not None:
            body = b"".join(self.resp_buf)
            if (H.is_stale_epoch_problem(self.status, self.resp_held.ctype, body)
                    and self._retry_after_app_reject()):
                return
            self._relay_held()
        # an upgrade answered otherwise: the upstream may still expect the other protocol — never reuse
        self._end_response(reusable=self.resp_keep and self.sent_all and not self.head.upgrade)

    def _end_response(self: "Request", reusable: bool) -> None:
        if self.resp_chunked:
            self._cw(H.LAST_CHUNK)
        up = self.up
        self.up = None
        if up is not None:
            if self.conn.wpaused and up.transport is not None:
                up.transport.resume_reading()
            # (not after a HEAD request: no_resp_body for a status that has a body, _write_head)
            up.release(reusable and not (self.no_resp_body and self.status != 204 and self.status != 304))
        self.finish("ok")

    def _retry_after_app_reject(self: "Request") -> bool:
        """The application refused at its commit point (stale epoch): nothing committed. Retry."""
        ctx = self.ctx
        if not self.replay_request() and self.has_body():
            return False
        ctx.stats.decision(self.phase, "reject", "stale_epoch")
        up = self.up
        self.up = None
        if up is not None:
            up.release(self.resp_keep)
        ctx.waiting.discard(self)
        self.admitted = False
        ctx.gate.done(self.partition, self.epoch)
        self.resp_held = self.resp_buf = None
        self.replays += 1
        st = ctx.source.state(self.partition)
        if st is not None and st[1] != self.epoch and self.replays <= APP_REPLAY_MAX:
            self.route()  # the table has already moved on
        elif ctx.budget.may_hold(self) and ctx.hold.try_hold(self, retry_in=min(0.005 * 2 ** min(self.replays, 6),
                                                                                  0.25)):
            # Our table still stands at the epoch the app refused: either the app's
            # view is behind ours (no transition of ours will come: retry on a
            # backoff timer) or ahead (our next transition wakes it sooner).
            self.state = step(self.state, HELD)
            self.was_held = True
            self.decision = "held"
        else:
            return False  # (body is gone only when replay_request succeeded; nothing was written yet)
        return True

    # ------------------------------------------------------------ upgrades, failures, timeouts
    def upstream_upgraded(self: "Request", rest: bytes) -> None:
        if self.state is DONE or self.status != 101:
            return
        up = self.up
        self.flush_client()
        self.state = step(self.state, TUNNEL)
        self.tunnel = True
        self.ctx.waiting.discard(self)
        self.conn.tunnel_to(up, self)
        if rest:
            self.ctransport.write(rest)
        pending, self.pending, self.pending_len = self.pending, [], 0
        _uncharge(self, self.charged)
        for data in pending:
            up.transport.write(data)

    def _drop_upstream(self: "Request") -> None:
        """Detach this exchange's upstream connection and close it (never reused)."""
        up = self.up
        self.up = None
        if up is not None:
            up.exchange = None
            up.close()

    def tunnel_closed(self: "Request") -> None:
        self._drop_upstream()
        self.keep_alive = False
        self.finish("ok")

    def upstream_lost(self: "Request", up: "UpstreamConn") -> None:
        s = self.state
        if s is DONE:
            return
        self.up = None
        if s is TUNNEL:
            self.tunnel_closed()
            return
        if s is FORWARDING and self.resp_held is None:
            if (up.served > 0 and self.pooled_retries < POOLED_RETRY_MAX
                    and self.head.method in ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")
                    and (not self.has_body() or self.replay_request())):
                # a pooled keep-alive connection closed under us before answering: retry on a fresh one
                self.pooled_retries += 1
                if self.admitted:
                    self.admitted = False
                    self.ctx.gate.done(self.partition, self.epoch)
                self.ctx.waiting.discard(self)
                return self.route()
            return self.fail(502, "upstream-closed", "upstream closed the connection",
                             f"node {self.placement!r} closed the connection before responding",
                             outcome="upstream_error")
        if self.resp_eof and not self.resp_held:
            if self.resp_chunked:
                self._cw(H.LAST_CHUNK)
            self.finish("ok")
            return
        self.abort("upstream_error")

    def upstream_failed(self: "Request", msg: str) -> None:
        s = self.state
        if s is DONE:
            return
        if s is RESPONDING or s is TUNNEL:
            return self.abort("upstream_error")
        self.fail(502, "bad-upstream-response", "invalid upstream response", msg, outcome="upstream_error")

    def timed_out(self: "Request") -> None:
        s = self.state
        if s is DONE:
            return
        if s is RESPONDING or s is TUNNEL:
            return self.abort("timeout")
        self.fail(504, "upstream-timeout", "upstream timed out",
                  f"node {self.placement!r} did not answer within {self.ctx.read_timeout:g}s", outcome="timeout")

    def abort(self: "Request", outcome: str) -> None:
        """Mid-response failure: the client cannot be told; cut both connections."""
        self._drop_upstream()
        self.keep_alive = False
        self.cout = None
        if self.conn.transport is not None:
            self.conn.transport.abort()
        self.finish(outcome)

    def fail(self: "Request", status: int, slug: str, title: str, detail: str, *, outcome: str, **extra: Any) -> None:
        """Answer with the proxy's own problem document (nothing sent to the client yet)."""
        if self.state is not DONE:
            self.answer(status, H.problem_body(status, slug, title, detail, **extra), outcome)

    def answer(self: "Request", status: int, body: bytes, outcome: str,
               extra: list[tuple[bytes, bytes]] | None = None) -> None:
        """Send the proxy's own problem response ``body`` and finish."""
        s = self.state
        if s is DONE:
            return
        if s is RESPONDING or s is TUNNEL:
            return self.abort(outcome)
        self._drop_upstream()
        close = ((not self.body_done and self.has_body()) or not self.keep_alive or bool(self.head.upgrade)
                 or self.ctx.closing)
        self.keep_alive = not close
        self.status = status
        if self.conn.transport is not None:
            self.ctransport.write(H.response(status, body, close=close, request_id=self.head.rid, extra=extra))
        self.finish(outcome)

    def finish(self: "Request", outcome: str) -> None:
        if self.state is DONE:
            return
        self.state = step(self.state, DONE)
        if self.charged:  # limits.uncharge itself: a C call where compiled (the method is a Python look-up)
            _uncharge(self, self.charged)
            self.pending = []
            self.replay = None
        if self.cout:
            self.flush_client()
        self.cout = None
        if self.spare is not None:
            self.ctx.pool.put(self.spare)
            self.spare = None
        ctx = self.ctx
        ctx.waiting.discard(self)
        if self.hold_timer is not None:
            ctx.hold.release(self)
        if self.admitted:
            self.admitted = False
            ctx.gate.done(self.partition, self.epoch)
        if self.was_held and outcome == "ok":
            outcome = "held_ok"
        t = _clock() if _COMPILED else perf_counter()  # noqa: F821 (compiled: response.pxd)
        t0 = self.t0
        ctx.stats.record(self.is_write, self.phase, outcome, t0, self.t_res, self.t_adm, self.t_up, t)
        if ctx.tracer is not None:  # the spans are built later, off this path (sidecar/trace)
            ctx.tracer.done(self, outcome, t)
        access = ctx.access
        if access.enabled:  # formatted here, after the response went out: a flush is then only a write (_log)
            node = self.node
            access.write(self.conn.peer_s, self.head.method, self.head.url, self.partition, self.phase, self.epoch,
                         self.decision, self.status or 499, t - self.t_up if self.t_up else 0.0,
                         t - t0 if t0 else 0.0, self.head.rid, node.name if node is not None else "")
        self.conn.request_done(self, self.keep_alive and (self.body_done or not self.has_body())
                               and not self.head.upgrade)

