"""Every HTTP/2 engine sends the request id's fields (``engine.NEVER_INDEXED``: ``x-request-id``,
``traceparent``) as never-indexed HPACK literals (RFC 7541 §6.2.3), in requests, responses and
trailers alike, and every other field as it did: the binding by its C test (``_nv_flags``), the
ngh2 adapter by marking them ``NeverIndexedHeader`` (``engine_ng._marked``), h2 through
``hpack.CachingEncoder`` (DESIGN.md, HTTP/2 engine). No sockets: a client and a server connection
of one engine, bytes moved between them by hand, each direction's header blocks decoded with
``hpack.Decoder`` (which reports the representation: ``indexable`` False for never-indexed)."""

from __future__ import annotations

from typing import Any

from hpack import Decoder

import sidecar.proxy.h2.server  # noqa: F401  (first: the data path's modules in their import order)
from sidecar.proxy.h2 import engine
from sidecar.proxy.h2.conn import H2Base
from sidecar.proxy.h2.engine import NEVER_INDEXED, Setting

from tests._h2_engines import h2_engine  # noqa: F401  (fixture: once per engine, skipped where one does not run)

SERVER = {Setting.MAX_CONCURRENT_STREAMS: 100, Setting.INITIAL_WINDOW_SIZE: 65535,
          Setting.MAX_HEADER_LIST_SIZE: 8192, Setting.ENABLE_PUSH: 0}
CLIENT = {Setting.INITIAL_WINDOW_SIZE: 65535, Setting.ENABLE_PUSH: 0, Setting.MAX_CONCURRENT_STREAMS: 100}
REQ = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"node"), (b":path", b"/kv.v1.Store/Put"),
       (b"content-type", b"application/grpc"), (b"te", b"trailers"), (b"x-partition", b"p1")]
TP = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Rec(H2Base):
    """An owner that records the heads (no transport: bytes are moved by hand)."""

    def __init__(self) -> None:   # (H2Base's own needs a loop: nothing here uses one)
        self.heads: list[int] = []

    def on_head(self, sid: int, headers: Any, ended: bool) -> None:
        self.heads.append(sid)

    def on_data(self, sid: int, data: Any, flow_len: int) -> None:
        pass

    def on_end(self, sid: int) -> None:
        pass

    def on_trailers(self, sid: int, headers: Any) -> None:
        pass

    def on_reset(self, sid: int, code: int, by_peer: bool) -> None:
        pass

    def on_goaway(self, last_sid: int) -> None:
        pass

    def on_window(self, sid: int) -> None:
        pass


def _blocks(data: bytes) -> list[bytes]:
    """The header blocks of the HEADERS frames in ``data`` (the client's preface skipped)."""
    if data.startswith(b"PRI * HTTP/2.0"):
        data = data[24:]
    out, i = [], 0
    while i + 9 <= len(data):
        n = int.from_bytes(data[i:i + 3], "big")
        if data[i + 3] == 1:
            assert data[i + 4] & 0x4, "one frame per block here (END_HEADERS)"
            out.append(data[i + 9:i + 9 + n])
        i += 9 + n
    return out


def test_the_request_id_fields_are_never_indexed_by_every_engine(h2_engine: str) -> None:
    mod = engine._load(h2_engine)
    cr, sr = Rec(), Rec()
    c, s = mod.client(cr, dict(CLIENT)), mod.server(sr, dict(SERVER))
    c.initiate(65535)
    s.initiate(65535)
    sent: dict[str, list[bytes]] = {"c": [], "s": []}

    def run() -> None:
        for _ in range(10):
            a, b = c.data_to_send(), s.data_to_send()
            if a:
                sent["c"] += _blocks(a)
                s.receive(a)
            if b:
                sent["s"] += _blocks(b)
                c.receive(b)
            if not a and not b:
                return

    run()
    fields: dict[str, list] = {"c": [], "s": []}
    for n in (1, 2):  # twice: an indexed field the second time would be found in the table
        rid = b"5f2a-%d" % n
        c.request(REQ + [(b"x-request-id", rid), (b"traceparent", TP)], False)
        run()
        sid = sr.heads[-1]
        s.respond(sid, [(b":status", b"200"), (b"content-type", b"application/grpc"), (b"x-request-id", rid)], False)
        s.trailers(sid, [(b"grpc-status", b"0"), (b"traceparent", TP)])
        c.end_stream(sid)
        run()
    for side in ("c", "s"):
        dec = Decoder()
        for block in sent[side]:
            fields[side] += dec.decode(block, raw=True)
    assert len(sent["c"]) == 2 and len(sent["s"]) == 4
    for side in ("c", "s"):
        never = {bytes(f[0]) for f in fields[side] if not f.indexable}
        marked = {bytes(f[0]) for f in fields[side] if bytes(f[0]) in NEVER_INDEXED}
        assert never == marked, (side, never)  # the request id's fields never indexed, all others as before
    assert {bytes(f[0]) for f in fields["c"]} >= NEVER_INDEXED and {bytes(f[0]) for f in fields["s"]} >= NEVER_INDEXED
