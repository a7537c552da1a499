"""The response half of an HTTP/2 stream (mixed into ``_h2_stream.H2Exchange``):
relaying the upstream's head, DATA and trailers to the client; spotting the
application's refusal (the 503 stale-epoch problem, or the gate interceptor's
gRPC ABORTED) and retrying it; and the proxy's own answers — problem documents,
or for gRPC Trailers-Only responses (gRFC A6) with the problem as trailing
metadata — and the stream's end (``finish``: in-flight count, stats, access log).
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from .. import httpmsg as H
from ..exfields import ExchangeFields
from ..exstate import APP_REPLAY_MAX, POOLED_RETRY_MAX
from ..limits import uncharge

# compiled: time.perf_counter's clock read in C (response.pxd's _clock, as exchange.py's), no call
_COMPILED = not __file__.endswith(".py")

RESP_BUF_MAX = 64 * 1024
#: the proxy's own problems as gRPC status codes
_GRPC_CODE = {400: 3, 404: 5, 405: 12, 431: 8, 502: 14, 503: 14, 504: 4}


def grpc_message(text: str) -> bytes:
    """``grpc-message`` is percent-encoded UTF-8."""
    out = bytearray()
    for b in text.encode():
        out += b"%%%02X" % b if b < 0x20 or b > 0x7E or b == 0x25 else bytes((b,))
    return bytes(out)


def is_grpc_refusal(headers: list[tuple[bytes, bytes]]) -> bool:
    """The gate interceptor's refusal: ABORTED with the ``x-epochgate-reason`` trailer."""
    status = reason = None
    for k, v in headers:
        if k == b"grpc-status":
            status = v
        elif k == b"x-epochgate-reason":
            reason = v
    return status == b"10" and reason is not None


class H2ResponseMixin(ExchangeFields):
    __slots__ = ()

    # -- the request half's events (``H2Exchange`` in stream.py answers them): declared on this base
    # so that the client connection calls them as C methods in the Cython build (server.pxd types
    # its streams as this base: stream.pxd's type would be a cimport cycle)
    def make(self, ctx: Any, sconn: Any, sid: int, headers: Any, ended: bool) -> Any:
        """A new stream (called on stream.py's template ``MAKER``: docs/compiled-build.md "Object makers")."""
        raise NotImplementedError

    def dispatch(self) -> None:
        raise NotImplementedError

    def client_data(self, data: bytes) -> None:
        raise NotImplementedError

    def client_end(self, trailers: list[tuple[bytes, bytes]] | None) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ upstream → client
    def resp_head(self: Any, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        if self.done:
            return
        status = 0
        ctype = None
        for k, v in headers:
            if k == b":status":
                status = 200 if v == b"200" else int(v)  # (compiled: a bytes compare, not int()'s call: ~500)
            elif k == b"content-type":
                ctype = v
        self.status = status
        self.ctx.waiting.discard(self)  # from here on the stream may last (gRPC streams): no read deadline
        if self.admitted and self._replayable():
            if self.grpc and status == 200:
                if ended and is_grpc_refusal(headers) and self._retry_app_reject():
                    return
                if not ended:
                    self.resp_held = headers
                    return
            elif status == 503 and ctype is not None and ctype.startswith(b"application/problem+json") and not ended:
                self.resp_held = headers
                self.resp_buf = []
                return
        self._send_head(headers, ended)
        if ended:
            self.resp_ended = True
            self.finish("ok")

    def _send_head(self: Any, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        self.resp_started = True
        s = self.sconn
        if not ended:  # (an ended stream has nothing more to send: no outbox to leave behind)
            s.open_outbox(self.sid, self.leg.ack_resp if self.leg is not None else None)
        try:
            s.h2.respond(self.sid, headers, ended)
        except Exception as exc:  # an upstream header the engine refuses to send (e.g. connection-specific)
            s.reset(self.sid, 2)
            self.ctx.loop.call_exception_handler({"message": "h2 response head refused", "exception": exc})
        s.mark()

    def _relay_held(self: Any) -> None:
        head, buf = self.resp_held, self.resp_buf
        self.resp_held = self.resp_buf = None
        self._send_head(head, False)
        for data in buf or ():
            self.sconn.send_data(self.sid, data)

    def resp_data(self: Any, data: bytes) -> None:
        if self.done:
            if self.leg is not None:
                self.leg.ack_resp(len(data))
            return
        if self.resp_held is not None:
            if self.resp_buf is None:  # gRPC: a message follows the head: not a refusal
                self._relay_held()
            else:
                self.resp_buf.append(data)
                if sum(map(len, self.resp_buf)) > RESP_BUF_MAX:
                    self._relay_held()
                return
        self.sconn.send_data(self.sid, data)

    def resp_trailers(self: Any, trailers: list[tuple[bytes, bytes]]) -> None:
        if self.done:
            return
        if self.resp_held is not None:
            if self.grpc and is_grpc_refusal(trailers) and self._retry_app_reject():
                return
            self._relay_held()
        self.resp_ended = True
        self.sconn.send_end(self.sid, trailers)
        self.finish("ok")

    def resp_end(self: Any) -> None:
        if self.done or self.resp_ended:
            return
        if self.resp_held is not None:
            if self.resp_buf is not None:
                body = b"".join(self.resp_buf)
                ctype = dict(self.resp_held).get(b"content-type")
                if H.is_stale_epoch_problem(self.status, ctype, body) and self._retry_app_reject():
                    return
            self._relay_held()
        if not self.resp_started:
            return self.fail(502, "bad-upstream-response", "invalid upstream response",
                             "the upstream ended the stream without a response", outcome="upstream_error")
        self.resp_ended = True
        self.sconn.send_end(self.sid)
        self.finish("ok")

    def _replayable(self: Any) -> bool:
        if not self.body_done or self.trailers:
            return False
        if self.replay is None:  # not kept (a read, or over --retry-body-max / --body-budget)
            return self.sent == 0
        if self.grpc:  # exactly one length-prefixed message: a unary (or server-streaming) request
            replay = self.replay
            first = replay[0] if replay else b""
            body = first if len(replay) <= 1 and type(first) is bytes else b"".join(replay)
            n = len(body)
            # the big-endian length after the flag byte (compiled: four C byte reads, response.pxd;
            # int.from_bytes on a slice was a method call and a bytes object: ~1,260 instructions)
            return n >= 5 and (body[1] << 24 | body[2] << 16 | body[3] << 8 | body[4]) + 5 == n
        return True

    def _retry_app_reject(self: Any) -> bool:
        """The application refused at its commit point: nothing committed. Retry (DESIGN §7)."""
        ctx = self.ctx
        self.replays += 1
        st = ctx.source.state(self.partition)
        moved = st is not None and st[1] != self.epoch and self.replays <= APP_REPLAY_MAX
        if not moved and not (ctx.budget.may_hold(self)
                              and ctx.hold.try_hold(self, retry_in=min(0.005 * 2 ** min(self.replays, 6), 0.25))):
            return False
        ctx.stats.decision(self.phase, "reject", "stale_epoch")
        self._drop_leg()
        ctx.waiting.discard(self)
        self.admitted = False
        ctx.gate.done(self.partition, self.epoch)
        self.resp_held = self.resp_buf = None
        self.status = 0
        # the kept body goes again and stays kept, charged once (stream.attach: ``pending is replay``)
        self.pending = [] if self.replay is None else self.replay
        self.head_sent = False
        if moved:
            self.route()
        else:
            self.was_held = True
            self.decision = "held"
        return True

    # ------------------------------------------------------------ failures
    def up_lost(self: Any, never_processed: bool, msg: str) -> None:
        """The upstream stream/connection went away (``never_processed``: GOAWAY/REFUSED_STREAM
        before the upstream looked at it)."""
        if self.done:
            return
        self.leg = None
        if not self.resp_started and self.resp_held is None:
            if never_processed and self.pooled_retries < POOLED_RETRY_MAX and self._replayable():
                self.pooled_retries += 1
                if self.admitted:
                    self.admitted = False
                    self.ctx.gate.done(self.partition, self.epoch)
                self.ctx.waiting.discard(self)
                self.pending = [] if self.replay is None else self.replay  # sent again, still kept
                return self.route()
            return self.fail(502, "upstream-closed", "upstream closed the stream",
                             f"node {self.placement!r}: {msg}", outcome="upstream_error")
        self.abort("upstream_error")

    def connect_failed(self: Any, slug: str, title: str, detail: str, outcome: str) -> None:
        self.fail(502, slug, title, detail, outcome=outcome)

    def timed_out(self: Any) -> None:
        if not self.done:
            self.fail(504, "upstream-timeout", "upstream timed out",
                      f"node {self.placement!r} did not answer within {self.ctx.read_timeout:g}s", outcome="timeout")

    def _drop_leg(self: Any) -> None:
        leg, self.leg = self.leg, None
        if leg is not None:
            leg.cancel()

    def abort(self: Any, outcome: str, code: int = 2) -> None:
        """Mid-response failure: reset the client's stream (INTERNAL_ERROR)."""
        self._drop_leg()
        self.sconn.reset(self.sid, code)
        self.finish(outcome)

    def fail(self: Any, status: int, slug: str, title: str, detail: str, *, outcome: str, **extra: Any) -> None:
        if self.done:
            return
        if self.grpc:
            md = [(b"x-epochgate-type", b"urn:epochgate:problem:" + slug.encode())]
            return self.grpc_answer(_GRPC_CODE.get(status, 2), detail, md, outcome, http_status=status)
        self.answer(status, H.problem_body(status, slug, title, detail, **extra), outcome)

    def answer(self: Any, status: int, body: bytes, outcome: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        if self.done:
            return
        if self.resp_started:
            return self.abort(outcome)
        self._drop_leg()
        self.status = status
        head = [(b":status", b"%d" % status), (b"content-type", b"application/problem+json"),
                (b"content-length", b"%d" % len(body))]
        if self.rid is not None:
            head.append((b"x-request-id", self.rid))
        self._own_response(head + (extra or []), body, outcome)

    def grpc_answer(self: Any, code: int, message: str, md: list[tuple[bytes, bytes]], outcome: str,
                    http_status: int = 503) -> None:
        """Trailers-Only (gRFC A6: a retryable refusal must not send response headers first)."""
        if self.done:
            return
        if self.resp_started:
            return self.abort(outcome)
        self._drop_leg()
        self.status = http_status
        head = [(b":status", b"200"), (b"content-type", b"application/grpc"), (b"grpc-status", b"%d" % code),
                (b"grpc-message", grpc_message(message))] + md
        self._own_response(head, None, outcome)

    def _own_response(self: Any, head: list[tuple[bytes, bytes]], body: bytes | None, outcome: str) -> None:
        s = self.sconn
        if s.transport is not None:
            self.resp_started = True
            if body is not None:
                s.open_outbox(self.sid, None)
            try:
                s.h2.respond(self.sid, head, body is None)
                if body is not None:
                    s.send_data(self.sid, body)
                    s.send_end(self.sid)
            except Exception:  # the client reset the stream meanwhile
                s.out.pop(self.sid, None)
            s.mark()
        self.finish(outcome)

    def finish(self: Any, outcome: str) -> None:
        """The stream is over (answered, failed or reset): the gate's in-flight count, stats, the access log."""
        if self.done:
            return
        self.done = True
        ctx = self.ctx
        ctx.waiting.discard(self)
        if self.spare is not None:
            self.spare.unused()
            self.spare = None
        if self.hold_timer is not None:
            ctx.hold.release(self)
        if self.admitted:
            self.admitted = False
            wg = ctx.gate  # compiled: a WriteGate (response.pxd), done is a C call
            wg.done(self.partition, self.epoch)
        if self.charged:
            uncharge(self, self.charged)
            self.pending = []
            self.replay = None
        if self.was_held and outcome == "ok":
            outcome = "held_ok"
        if self.to_ack:  # request bytes never sent (answered early): hand the window back
            self.req_sent(self.to_ack)
        t = _clock() if _COMPILED else perf_counter()  # noqa: F821 (compiled: a C read, response.pxd)
        ctx.stats.record(self.is_write, self.phase, outcome, self.t0, self.t_res, self.t_adm, self.t_up, t)
        if ctx.tracer is not None:  # spans built later, off this path (sidecar/trace)
            ctx.tracer.done(self, outcome, t)
        access = ctx.access
        if access.enabled:
            node = self.node
            access.write(self.sconn.peer_s, self.method, self.path, self.partition, self.phase, self.epoch,
                         self.decision, self.status or 499, t - self.t_up if self.t_up else 0.0,
                         t - self.t0 if self.t0 else 0.0, self.rid, node.name if node is not None else "")
        s = self.sconn
        if not self.body_done and s.transport is not None and self.sid not in s.out:
            s.reset(self.sid, 0)  # answered before the request ended: stop the client's upload (NO_ERROR)
        s.stream_done(self.sid)
