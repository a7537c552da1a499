"""HTTP/2 frames leave in the loop pass that queued them, never on a timer (issue 30).

At a low request rate each HTTP/2 leg through the sidecar added ~400 µs at p50 over its HTTP/1.1
leg (``bench/bench_h2_legs.py``, docs/figures-peers.md). The suspects were a deferred write: a
flush on a timer or a later loop pass. strace showed none (the read, the upstream write, the
upstream's answer and the client write follow each other with no wait between them) and the
added latency is the sidecar's CPU per call at that rate; this guards the property that made it
so, on both engines, with a socket-free transport and a loop that only records what is scheduled:

* frames queued while a read is handled (an answer given from ``on_head``) are written before
  ``data_received`` returns, nothing scheduled;
* frames queued outside a read (the other leg's answer arriving: ``response.py`` calls ``mark``)
  are written by the one ``call_soon`` callback — the same loop pass, before the next poll —
  never by ``call_later``.
"""

from __future__ import annotations

from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, ResponseReceived, TrailersReceived

from sidecar.proxy.h2.conn import H2Base
from tests._h2_engines import h2_engine  # noqa: F401  (fixture)


class RecordingLoop:
    """Records what the connection schedules; runs nothing by itself."""

    def __init__(self) -> None:
        self.soon: list[Any] = []
        self.later: list[Any] = []

    def call_soon(self, cb: Any, *args: Any) -> None:
        self.soon.append((cb, args))

    def call_later(self, delay: float, cb: Any, *args: Any) -> None:
        self.later.append((delay, cb, args))

    def call_at(self, when: float, cb: Any, *args: Any) -> None:
        self.later.append((when, cb, args))

    def run_soon(self) -> None:
        todo, self.soon = self.soon, []
        for cb, args in todo:
            cb(*args)


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class Server(H2Base):
    """A server connection that answers each request, from ``on_head`` when ``at_once``."""

    def __init__(self, loop: RecordingLoop, at_once: bool) -> None:
        super().__init__(loop, {}, False)  # type: ignore[arg-type]
        self.transport = Transport()  # type: ignore[assignment]
        self.at_once = at_once
        self.asked: list[int] = []
        self.initiate(65535)
        self.flush()  # our SETTINGS
        self.transport.writes.clear()

    def answer(self, sid: int) -> None:
        self.h2.respond(sid, [(b":status", b"200"), (b"content-type", b"application/grpc")], False)
        self.mark()
        self.send_data(sid, b"\x00\x00\x00\x00\x02ok")
        self.send_end(sid, [(b"grpc-status", b"0")])

    def on_head(self, sid: int, headers: Any, ended: bool) -> None:
        self.asked.append(sid)
        if self.at_once:
            self.answer(sid)

    def on_data(self, sid: int, data: bytes, flow_len: int) -> None:
        self.deliver(sid, data, flow_len, None)

    def on_trailers(self, sid: int, headers: Any) -> None:
        pass

    def on_end(self, sid: int) -> None:
        pass

    def on_reset(self, sid: int, code: int, by_peer: bool) -> None:
        pass

    def on_goaway(self, last: int) -> None:
        pass

    def protocol_error(self, exc: Exception) -> None:
        raise AssertionError(f"protocol error: {exc}")


def _client() -> tuple[H2Connection, bytes]:
    c = H2Connection(H2Configuration(client_side=True))
    c.initiate_connection()
    c.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", "/kv.v1.Store/Put"),
                       ("content-type", "application/grpc"), ("te", "trailers")], end_stream=True)
    return c, c.data_to_send()


def _response(c: H2Connection, server: Server, server_settings_ack: bool = True) -> list[type]:
    kinds = [type(e) for e in c.receive_data(b"".join(server.transport.writes))]  # type: ignore[union-attr]
    return [k for k in kinds if k in (ResponseReceived, DataReceived, TrailersReceived)]


def test_an_answer_given_during_a_read_is_written_before_the_read_returns(h2_engine):
    loop = RecordingLoop()
    s = Server(loop, at_once=True)
    c, request = _client()
    s.data_received(request)
    assert s.asked == [1]
    assert loop.later == [], "a frame was put on a timer"
    assert loop.soon == [], "the read left its frames to a later callback"
    assert _response(c, s) == [ResponseReceived, DataReceived, TrailersReceived]


def test_an_answer_from_the_other_leg_is_written_in_the_same_loop_pass(h2_engine):
    loop = RecordingLoop()
    s = Server(loop, at_once=False)
    c, request = _client()
    s.data_received(request)
    s.transport.writes.clear()  # type: ignore[union-attr]  # SETTINGS ack
    s.answer(1)  # as response.py does when the upstream's answer arrives
    assert loop.later == [], "a frame was put on a timer"
    assert [cb for cb, _ in loop.soon] == [s.flush], "one flush for this pass"
    loop.run_soon()
    assert loop.soon == [] and loop.later == []
    assert len(s.transport.writes) == 1  # type: ignore[union-attr]  # one write for head, DATA, trailers
    assert _response(c, s) == [ResponseReceived, DataReceived, TrailersReceived]


def test_an_answer_queued_during_another_connections_read_is_written_when_that_read_ends(h2_engine):
    """The upstream's answer arrives as the upstream connection's read: the client connection's
    frames go out when that read returns (``ReadTurn``), with nothing scheduled — not one loop
    pass later, after the other reads of the pass (issue 30, gRPC at a low fixed rate)."""
    loop = RecordingLoop()
    client_side = Server(loop, at_once=False)
    c, request = _client()
    client_side.data_received(request)
    client_side.transport.writes.clear()  # type: ignore[union-attr]  # SETTINGS ack

    class Upstream(Server):
        def on_head(self, sid: int, headers: Any, ended: bool) -> None:
            client_side.answer(1)  # as response.py does from the upstream leg's events
            assert client_side.transport.writes == [], "written before the read ended"  # type: ignore[union-attr]

    up = Upstream(loop, at_once=False)
    _, request2 = _client()
    up.data_received(request2)
    assert loop.later == [], "a frame was put on a timer"
    assert loop.soon == [], "left to a later loop pass"
    assert len(client_side.transport.writes) == 1  # type: ignore[union-attr]  # head, DATA, trailers at once
    assert _response(c, client_side) == [ResponseReceived, DataReceived, TrailersReceived]
    client_side.mark()  # outside any read: one call_soon again
    assert [cb for cb, _ in loop.soon] == [client_side.flush]


class StuckTransport(Transport):
    """A peer that never reads: nothing drains. Like asyncio's and uvloop's transports, ``write``
    calls the protocol's ``pause_writing`` once the buffer passes the high-water mark."""

    HIGH = 1024

    def __init__(self, proto: H2Base) -> None:
        super().__init__()
        self.proto = proto
        self.size = 0
        self.paused = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.HIGH and not self.paused:
            self.paused = True
            self.proto.pause_writing()

    def get_write_buffer_size(self) -> int:
        return self.size

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


def test_a_peer_that_never_reads_while_sending_pings_is_cut_at_the_write_bound(h2_engine, monkeypatch):
    """PING ACKs are queued whatever the flow control: a peer that sends PINGs and never reads
    would grow the write buffer without end; past ``MAX_WRITE_BUFFER`` the connection is aborted
    (conn.py; issue 26). The bound is checked only once the transport paused writing (issue 30:
    one call less per write), which it always has by then."""
    from sidecar.proxy.h2 import conn

    monkeypatch.setattr(conn, "MAX_WRITE_BUFFER", 8 * 1024)
    s = Server(RecordingLoop(), at_once=False)
    t = s.transport = StuckTransport(s)  # type: ignore[assignment]
    c = H2Connection(H2Configuration(client_side=True))
    c.initiate_connection()
    s.data_received(c.data_to_send())
    for _ in range(40):  # 40 reads of 50 PINGs: 34 KiB of PING ACKs queued, were nothing cut
        for _ in range(50):
            c.ping(b"12345678")
        s.data_received(c.data_to_send())
        if t.aborted:
            break
    assert s.wpaused and t.aborted, (t.size, s.wpaused)
    assert t.size <= 8 * 1024 + 50 * 17 + 64, t.size  # cut at the first write past the bound


def test_many_small_chunks_leave_once_and_in_order_across_window_stops(h2_engine):
    """A stream's outbox of many small chunks (a peer's tiny DATA frames relayed) sent across the
    receiver's window stops: every byte once and in order, the trailers last, and what was sent
    dropped from the outbox as it goes — its read index never past half the list (conn.Outbox: a
    list read from ``head`` on, compacted, so each chunk is moved O(1) times, as a deque's popleft)."""
    loop = RecordingLoop()
    s = Server(loop, at_once=False)
    c, request = _client()
    s.data_received(request)
    s.h2.respond(1, [(b":status", b"200"), (b"content-type", b"application/grpc")], False)
    s.open_outbox(1, None)
    chunks = [bytes([i % 251]) * (1 + i % 29) for i in range(5000)]  # 75 KB: over the 65,535 window
    for chunk in chunks:
        s.send_data(1, chunk)
    s.send_end(1, [(b"grpc-status", b"0")])
    loop.run_soon()
    got = bytearray()
    ended = False
    heads = []
    for _ in range(50):
        for e in c.receive_data(b"".join(s.transport.writes)):  # type: ignore[union-attr]
            if isinstance(e, DataReceived):
                assert not ended
                got += e.data
                c.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, TrailersReceived):
                ended = True
        s.transport.writes.clear()  # type: ignore[union-attr]
        ob = s.out.get(1)
        if ob is not None:
            heads.append((ob.head, len(ob.chunks)))
            assert ob.head <= max(16, len(ob.chunks) // 2), (ob.head, len(ob.chunks))
        if ended:
            break
        s.data_received(c.data_to_send())  # the WINDOW_UPDATEs: the rest is pumped
        loop.run_soon()
    assert ended and bytes(got) == b"".join(chunks), (len(got), heads)
    assert heads, "the window never stopped the outbox: the test sent too little"
    assert 1 not in s.out
