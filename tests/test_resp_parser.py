"""The upstream response parser, both builds (issue 30): llhttp driven from C (``llresp.pyx``,
compiled build) and httptools (pure fallback) must hand ``UpstreamConn``'s exchange the same
thing for the same bytes — heads (status, keep-alive, framing, Content-Type, Connection
tokens, forwarded fields in order), body bytes, message ends, the upgrade offset, and the same
error class and text for a response they refuse — whole or fed in pieces.

Runs the real ``UpstreamConn`` of whatever build is installed with each parser in turn; the
compiled parser's cases are skipped where it is not built (the pure build), and
``test_compiled_build_uses_the_c_parser`` holds the compiled build to using it.
"""

from __future__ import annotations

import random
from typing import Any

import httptools
import pytest

import sidecar._build as build
from sidecar.proxy import upstream as U

try:
    from sidecar.proxy import llresp
except ImportError:
    llresp = None  # type: ignore[assignment]


class _Ex:
    """What an exchange sees of ``UpstreamConn``'s parser callbacks."""

    tunnel = False

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.cout: Any = None

    def flush_client(self) -> None:
        pass

    def on_response_head(self, h: Any) -> None:
        self.events.append(("head", h.status, h.keep, h.clen, h.te, h.upg, h.ctype,
                            tuple(sorted(h.ctoks)) if h.ctoks else None, tuple(h.fields())))

    def on_response_body(self, data: bytes) -> None:
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + data)
        else:
            self.events.append(("body", data))

    def on_response_end(self) -> None:
        self.events.append(("end",))

    def upstream_upgraded(self, rest: bytes) -> None:
        self.events.append(("upgraded", rest))

    def upstream_failed(self, msg: str) -> None:
        self.events.append(("failed", msg))

    def upstream_lost(self, conn: Any) -> None:
        pass


class _Transport:
    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


class _Pool:
    def forget(self, conn: Any) -> None:
        pass


PARSERS = ["httptools", "llresp"]


def _run(which: str, chunks: list[bytes]) -> list[tuple[Any, ...]]:
    if which == "llresp" and llresp is None:
        pytest.skip("the compiled response parser is not built here (pure build)")
    conn = U.UpstreamConn(_Pool(), ("127.0.0.1", 1))
    conn.transport = _Transport()
    conn.parser = httptools.HttpResponseParser(conn) if which == "httptools" else llresp.RespParser(conn)
    ex = _Ex()
    conn.exchange = ex
    for c in chunks:
        if conn.closed or any(e[0] in ("failed", "upgraded") for e in ex.events):
            break
        conn.data_received(c)
    return ex.events


def _both(raw: bytes, pieces: int | None = None) -> list[tuple[Any, ...]]:
    """The events for ``raw`` fed whole, then in ``pieces``-byte reads, through each parser: all equal."""
    split = [raw] if pieces is None else [raw[i:i + pieces] for i in range(0, len(raw), pieces)]
    a, b = _run("httptools", split), _run("llresp", split)
    assert a == b, (raw, pieces)
    return a


TRAILERS = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-Trailer: t1\r\nSet-Cookie: s=1\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-Next: n\r\n\r\nb")
NGINX = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 05 Dec 2026 20:30:00 GMT\r\n"
         b"Content-Type: application/octet-stream\r\nContent-Length: 5\r\nLast-Modified: Sat, 05 Dec 2026 19:00:00 GMT\r\n"
         b"Connection: keep-alive\r\nETag: \"6751f0b0-400\"\r\nAccept-Ranges: bytes\r\n\r\nhello")
CASES = {
    "nginx": NGINX,
    "two on one connection": NGINX + b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\nX-A: 1\r\n\r\nno",
    "mixed-case names": b"HTTP/1.1 200 OK\r\nCoNtEnT-TyPe: text/plain\r\ncontent-LENGTH: 2\r\nKeep-Alive: timeout=5\r\n\r\nok",
    "chunked with trailers": TRAILERS,
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-B: 2\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    "te list": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n",
    "connection close": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
    "connection tokens": (b"HTTP/1.1 200 OK\r\nConnection: X-Hop, keep-alive\r\nX-Hop: 1\r\nX-Kept: 2\r\n"
                          b"Content-Type: a/b\r\nContent-Length: 0\r\n\r\n"),
    "http/1.0 no length": b"HTTP/1.0 200 OK\r\nX-C: 3\r\n\r\nuntil close",
    "interim then final": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
    "no content": b"HTTP/1.1 204 No Content\r\nX-D: 4\r\n\r\n",
    "not modified": b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 10\r\n\r\n",
    "upgrade": b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x02hi",
    "empty value": b"HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Sp:    \r\nContent-Length: 0\r\n\r\n",
    "many fields": (b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Field-%d: %s\r\n" % (i, b"v" * (i * 7)) for i in range(60))
                    + b"Content-Length: 0\r\n\r\n"),
    "long value": b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 9000 + b"\r\nContent-Length: 0\r\n\r\n",
    # refused alike
    "CL and TE": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "differing CL": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 0\r\n\r\n",
    "bare LF": b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    "space before colon": b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
    "bad status": b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
    "bad version": b"HTTP/7.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "bad chunk size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "NUL in value": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
    "not http": b"SSH-2.0-OpenSSH_9.2\r\n",
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("pieces", [None, 1, 7])
def test_both_parsers_deliver_the_same(name: str, pieces: int | None) -> None:
    _both(CASES[name], pieces)


def test_cases_cover_heads_and_refusals() -> None:
    """The table above exercises what it claims (on whichever parser is there)."""
    ev = {n: _run("httptools", [raw]) for n, raw in CASES.items()}
    assert ev["nginx"][0][:4] == ("head", 200, True, b"5") and ev["nginx"][-1] == ("end",)
    assert ev["connection tokens"][0][7] == (b"x-hop",)
    assert ev["upgrade"][-1] == ("upgraded", b"\x81\x02hi")
    for n in ("CL and TE", "differing CL", "obs-fold", "bare LF", "space before colon", "bad status",
              "bad chunk size", "NUL in value", "not http"):
        assert ev[n][-1][0] == "failed", n


def test_mutated_responses_alike() -> None:
    """Seeded byte mutations of the table (a bounded fuzz: 600 cases, ~1 s)."""
    rnd = random.Random(30)
    bases = list(CASES.values())
    for _ in range(600):
        raw = bytearray(rnd.choice(bases)[:400])
        for _ in range(rnd.randint(1, 4)):
            i = rnd.randrange(len(raw))
            op = rnd.random()
            if op < 0.4:
                raw[i] = rnd.choice(b"\r\n :\t\x00aZ0-,;\"\x7f\xff")
            elif op < 0.7:
                del raw[i]
            else:
                raw[i:i] = raw[rnd.randrange(len(raw)):][:rnd.randint(1, 20)]
        _both(bytes(raw), rnd.choice([None, 1, 5, 64]))


@pytest.mark.parametrize("which", PARSERS)
@pytest.mark.parametrize("pieces", [None, 1, 3])
def test_trailer_fields_do_not_reach_the_next_response(which: str, pieces: int | None) -> None:
    """A chunked response's trailer section is dropped (as the client side drops a request's):
    through httptools it used to be filed into the connection's next head, i.e. forwarded as
    header fields of the next response — another client's, on a pooled upstream connection."""
    chunks = [TRAILERS] if pieces is None else [TRAILERS[i:i + pieces] for i in range(0, len(TRAILERS), pieces)]
    ev = _run(which, chunks)
    heads = [e for e in ev if e[0] == "head"]
    assert [h[8] for h in heads] == [(), ((b"X-Next", b"n"),)]
    assert ("body", b"a") in ev and ev[-1] == ("end",) and ev.count(("end",)) == 2


def test_compiled_build_uses_the_c_parser() -> None:
    """Where the data path runs compiled and llresp is built and current, the upstream parser is
    llresp; otherwise httptools (the fallback, and what EPOCHGATE_PURE_PYTHON forces)."""
    native = build.info()["native"].get("sidecar.proxy.llresp")
    if build.info()["build"] == "compiled" and native == "ok":
        assert U._new_parser is llresp.RespParser
    else:
        assert U._new_parser is httptools.HttpResponseParser


async def test_a_response_trailer_reaches_no_other_client(tmp_path) -> None:
    """Through a real sidecar (whichever build runs this process): a node answers client A with a
    chunked response carrying a ``Set-Cookie`` trailer, then client B — on its own connection,
    over the same pooled upstream connection — with a plain one. B's head must not carry A's
    trailer (on 03977c3's httptools path it did)."""
    import asyncio

    from tests._hostile import send_raw
    from tests._sidecar_util import config, running_sidecar, write_placement

    conns: list[int] = []
    answers = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nSet-Cookie: session=A\r\n"
               b"X-Trailer: a\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-Node: n\r\n\r\nb"]

    handlers: list[asyncio.Task] = []

    async def node(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(1)
        handlers.append(asyncio.current_task())
        buf = b""
        try:
            while answers:
                while b"\r\n\r\n" not in buf:
                    data = await reader.read(65536)
                    if not data:
                        return
                    buf += data
                _, _, buf = buf.partition(b"\r\n\r\n")  # GETs: no body
                writer.write(answers.pop(0))
                await writer.drain()
            await reader.read()   # until the stopped sidecar closes the pooled connection
        finally:
            writer.close()   # else the next test's set-up reports the unclosed transport

    server = await asyncio.start_server(node, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    p = write_placement(tmp_path / "p.toml", {"a": url}, {"t1": "a"})
    try:
        async with running_sidecar(config(p)) as sc:
            get = b"GET /kv/x HTTP/1.1\r\nHost: app\r\nX-Partition-Key: t1\r\nConnection: close\r\n\r\n"
            a = await send_raw(sc.port, get)
            b = await send_raw(sc.port, get)
    finally:
        server.close()
        await server.wait_closed()
        async with asyncio.timeout(10):
            await asyncio.gather(*handlers, return_exceptions=True)
    assert len(conns) == 1  # one pooled upstream connection served both
    assert a.startswith(b"HTTP/1.1 200 ") and b"\r\n\r\n1\r\na\r\n0\r\n\r\n" in a, a
    head_b = b.partition(b"\r\n\r\n")[0].lower()
    assert b.startswith(b"HTTP/1.1 200 ") and b"x-node: n" in head_b, b
    assert b"set-cookie" not in head_b and b"x-trailer" not in head_b, b
