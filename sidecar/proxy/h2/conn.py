"""What the client-side and upstream-side HTTP/2 connections share: an HTTP/2
engine's connection (``engine.py``: libnghttp2 or ``h2``) on an asyncio transport, per-stream send queues paced by flow
control, and batched writes.

Memory is bounded by flow control, never by trust: received DATA is
acknowledged (its window handed back to the sender) only once the bytes have
left on the other side of the proxy, so a stream never buffers more than its
receive window (``--h2-window``) in each direction, and a connection no more
than its open streams' windows. The connection-level window is opened to
``streams × window`` so that one stream whose reader is slow keeps only its own
window and never stalls the others.

Sending: ``send_data`` appends to the stream's ``Outbox``; at the next flush
(end of the current read, or of the loop pass) ``pump`` moves as much as the
peer's windows allow into the engine (a body's last bytes and its end go as one
DATA frame) and reports the byte count to the
outbox's ``on_sent`` (which acknowledges the source). While the transport's
write buffer is above its high-water mark nothing more is pumped. Frames are
written once per read (the frames a read queues on its own connection and on the
other leg's: ``ReadTurn``) or, queued outside any read, once per event-loop pass
(``mark``) — not once per call.

Reading: ``data_received`` feeds the engine, which calls the subclass's ``on_*``
methods (``engine.py`` lists them), with writes held until the read's end
(``in_read``), then one flush; a protocol error goes to the subclass's
``protocol_error``. DATA (``deliver``), window updates and changed settings
(``on_window``) are handled the same on both sides.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from .. import httpmsg as H
from . import engine
from .engine import ProtocolError

#: abort a connection whose peer lets this much unsent traffic pile up: DATA stops at the
#: transport's high-water mark (+ ``PUMP_MAX``), so what grows past it is control traffic
#: (PING/SETTINGS acks are queued whatever the flow control) and response heads (issue 26)
MAX_WRITE_BUFFER = 2 << 20
#: DATA handed to the engine per flush; the rest waits for the write, so a peer that does not read
#: pauses pumping at the high-water mark instead of after every open stream's window
#: (4 streams of a client that never read: 4.2 MiB per connection before, see bench_h2_abuse;
#: a 32 MiB download through an h2c node: 0.476 s with the cap, 0.479 s without, median of 3)
PUMP_MAX = 64 * 1024


class ReadTurn:
    """The connections whose frames were queued while another HTTP/2 connection's read was being
    handled (a client's request queued on the upstream connection, an upstream's answer on the
    client's): each is written once that read ends, not one loop pass later (``mark``). At a low
    rate a call's request and its answer no longer wait for the other reads of the same loop pass
    (h2load's arrivals come in bursts of a few calls per millisecond tick: the first call's
    request waited for the next ones' processing), and no ``call_soon`` handle is made per leg."""

    __slots__ = ("depth", "marked")

    def __init__(self) -> None:
        self.depth = 0                  # reads being handled (nested: a flush can close a stream)
        self.marked: list[Any] = []     # connections to flush when the outermost read ends

    def done(self) -> None:
        marked, self.marked = self.marked, []
        for i in range(len(marked)):  # (compiled: C reads, no enumerate and its tuples)
            c = marked[i]
            try:
                c.flush()
            except BaseException:
                for rest in marked[i + 1:]:  # (never left with flush_pending and nothing scheduled)
                    rest.loop.call_soon(rest.flush)
                raise


_turn = ReadTurn()


class Outbox:
    """Bytes waiting for a stream's send window, and how the stream ends. The chunks are a list
    read from ``head`` on (``pump``: what was sent is dropped once it is over half the list, so each
    chunk is moved O(1) times — a peer's one-byte DATA frames cost no more per byte than a deque's
    popleft), not a deque: compiled, a list's append, length and items are C calls and reads where a
    deque's were Python method calls (deque(), append, popleft, truth: ~900 instructions per gRPC
    call over both legs, bench_grpc_instr --lone: see the commit)."""

    __slots__ = ("chunks", "head", "end", "trailers", "on_sent")

    def __init__(self, on_sent: Callable[[int], None] | None) -> None:
        self.chunks: list[Any] = []
        self.head = 0   # chunks[:head] were sent (None)
        self.end = False
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.on_sent = on_sent


class Engine:
    """What an engine's connection offers (engine.py lists it): the base of both adapters, so that
    in the Cython build the connections below call libnghttp2's adapter through C, not by Python
    attribute look-up and call (conn.pxd; bench_grpc_instr --lone: see the commit)."""

    __slots__ = ()

    def receive(self, data: bytes) -> None:
        raise NotImplementedError

    def data_to_send(self) -> bytes:
        raise NotImplementedError

    def head_pending(self) -> int:
        raise NotImplementedError

    def request(self, headers: list[tuple[bytes, bytes]], end: bool) -> int:
        raise NotImplementedError

    def respond(self, sid: int, headers: Any, end: bool) -> None:
        raise NotImplementedError

    def trailers(self, sid: int, headers: Any) -> None:
        raise NotImplementedError

    def send_data(self, sid: int, data: Any, end: bool = False) -> None:
        raise NotImplementedError

    def end_stream(self, sid: int) -> None:
        raise NotImplementedError

    def window(self, sid: int) -> int:
        raise NotImplementedError

    def reset_stream(self, sid: int, code: int) -> None:
        raise NotImplementedError

    def ack(self, n: int, sid: int) -> bool:
        raise NotImplementedError

    def close_connection(self, code: int, debug: bytes) -> None:
        raise NotImplementedError

    def shutdown(self) -> bytes:
        raise NotImplementedError

    def peer_max_streams(self) -> int:
        raise NotImplementedError


class H2Base:
    """An engine's HTTP/2 connection on a transport; subclasses handle the events. An
    ``asyncio.Protocol`` by duck typing (no base class: an extension type in the Cython
    build, conn.pxd)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, settings: dict[int, int], client: bool, **kw: Any) -> None:
        self.loop = loop
        eng = engine.get()
        self.h2 = eng.client(self, settings) if client else eng.server(self, settings, **kw)
        self.errors = eng.Error  # what a send on a stream the peer closed meanwhile raises
        self.transport: asyncio.Transport | None = None
        self.out: dict[int, Outbox] = {}
        self.wpaused = False
        self.flush_pending = False
        self.in_read = False
        self.dirty: dict[int, None] = {}  # streams with queued sends: pumped at flush (one pass per read)
        self.unflushed = 0  # DATA bytes handed to h2 since the last write (PUMP_MAX)

    def initiate(self, conn_window: int) -> None:
        """Our SETTINGS and the preface; the connection window opened by ``conn_window``
        (module doc: one slow stream keeps only its own window)."""
        self.h2.initiate(conn_window)

    # ------------------------------------------------------------ reading
    def data_received(self, data: bytes) -> None:
        self.read_started()
        self.in_read = True
        turn = _turn
        turn.depth += 1
        try:
            try:
                self.h2.receive(data)  # → on_head / on_data / on_end / ... (engine.py)
            except ProtocolError as exc:
                # GOAWAY is queued with the error code (protocol error, flow control, oversized
                # header list): the subclass sends it and closes.
                self.in_read = False
                self.protocol_error(exc)
                return
            finally:
                self.in_read = False
            self.flush()
        finally:
            turn.depth -= 1
            if not turn.depth and turn.marked:
                turn.done()  # the other legs' frames this read queued (ReadTurn)

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself (asyncio.Protocol's default)

    def read_started(self) -> None:
        """Bytes arrived (before they are parsed)."""

    def protocol_error(self, exc: ProtocolError) -> None:
        raise NotImplementedError

    def deliver(self, sid: int, data: bytes, flow_len: int, reader: bool) -> bool:
        """Received DATA: True when its bytes go to the stream's reader (the caller hands them
        over), which acknowledges them once they left the proxy (``ack``). What nobody will forward
        is acknowledged now: the padding (``h2``; libnghttp2 consumes it itself), and the whole frame
        when the stream has no reader (``reader`` False). (A flag, not the reader's bound method:
        the caller calls the reader itself, in the Cython build as a C method — bench_grpc_instr:
        see the commit.)"""
        if not reader:
            self.h2.ack(flow_len, sid)
            return False
        pad = flow_len - len(data)
        if pad:
            self.h2.ack(pad, sid)
        return len(data) > 0

    # -- events (engine.py): each engine calls these on its handler; the subclasses answer them.
    # Declared here so that libnghttp2's adapter calls them as C methods of a typed handler
    # (engine_ng.pxd: ``NgConn.h`` is an ``H2Base``), not by Python attribute look-up and call
    # (bench_grpc_instr --lone: see the commit)
    def on_head(self, sid: int, headers: Any, ended: bool) -> None:
        raise NotImplementedError

    def on_data(self, sid: int, data: bytes, flow_len: int) -> None:
        raise NotImplementedError

    def on_end(self, sid: int) -> None:
        raise NotImplementedError

    def on_trailers(self, sid: int, headers: Any) -> None:
        raise NotImplementedError

    def on_reset(self, sid: int, code: int, by_peer: bool) -> None:
        raise NotImplementedError

    def on_goaway(self, last_sid: int) -> None:
        raise NotImplementedError

    def on_window(self, sid: int) -> None:
        """A WINDOW_UPDATE (``sid`` 0: the connection's, or changed SETTINGS): the peer may take more, so pump."""
        if sid:
            self.pump(sid)
        else:
            self.pump_all()

    # ------------------------------------------------------------ writing
    def mark(self) -> None:
        """Frames are waiting in ``h2``: write them at the end of this read (this connection's,
        or another HTTP/2 connection's being handled: ``ReadTurn``), else of this loop pass."""
        if not self.flush_pending and not self.in_read:
            self.flush_pending = True
            turn = _turn
            if turn.depth:
                turn.marked.append(self)  # written when that read ends (ReadTurn)
            else:
                self.loop.call_soon(self.flush)

    def flush(self) -> None:
        if self.dirty:
            # the pumps' ``mark`` calls are written by this flush's ``data_to_send`` below: with
            # ``flush_pending`` cleared first, each answer scheduled one more flush that found
            # nothing, an extra loop pass and zero-timeout poll per write on every HTTP/2 leg (issue 30)
            self.flush_pending = True
            dirty, self.dirty = self.dirty, {}
            try:
                for sid in dirty:
                    self.pump(sid)
            finally:
                self.flush_pending = False
        else:
            self.flush_pending = False
        t = self.transport
        data = self.h2.data_to_send()
        self.unflushed = 0
        if data and t is not None and not t.is_closing():
            t.write(data)
            # (the transport calls pause_writing from write() once its buffer passes the high-water
            # mark, far below MAX_WRITE_BUFFER: only a paused connection can be over it, so a running
            # one skips asking — one Python call less per write)
            if self.wpaused and t.get_write_buffer_size() > MAX_WRITE_BUFFER:
                t.abort()
                return
        if self.h2.closed and t is not None:  # the engine ended the connection (its GOAWAY just written)
            t.close()
            return
        if self.dirty and not self.wpaused and not self.flush_pending:  # PUMP_MAX left some: next pass
            self.flush_pending = True
            self.loop.call_soon(self.flush)

    def pause_writing(self) -> None:
        self.wpaused = True

    def resume_writing(self) -> None:
        self.wpaused = False
        self.pump_all()

    def open_outbox(self, sid: int, on_sent: Callable[[int], None] | None) -> Outbox:
        ob = self.out.get(sid)
        if ob is None:
            ob = self.out[sid] = Outbox(on_sent)
        else:
            ob.on_sent = on_sent
        return ob

    def send_data(self, sid: int, data: Any) -> None:
        ob = self.out.get(sid)
        if ob is None:
            ob = self.out[sid] = Outbox(None)
        ob.chunks.append(data)
        self.dirty[sid] = None
        self.mark()

    def send_end(self, sid: int, trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        ob = self.out.get(sid)
        if ob is None:
            ob = self.out[sid] = Outbox(None)
        ob.end = True
        ob.trailers = trailers
        self.dirty[sid] = None
        self.mark()

    def queued(self, sid: int) -> int:
        ob = self.out.get(sid)
        return 0 if ob is None else sum(map(len, ob.chunks[ob.head:]))

    def pump(self, sid: int) -> None:
        ob = self.out.get(sid)
        if ob is None or self.transport is None:
            return
        h2 = self.h2
        sent = 0
        chunks = ob.chunks
        i = ob.head
        try:
            try:
                while i < len(chunks) and not self.wpaused:
                    if self.unflushed >= PUMP_MAX:
                        self.dirty[sid] = None  # the rest after this write (flush)
                        break
                    win = h2.window(sid)
                    if win <= 0:
                        break
                    data = chunks[i]
                    n = min(win, len(data))
                    if n == len(data):
                        chunks[i] = None
                        i += 1
                        if i == len(chunks) and ob.end and not ob.trailers:  # last DATA carries END_STREAM
                            del self.out[sid]
                            ob.end = False
                            h2.send_data(sid, data, True)
                        else:
                            h2.send_data(sid, data)
                    else:
                        if not isinstance(data, memoryview):
                            data = memoryview(data)
                        h2.send_data(sid, data[:n])
                        chunks[i] = data[n:]
                    sent += n
                    self.unflushed += n
            finally:
                if i == len(chunks):
                    while chunks:  # (compiled, a C pop each: a slice delete was a generic call, ~100 more)
                        chunks.pop()
                    i = 0
                elif i > 16 and 2 * i > len(chunks):  # (each chunk moved O(1) times: Outbox)
                    del chunks[:i]
                    i = 0
                ob.head = i
            if not chunks and ob.end:
                del self.out[sid]
                if ob.trailers:
                    h2.trailers(sid, ob.trailers)
                else:
                    h2.end_stream(sid)
                self.mark()
        except self.errors:
            self.out.pop(sid, None)  # reset by the peer meanwhile: the stream's owner hears of it
            return
        if sent:
            self.mark()
            if ob.on_sent is not None:
                ob.on_sent(sent)

    def pump_all(self) -> None:
        for sid in list(self.out):
            if self.wpaused:
                break
            self.pump(sid)

    def reset(self, sid: int, code: int = 8) -> None:
        """RST_STREAM (default CANCEL); a stream already closed is left alone."""
        self.out.pop(sid, None)
        try:
            self.h2.reset_stream(sid, code)
        except self.errors:
            return
        self.mark()

    def ack(self, sid: int, n: int) -> None:
        """``n`` received bytes of ``sid`` have left the proxy: hand the window back."""
        try:
            queued = self.h2.ack(n, sid)
        except self.errors:
            return
        if queued:  # (mostly not: a flush per ack found nothing to write, an empty loop pass per call)
            self.mark()

    def set_nodelay(self) -> None:
        if self.transport is not None:
            H.set_nodelay(self.transport)
