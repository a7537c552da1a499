"""The sidecar's libnghttp2 binding (``engine_nghttp2.pyx``) against the ngh2 adapter
(``engine_ng.py``), with no sockets: a client and a server connection of one engine, bytes moved
between them by hand, the owner's events recorded. The same calls give the same events on both
(engine.py's interface, its semantics included): a unary call with a body and trailers, a 1xx
before the answer, the peer's reset, an early answer before its NO_ERROR reset, GOAWAY, a header
list over the limit (our GOAWAY ENHANCE_YOUR_CALM), ``window`` less the queued bytes,
``head_pending`` over a header block cut anywhere, the peer's SETTINGS.

One difference, on purpose: a reset by the peer reaches the owner once (``on_reset(..., True)``);
engine_ng passes ngh2's StreamClosed after it as a second ``on_reset(..., False)`` that every owner
ignores (the stream is gone by then): ``_norm`` drops that echo.
"""

from __future__ import annotations

import importlib.util

import pytest

import sidecar.proxy.h2.server  # noqa: F401  (first: the data path's modules in their import order)
from sidecar.proxy.h2 import engine
from sidecar.proxy.h2.conn import H2Base
from sidecar.proxy.h2.engine import Code, ProtocolError, Setting

if engine._nghttp2_status() != "ok" or importlib.util.find_spec("ngh2") is None:
    pytest.skip("needs the libnghttp2 binding built and ngh2 installed", allow_module_level=True)

SERVER = {Setting.MAX_CONCURRENT_STREAMS: 100, Setting.INITIAL_WINDOW_SIZE: 65535,
          Setting.MAX_HEADER_LIST_SIZE: 8192, Setting.ENABLE_PUSH: 0}
CLIENT = {Setting.INITIAL_WINDOW_SIZE: 65535, Setting.ENABLE_PUSH: 0, Setting.MAX_CONCURRENT_STREAMS: 100}
REQ = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"node"), (b":path", b"/kv.v1.Store/Put"),
       (b"content-type", b"application/grpc"), (b"te", b"trailers")]


class Rec(H2Base):
    """An owner that records what the engine delivers (no transport: bytes are moved by ``Pair``)."""

    def __init__(self) -> None:   # (H2Base's own needs a loop: nothing here uses one)
        self.log: list[tuple] = []

    def on_head(self, sid, headers, ended):
        self.log.append(("head", sid, [tuple(f) for f in headers], bool(ended)))

    def on_data(self, sid, data, flow_len):
        if self.log and self.log[-1][0] == "data" and self.log[-1][1] == sid:  # (ngh2: a frame; the binding: a chunk)
            self.log[-1] = ("data", sid, self.log[-1][2] + bytes(data), self.log[-1][3] + flow_len)
        else:
            self.log.append(("data", sid, bytes(data), flow_len))

    def on_end(self, sid):
        self.log.append(("end", sid))

    def on_trailers(self, sid, headers):
        self.log.append(("trailers", sid, [tuple(f) for f in headers]))

    def on_reset(self, sid, code, by_peer):
        self.log.append(("reset", sid, int(code), bool(by_peer)))

    def on_goaway(self, last_sid):
        self.log.append(("goaway", last_sid))

    def on_window(self, sid):
        self.log.append(("window", sid))


class Pair:
    """A client and a server connection of engine ``name``; ``run`` moves bytes until both are quiet."""

    def __init__(self, name: str, server_settings: dict = SERVER) -> None:
        mod = engine._load(name)
        self.cr, self.sr = Rec(), Rec()
        self.c = mod.client(self.cr, dict(CLIENT))
        self.s = mod.server(self.sr, dict(server_settings))
        self.c.initiate(100 * 65535)
        self.s.initiate(100 * 65535)
        self.wire: list[tuple[str, bytes]] = []
        self.run()

    def run(self) -> None:
        for _ in range(20):   # (a connection the engine closed reads no more: H2Base closes its transport)
            a = self.c.data_to_send()
            if a and not self.s.closed:
                self.wire.append(("c", a))
                self.s.receive(a)
            b = self.s.data_to_send()
            if b and not self.c.closed:
                self.wire.append(("s", b))
                self.c.receive(b)
            if not a and not b:
                return

    def frames(self, side: str) -> list[tuple[int, int, int]]:
        """(type, flags, stream) of every frame ``side`` wrote (the client's preface skipped)."""
        out = []
        for who, data in self.wire:
            if who != side:
                continue
            if data.startswith(b"PRI * HTTP/2.0"):
                data = data[24:]
            i = 0
            while i + 9 <= len(data):
                n = int.from_bytes(data[i:i + 3], "big")
                out.append((data[i + 3], data[i + 4], int.from_bytes(data[i + 5:i + 9], "big") & 0x7FFFFFFF))
                i += 9 + n
        return out


def _norm(log: list[tuple]) -> list[tuple]:
    """engine_ng's echo of a peer's reset dropped (module doc); ``window`` events after SETTINGS
    counted once in a row (both engines pump on each, the count per read is not the interface)."""
    out: list[tuple] = []
    for ev in log:
        if ev[0] == "reset" and not ev[3] and out and out[-1][:3] == ev[:3] and out[-1][3]:
            continue
        if ev[0] == "window" and out and out[-1] == ev:
            continue
        out.append(ev)
    return out


def _both(scenario) -> None:
    got = {name: scenario(name) for name in ("ngh2", "nghttp2")}
    assert _norm(got["nghttp2"]) == _norm(got["ngh2"])


def _unary(name: str, trailers: bool = True) -> list:
    p = Pair(name)
    sid = p.c.request(REQ, False)
    assert p.c.window(sid) == 65535            # (a fresh request: the peer's initial window)
    p.c.send_data(sid, b"x" * 1000)
    assert p.c.window(sid) == 65535 - 1000     # queued bytes count against it
    p.c.send_data(sid, b"y" * 10, True)
    p.run()
    assert p.c.window(sid) == 65535 - 1010
    p.s.respond(sid, [(b":status", b"200"), (b"content-type", b"application/grpc")], False)
    p.s.send_data(sid, b"answer")
    if trailers:
        p.s.trailers(sid, [(b"grpc-status", b"0"), (b"grpc-message", b"")])
    else:
        p.s.end_stream(sid)
    p.run()
    assert p.s.ack(1010, sid) in (True, False) and p.c.ack(6, sid) in (True, False)
    with pytest.raises(engine._load(name).Error):
        p.s.send_data(sid, b"late")      # the stream is over: what H2Base.pump catches
    return p.cr.log + [("--",)] + p.sr.log


def test_a_unary_call_with_a_body_and_trailers():
    _both(_unary)
    _both(lambda n: _unary(n, trailers=False))


def test_a_1xx_before_the_answer_is_not_an_answer():
    """A node's ``100 Continue`` (written raw: the interface has no call for it) is no answer: the
    owner hears only the final head."""
    def run(name):
        p = Pair(name)
        sid = p.c.request(REQ, True)
        p.run()
        hpack_100 = b"\x08\x03100"   # literal, not indexed: name :status (static index 8), value "100"
        p.c.receive(len(hpack_100).to_bytes(3, "big") + b"\x01\x04" + sid.to_bytes(4, "big") + hpack_100)
        p.s.respond(sid, [(b":status", b"200")], True)
        p.run()
        assert [e for e in p.cr.log if e[0] == "head"] == [("head", sid, [(b":status", b"200")], True)], p.cr.log
        return p.cr.log
    _both(run)


def test_the_peers_reset_and_an_early_answer_before_its_no_error_reset():
    def run(name):
        p = Pair(name)
        a = p.c.request(REQ, False)
        b = p.c.request(REQ, False)
        p.c.send_data(a, b"part")
        p.run()
        p.c.reset_stream(a, Code.CANCEL)
        # b: answered before its body ended, then told to stop sending (RFC 9113 §8.1)
        p.s.respond(b, [(b":status", b"200"), (b"grpc-status", b"5")], True)
        p.s.reset_stream(b, 0)
        p.run()
        kinds = [(t, f & 1, sid) for t, f, sid in p.frames("s") if sid == b]
        assert kinds.index((1, 1, b)) < kinds.index((3, 0, b))   # HEADERS before RST_STREAM on the wire
        return p.cr.log + [("--",)] + p.sr.log
    _both(run)


def test_goaway_both_ways_and_the_connection_ends():
    def run(name):
        p = Pair(name)
        sid = p.c.request(REQ, True)
        p.run()
        assert p.s.shutdown() == b""
        p.run()
        p.s.respond(sid, [(b":status", b"200")], True)
        p.run()
        p.c.close_connection(0, b"")
        p.run()
        return p.cr.log + [("--",)] + p.sr.log + [("closed", p.c.closed, p.s.closed)]
    _both(run)


def test_a_header_list_over_the_limit_is_our_goaway_enhance_your_calm():
    def run(name):
        p = Pair(name, {**SERVER, Setting.MAX_HEADER_LIST_SIZE: 1000})
        sid = p.c.request(REQ + [(b"x-big", b"v" * 5000)], True)
        data = p.c.data_to_send()
        with pytest.raises(ProtocolError):
            p.s.receive(data)
        out = p.s.data_to_send()
        assert out[3] == 7 and int.from_bytes(out[13:17], "big") == Code.ENHANCE_YOUR_CALM, out.hex()
        assert p.s.closed and p.s.data_to_send() == b""
        p.s.receive(b"\x00" * 9)   # (dead: ignored)
        return p.sr.log + [("sid", sid)]
    _both(run)


def test_head_pending_walks_a_block_cut_anywhere():
    def run(name):
        p = Pair(name)
        cr = Rec()
        s = engine._load(name).server(cr, dict(SERVER))
        s.initiate(65535)
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")
        # HEADERS without END_HEADERS, then a CONTINUATION with it (an HPACK block split in two)
        block = b"\x83\x86\x84\x41\x04node"   # :method POST, :scheme http, :path /, :authority node
        frames = (len(block[:3]).to_bytes(3, "big") + b"\x01\x05" + (1).to_bytes(4, "big") + block[:3]
                  + len(block[3:]).to_bytes(3, "big") + b"\x09\x04" + (1).to_bytes(4, "big") + block[3:])
        wire = preface + frames
        seen = []
        for i in range(0, len(wire), 5):   # (cut every 5 bytes: frame headers split too)
            s.receive(wire[i:i + 5])
            seen.append(s.head_pending())
        return [("pending", seen)] + cr.log
    _both(run)


def test_the_peers_settings_and_its_window():
    def run(name):
        p = Pair(name, {**SERVER, Setting.MAX_CONCURRENT_STREAMS: 7, Setting.INITIAL_WINDOW_SIZE: 1000})
        sid = p.c.request(REQ, False)
        w = p.c.window(sid)
        p.c.send_data(sid, b"z" * 1500)
        p.run()
        return p.cr.log + [("max", p.c.peer_max_streams(), "window", w, p.c.window(sid))]
    _both(run)


def test_no_request_once_the_node_said_goaway():
    """A request after the node's GOAWAY is refused at once (libnghttp2 would take it and drop it)."""
    def run(name):
        p = Pair(name)
        p.s.close_connection(0, b"")
        p.run()
        with pytest.raises(engine._load(name).Error):
            p.c.request(REQ, True)
        return p.cr.log
    _both(run)


def test_the_request_id_is_never_indexed_and_repeated_fields_are_the_same_objects():
    """A request id (new in every request) is sent as a never-indexed literal by both (so it no
    longer churns the encoder's dynamic table: tests/test_h2_never_indexed.py covers every engine);
    the binding's own economy, with ngh2 as the control (it does not): the fields HPACK's decoder
    gives from its tables come back as the same tuples (``Rec`` keeps them: ``tuple()`` of a tuple
    is that tuple)."""
    from hpack import Decoder

    def run(name):
        p = Pair(name)
        blocks, heads = [], []
        for rid in (b"5f2a-1", b"5f2a-2"):
            sid = p.c.request(REQ + [(b"x-request-id", rid)], True)
            start = len(p.wire)
            p.run()
            data = next(d for who, d in p.wire[start:] if who == "c")
            if data.startswith(b"PRI * HTTP/2.0"):
                data = data[24:]
            i = 0
            while i + 9 <= len(data):   # the HEADERS frame's block
                n = int.from_bytes(data[i:i + 3], "big")
                if data[i + 3] == 1:
                    blocks.append(data[i + 9:i + 9 + n])
                i += 9 + n
            heads.append(next(ev[2] for ev in p.sr.log if ev[0] == "head" and ev[1] == sid))
        dec = Decoder()
        fields = [dec.decode(b, raw=True) for b in blocks]
        assert tuple(fields[1][-1]) == (b"x-request-id", b"5f2a-2")
        return fields[1][-1].indexable, [x is y for x, y in zip(*heads)]

    indexable, same = run("nghttp2")
    assert not indexable
    # the fields from HPACK's tables are kept in a small two-way cache by buffer address: most come
    # back as the same objects (not all are promised: a slot may have been taken meanwhile); :path
    # never (libnghttp2's encoder does not index it), the never-indexed request id never
    assert any(same[:-1]) and not same[-1] and not same[[f[0] for f in REQ].index(b":path")]
    indexable, same = run("ngh2")
    assert not indexable and not any(same)
