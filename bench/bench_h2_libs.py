"""CPU per gRPC-unary-shaped exchange through each HTTP/2 library's server-side state machine.

    python bench/bench_h2_libs.py [--calls 20000] [--rounds 5]

Candidates (issue 30): pure-Python ``h2`` (what the sidecar uses today), ``jh2`` (an h2 fork
with a compiled HPACK and buffer, same API under another package name) and ``ngh2`` (Cython
over libnghttp2, its own sans-I/O API). A candidate not installed is skipped with one line.

The exchange, per call, with in-memory byte buffers and no sockets: the server is fed the
client's bytes for one call (HEADERS with :method POST, :path, content-type application/grpc,
te: trailers, x-partition-key; DATA with one 64-byte length-prefixed message and END_STREAM;
plus the client's WINDOW_UPDATEs for the server's earlier DATA), turns them into events, and
answers HEADERS (:status 200, content-type), DATA (the message back) and trailers
(grpc-status 0, grpc-message), acknowledging the received bytes so its window refills, then
serialises its output. The client side is recorded once beforehand (pure h2 client against a
pure h2 server) and replayed byte for byte to every library, so the client's cost is in no
figure. The sidecar's h2 settings are used for h2 and jh2 (header_encoding None, inbound
validation on, outbound validation and normalisation off).

``eng-h2`` and ``eng-ngh2`` are the sidecar's own engine adapters (sidecar/proxy/h2/engine_*.py)
over h2 and ngh2, serving the same calls through the ``on_*`` events the sidecar's
connections get: the ngh2 row against the eng-ngh2 row is what adapting costs.

Rounds are interleaved (h2, jh2, ngh2, h2, ...); each figure is the median over rounds of
process CPU time (time.process_time) per call, and the ratio to h2 in the same round's median.
Then each library is fed hostile request headers (CR/LF/NUL in a value, an uppercase name,
connection-specific fields, a content-length that the body contradicts, ...) and the table says
whether it rejects each (stream reset or connection error) or passes it through to the
application; what it passes through would have to be checked by hand before it could replace h2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from pathlib import Path

MSG = b"\x00" + (59).to_bytes(4, "big") + b"m" * 59  # one length-prefixed gRPC message, 64 bytes
REQ = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/kv.v1.Store/Put"),
       (b":authority", b"127.0.0.1:8080"), (b"content-type", b"application/grpc"), (b"te", b"trailers"),
       (b"x-partition-key", b"t1"), (b"user-agent", b"grpc-python/1.85")]
RESP = [(b":status", b"200"), (b"content-type", b"application/grpc")]
TRAILERS = [(b"grpc-status", b"0"), (b"grpc-message", b"")]


def h2_family(mod: str):
    """A server driver for ``h2`` or an API-compatible fork (jh2): same calls, other package."""
    conn_m = importlib.import_module(f"{mod}.connection")
    cfg_m = importlib.import_module(f"{mod}.config")
    ev = importlib.import_module(f"{mod}.events")
    req_t, data_t = ev.RequestReceived, ev.DataReceived

    def new():
        c = conn_m.H2Connection(cfg_m.H2Configuration(client_side=False, header_encoding=None,
                                                      validate_outbound_headers=False,
                                                      normalize_outbound_headers=False))
        c.initiate_connection()
        c.data_to_send()
        return c

    def serve(c, chunk: bytes) -> bytes:
        for e in c.receive_data(chunk):
            t = type(e)
            if t is data_t:
                c.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                if e.stream_ended is not None:
                    sid = e.stream_id
                    c.send_headers(sid, RESP)
                    c.send_data(sid, e.data)
                    c.send_headers(sid, TRAILERS, end_stream=True)
        return c.data_to_send()

    def verdict(chunk: bytes) -> str:
        c = new()
        try:
            events = c.receive_data(chunk)
        except Exception as exc:  # noqa: BLE001 - the library's own error type is the answer
            return f"rejected ({type(exc).__name__})"
        names = [type(e).__name__ for e in events]
        if "StreamReset" in names:
            return "rejected (stream reset)"
        if "ConnectionTerminated" in names:
            return "rejected (GOAWAY)"
        if any(t is req_t for t in map(type, events)):
            return "PASSED to the application"
        return "no request event: " + ",".join(names)

    return new, serve, verdict


def ngh2_driver():
    import ngh2

    def new():
        c = ngh2.Connection(ngh2.Role.SERVER)
        c.initiate_connection()
        c.data_to_send()
        c.events()
        return c

    data_t = ngh2.DataReceived

    def serve(c, chunk: bytes) -> bytes:
        c.receive_data(chunk)
        for e in c.events():
            if type(e) is data_t and e.end_stream:
                sid = e.stream_id
                c.send_response(sid, RESP)
                c.send_data(sid, e.data)
                c.send_trailers(sid, TRAILERS)
        return c.data_to_send()

    def verdict(chunk: bytes) -> str:
        c = new()
        try:
            c.receive_data(chunk)
            out = c.data_to_send()
            events = c.events()
        except Exception as exc:  # noqa: BLE001
            return f"rejected ({type(exc).__name__})"
        names = [type(e).__name__ for e in events]
        if "StreamReset" in names or b"\x03" in frame_types(out):
            return "rejected (stream reset)"
        if "ConnectionClosed" in names or b"\x07" in frame_types(out):
            return "rejected (GOAWAY)"
        if "RequestReceived" in names:
            return "PASSED to the application"
        return "no request event: " + ",".join(names)

    return new, serve, verdict


def engine_driver(name: str):
    """The sidecar's own engine adapter (sidecar/proxy/h2/engine_h2.py / engine_ng.py) over the
    library: what adapting costs, events delivered as ``on_*`` calls (as ``conn.py`` gets them)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from sidecar.proxy.h2 import engine

    before = engine.use("h2" if name == "h2" else "ngh2")
    eng = engine.get()
    engine.use(before)

    class Owner:
        def __init__(self) -> None:
            self.c = eng.server(self, {3: 100, 4: 65535, 6: 16384, 2: 0})
            self.heads = 0
            self.resets = 0

        def on_head(self, sid, headers, ended):
            self.heads += 1

        def on_data(self, sid, data, flow_len):
            self.c.ack(flow_len, sid)
            self.last = data

        def on_end(self, sid):
            c = self.c
            c.respond(sid, RESP, False)
            c.send_data(sid, self.last)
            c.trailers(sid, TRAILERS)

        def on_trailers(self, sid, headers):
            pass

        def on_reset(self, sid, code, by_peer):
            self.resets += 1

        def on_goaway(self, last):
            pass

        def on_window(self, sid):
            pass

    def new():
        o = Owner()
        o.c.initiate(1 << 20)
        o.c.data_to_send()
        return o

    def serve(o, chunk: bytes) -> bytes:
        o.c.receive(chunk)
        return o.c.data_to_send()

    def verdict(chunk: bytes) -> str:
        o = new()
        try:
            o.c.receive(chunk)
            out = o.c.data_to_send()
        except engine.ProtocolError:
            return "rejected (GOAWAY)"
        if o.resets or b"\x03" in frame_types(out):
            return "rejected (stream reset)"
        if b"\x07" in frame_types(out):
            return "rejected (GOAWAY)"
        return "PASSED to the application" if o.heads else "no request event"

    return new, serve, verdict


def frame_types(out: bytes) -> bytes:
    """The type byte of each frame in a server's output (RST_STREAM 0x3, GOAWAY 0x7)."""
    types, i = bytearray(), 0
    while i + 9 <= len(out):
        n = int.from_bytes(out[i:i + 3], "big")
        types.append(out[i + 3])
        i += 9 + n
    return bytes(types)


def record_client(calls: int) -> tuple[bytes, list[bytes]]:
    """The client's bytes: the preface+SETTINGS, then one chunk per call, against a pure h2 server."""
    from h2.config import H2Configuration
    from h2.connection import H2Connection

    cli = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    cli.initiate_connection()
    new, serve, _ = h2_family("h2")
    srv = new()
    preface = cli.data_to_send()
    cli.receive_data(serve(srv, preface))
    chunks = []
    for _ in range(calls):
        sid = cli.get_next_available_stream_id()
        cli.send_headers(sid, REQ)
        cli.send_data(sid, MSG, end_stream=True)
        chunk = cli.data_to_send()
        chunks.append(chunk)
        for e in cli.receive_data(serve(srv, chunk)):
            if type(e).__name__ == "DataReceived":
                cli.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
    # the client's WINDOW_UPDATEs and SETTINGS ack for call i's answer go out with call i+1
    return preface, [chunks[0]] + [c for c in chunks[1:]]


def hostile_inputs() -> dict[str, bytes]:
    """Client bytes (preface, SETTINGS, one HEADERS [+DATA]) carrying one hostile request each."""
    from hpack import Encoder
    from hyperframe.frame import DataFrame, HeadersFrame, SettingsFrame

    def req(headers, body: bytes | None = None) -> bytes:
        hf = HeadersFrame(1)
        hf.data = Encoder().encode(headers)
        hf.flags.add("END_HEADERS")
        if body is None:
            hf.flags.add("END_STREAM")
        out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize() + hf.serialize()
        if body is not None:
            df = DataFrame(1)
            df.data = body
            df.flags.add("END_STREAM")
            out += df.serialize()
        return out

    base = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/p"), (b":authority", b"a")]
    return {
        "control (valid request)": req(base + [(b"x-ok", b"1")], b"hello"),
        "CR/LF in a value": req(base + [(b"x-a", b"1\r\nx-b: 2")], b""),
        "NUL in a value": req(base + [(b"x-a", b"1\x002")], b""),
        "leading space in a value": req(base + [(b"x-a", b" 1")], b""),
        "uppercase name": req(base + [(b"X-Upper", b"1")], b""),
        "space in a name": req(base + [(b"x a", b"1")], b""),
        "connection: keep-alive": req(base + [(b"connection", b"keep-alive")], b""),
        "transfer-encoding: chunked": req(base + [(b"transfer-encoding", b"chunked")], b""),
        "te: gzip (not trailers)": req(base + [(b"te", b"gzip")], b""),
        "content-length 10, body 5": req(base + [(b"content-length", b"10")], b"hello"),
        "missing :path": req([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a")]),
        "pseudo-header after a regular one": req([(b":method", b"GET"), (b"x-a", b"1"), (b":path", b"/"),
                                                  (b":scheme", b"http")]),
        "duplicate :path": req(base + [(b":path", b"/q")]),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=20000, help="calls per library per round (one connection)")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    libs = {}
    for name, make in (("h2", lambda: h2_family("h2")), ("jh2", lambda: h2_family("jh2")), ("ngh2", ngh2_driver),
                       ("eng-h2", lambda: engine_driver("h2")), ("eng-ngh2", lambda: engine_driver("ngh2"))):
        try:
            libs[name] = make()
        except ImportError:
            print(f"bench_h2_libs: skipping {name}: not installed (pip install {name})", file=sys.stderr)
    if "h2" not in libs:
        print("bench_h2_libs: h2 (the baseline) is not installed", file=sys.stderr)
        return 2
    preface, chunks = record_client(a.calls)
    per: dict[str, list[float]] = {n: [] for n in libs}
    sizes: dict[str, int] = {}
    for _ in range(a.rounds):
        for name, (new, serve, _) in libs.items():
            c = new()
            serve(c, preface)
            out = 0
            t0 = time.process_time()
            for chunk in chunks:
                out += len(serve(c, chunk))
            per[name].append((time.process_time() - t0) / a.calls * 1e6)
            sizes[name] = out // a.calls
    load = os.getloadavg()[0]
    print(f"{a.calls} calls x {a.rounds} interleaved rounds, one connection each; server side only; "
          f"{os.cpu_count()} CPUs, load average {load:.1f}")
    print(f"{'library':8s} {'version':9s} {'µs/call':>8s} {'x h2':>6s} {'rounds x h2':>24s} {'bytes out/call':>15s}")
    for name in libs:
        lib = {"eng-h2": "h2", "eng-ngh2": "ngh2"}.get(name, name)
        version = getattr(importlib.import_module(lib), "__version__", "?")
        ratios = [x / b for x, b in zip(per[name], per["h2"])]
        print(f"{name:8s} {version:9s} {statistics.median(per[name]):8.1f} "
              f"{statistics.median(per[name]) / statistics.median(per['h2']):6.2f} "
              f"{' '.join(f'{r:.2f}' for r in ratios):>24s} {sizes[name]:15d}")
    print("\nhostile request headers (server side, default inbound validation):")
    hostile = hostile_inputs()
    print(f"{'input':36s} " + " ".join(f"{n:28s}" for n in libs))
    for what, chunk in hostile.items():
        print(f"{what:36s} " + " ".join(f"{libs[n][2](chunk):28s}" for n in libs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
