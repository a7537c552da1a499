"""The client request parser, both builds (issue 30): llhttp driven from C (``llreq.pyx``,
compiled build) and httptools (pure fallback) must give the same outcome for the same bytes —
what reaches the upstream (forwarded heads byte for byte, bodies, in order), what the client
gets back (answers and refusals: 400/404/405/414/431, the parser's error text), and whether
the connection closes — for requests accepted and refused, whole or fed in small reads.

Runs the real ``ClientConn`` of whatever build is installed over the socket-free harness
(``tests/_fake_transport.py``) with each parser in turn; the compiled parser's cases are
skipped where it is not built (the pure build), and ``test_compiled_build_uses_the_c_parser``
holds the compiled build to using it.
"""

from __future__ import annotations

import json
import random
from typing import Any

import httptools
import pytest

import sidecar._build as build
from gate import PlacementTable
from sidecar.proxy import conn as C
from tests._fake_transport import Harness, response, settle

try:
    from sidecar.proxy import llreq
except Exception:  # not built, refused by the guard, or (the data path running as Python) types that moved
    llreq = None  # type: ignore[assignment]

PARSERS = ["httptools", "llreq"]


async def _run(which: str, chunks: list[bytes], **cfg: Any) -> list[tuple[Any, ...]]:
    """Feed ``chunks`` to one client connection (only while it reads, as a socket would), answer
    each upstream request with a 200 once the client has nothing more to send, and return what
    every side saw."""
    if which == "llreq" and llreq is None:
        pytest.skip("the compiled request parser is not built here (pure build)")
    h = Harness(PlacementTable({"t1": "a", "t2": "b"}), **cfg)
    try:
        c = h.client()
        conn = c.conn
        conn.parser = httptools.HttpRequestParser(conn) if which == "httptools" else llreq.ReqParser(conn)
        t = c.transport
        events: list[tuple[Any, ...]] = []
        answered: set[int] = set()
        i = 0
        for _ in range(100):
            moved = False
            while i < len(chunks) and t.reading and not t.closing:
                c.send(chunks[i])
                i += 1
                moved = True
            await settle()
            for n, up in enumerate(h.pool.opened):
                data = up.take()
                if data:
                    events.append(("up", n, data))
                    moved = True
                ex = up.conn.exchange
                if ex is not None and id(ex) not in answered and (i == len(chunks) or not t.reading):
                    answered.add(id(ex))
                    up.reply(response(200, b"ok"))
                    moved = True
            out = c.take()
            if out:
                events.append(("client", out))
            if not moved:
                break
        events.append(("closed", t.closing, i))
        prefix = h.ctx.rid_prefix  # random per context: the same sequence after it
        return [tuple(x.replace(prefix, b"RID-") if isinstance(x, bytes) else x for x in e) for e in events]
    finally:
        h.close()


async def _both(raw: bytes, pieces: int | None = None, **cfg: Any) -> list[tuple[Any, ...]]:
    """The outcome of ``raw`` fed whole, or in ``pieces``-byte reads, through each parser: equal."""
    split = [raw] if pieces is None else [raw[i:i + pieces] for i in range(0, len(raw), pieces)]
    a = await _run("httptools", split, **cfg)
    b = await _run("llreq", split, **cfg)
    assert a == b, (raw, pieces)
    return a


def req(method: str = "GET", path: str = "/kv/k", extra: str = "", body: bytes = b"", key: str = "t1") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: app\r\nX-Partition-Key: {key}\r\n{extra}"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


CHUNKED = (b"PUT /kv/k HTTP/1.1\r\nHost: app\r\nX-Partition-Key: t1\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\nX-Partition-Key: t2\r\n\r\n")
CASES = {
    "get": req(),
    "put": req("PUT", body=b"x" * 100),
    "pipelined": req() + req("PUT", body=b"hello") + req(key="t2") + req("DELETE"),
    "chunked with trailers": CHUNKED + req(),
    "browser-like": req(extra="User-Agent: curl/8\r\nAccept: */*\r\nAccept-Encoding: gzip\r\nCookie: a=b; c=d\r\n"),
    "mixed-case names": b"GET /kv/k HTTP/1.1\r\nhOsT: app\r\nx-PARTITION-key: t1\r\nCoNtEnT-LeNgTh: 2\r\n\r\nok",
    "own headers dropped": req(extra="X-Placement: evil\r\nX-Partition: evil\r\nX-Placement-Foo: x\r\n"
                                     "X-Placement-Epoch: 9\r\nKeep-Alive: 5\r\nProxy-Connection: x\r\nTE: trailers\r\n"
                                     "Trailer: X-T\r\nX-Placementish: y\r\n"),
    "forwarded given": req(extra="X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\nX-Forwarded-Proto: https\r\n"
                                 "X-Forwarded-Host: h\r\nX-Request-Id: abc\r\n"),
    "connection close": req(extra="Connection: close\r\n") + req(),
    "connection tokens": req(extra="Connection: X-Hop, keep-alive\r\nX-Hop: 1\r\nX-Kept: 2\r\nx-hop: 3\r\n"
                                   "Connection: X-Other\r\nx-other: 4\r\n"),
    "connection names own": req(extra="Connection: host, x-request-id, x-partition-key\r\nX-Request-Id: r\r\n"),
    "http/1.0": b"GET /kv/k HTTP/1.0\r\nX-Partition-Key: t1\r\n\r\n",
    "http/1.0 keep-alive": b"GET /kv/k HTTP/1.0\r\nConnection: keep-alive\r\nHost: a\r\nX-Partition-Key: t1\r\n\r\n" + req(),
    "expect": req("PUT", extra="Expect: 100-continue\r\n", body=b"abc"),
    "same key twice": req(extra="X-Partition-Key: t1\r\n"),
    "same length twice": req("PUT", extra="Content-Length: 3\r\n", body=b"abc"),
    "empty values": req(extra="X-Empty:\r\nX-Sp:    \r\nX-Tab:\t\tv\t\r\n"),
    "many fields": req(extra="".join(f"X-Field-{i}: {'v' * (i * 7)}\r\n" for i in range(60))),
    "long value": req(extra="X-Long: " + "a" * 9000 + "\r\n"),
    "absolute form": b"GET http://other:81/kv/k?q=1 HTTP/1.1\r\nHost: app\r\nX-Partition-Key: t1\r\n\r\n",
    "dot segments": req(path="/kv/../kv/./k%2e?x=1"),
    "upgrade": req(extra="Connection: upgrade\r\nUpgrade: websocket\r\n") + b"\x81\x02hi",
    "upgrade without connection": req(extra="Upgrade: websocket\r\n"),
    "upgrade lines": req(extra="Connection: Upgrade\r\nUpgrade: foo\r\nUpgrade: websocket\r\n"),
    "options star": b"OPTIONS * HTTP/1.1\r\nHost: app\r\nX-Partition-Key: t1\r\n\r\n",
    # refused alike
    "CL and TE": req("PUT", extra="Transfer-Encoding: chunked\r\nContent-Length: 3\r\n") + b"0\r\n\r\n",
    "TE then CL": req("PUT", extra="Content-Length: 3\r\nTransfer-Encoding: chunked\r\n") + b"0\r\n\r\n",
    "differing CL": req("PUT", extra="Content-Length: 3\r\nContent-Length: 4\r\n") + b"abcd",
    "TE not chunked last": req("PUT", extra="Transfer-Encoding: chunked, gzip\r\n") + b"0\r\n\r\n",
    "TE twice chunked": req("PUT", extra="Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n") + b"0\r\n\r\n",
    "two hosts": req(extra="Host: other\r\n"),
    "no host": b"GET /kv/k HTTP/1.1\r\nX-Partition-Key: t1\r\n\r\n",
    "conflicting keys": req(extra="X-Partition-Key: t2\r\n"),
    "connect": b"CONNECT app:443 HTTP/1.1\r\nHost: app:443\r\n\r\n",
    "hook path": req(path="/_epochgate/hooks/x"),
    "long target": req(path="/kv/" + "a" * 9000),
    "bad target": req(path="/kv/%zz"),
    "h2c upgrade": req(extra="Connection: upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAAA\r\n"),
    "upgrade with body": req("POST", extra="Connection: upgrade\r\nUpgrade: websocket\r\n", body=b"abc"),
    "head too large": req(extra="".join(f"X-Big-{i}: {'b' * 100}\r\n" for i in range(400))),
    "head too large, no spaces": req(extra="".join(f"X{i:05d}:v\r\n" for i in range(3100))),
    "target too large": req(path="/kv/" + "u" * 40000),
    "too large after one": req() + req(extra="".join(f"X-Big-{i}: {'b' * 100}\r\n" for i in range(400))),
    "bad method": b"GOT /kv/k HTTP/1.1\r\nHost: app\r\n\r\n",
    "obs-fold": req(extra="X-A: one\r\n two\r\n"),
    "bare LF": b"GET /kv/k HTTP/1.1\nHost: app\nX-Partition-Key: t1\n\n",
    "space before colon": req(extra="X-A : 1\r\n"),
    "NUL in value": req(extra="X-A: a\x00b\r\n"),
    "bad chunk size": req("PUT", extra="Transfer-Encoding: chunked\r\n") + b"zz\r\nabc\r\n0\r\n\r\n",
    "bad version": b"GET /kv/k HTTP/7.1\r\nHost: app\r\n\r\n",
    "not http": b"SSH-2.0-OpenSSH_9.2\r\n",
    "garbage after": req() + b"\x00\x01\x02 nonsense\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("pieces", [None, 1, 7])
async def test_both_parsers_give_the_same_outcome(name: str, pieces: int | None) -> None:
    if pieces == 1 and len(CASES[name]) > 4000:
        pieces = 61  # (the big heads: their 1-byte reads take seconds and test nothing more)
    await _both(CASES[name], pieces)


async def test_cases_cover_what_they_claim() -> None:
    """The table exercises accepted and refused requests (on whichever parser runs the harness)."""
    ev = {n: await _run("httptools", [CASES[n]]) for n in CASES}

    def client(n: str) -> bytes:
        return b"".join(e[1] for e in ev[n] if e[0] == "client")

    def up(n: str) -> bytes:
        return b"".join(e[2] for e in ev[n] if e[0] == "up")

    assert client("pipelined").count(b"HTTP/1.1 200 ") == 4
    assert b"X-Trailer" not in up("chunked with trailers") and up("chunked with trailers").count(b"PUT /kv/k") == 1
    assert b"x-hop" not in up("connection tokens").lower() and b"X-Kept: 2" in up("connection tokens")
    assert b"X-Forwarded-For: 1.2.3.4, 5.6.7.8, 192.0.2.7" in up("forwarded given")
    for n, status in (("CL and TE", 400), ("TE then CL", 400), ("differing CL", 400), ("TE not chunked last", 400),
                      ("TE twice chunked", 400), ("two hosts", 400), ("no host", 400), ("conflicting keys", 400),
                      ("connect", 405), ("hook path", 404), ("long target", 414), ("h2c upgrade", 400),
                      ("upgrade with body", 400), ("head too large", 431), ("head too large, no spaces", 431),
                      ("target too large", 431), ("bad method", 400), ("obs-fold", 400), ("bare LF", 400),
                      ("space before colon", 400), ("NUL in value", 400), ("bad version", 400), ("not http", 400)):
        assert client(n).startswith(b"HTTP/1.1 %d " % status), (n, client(n)[:80])
        assert not up(n), n
    # a head too large behind one in flight: the connection closes (nothing answers it out of order)
    assert up("too large after one").count(b"GET /kv/k") == 1 and ev["too large after one"][-1][1] is True


async def test_head_size_counted_as_httptools_counts_it() -> None:
    """``name:value`` lines count 4 bytes of framing each (``on_header``), more than they take on
    the wire: both parsers refuse the same head at the same size, just over and just under."""
    for n in (200, 203, 204, 205, 210):
        raw = req(extra="".join(f"X{i:05d}:v\r\n" for i in range(n)))
        await _both(raw, None, max_header_bytes=2048)
        await _both(raw, 5, max_header_bytes=2048)


async def test_mutated_requests_alike() -> None:
    """Seeded byte mutations of the table (a bounded fuzz: 300 cases)."""
    rnd = random.Random(30)
    bases = [v for v in CASES.values() if len(v) < 2000]
    for _ in range(300):
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
        await _both(bytes(raw), rnd.choice([None, 1, 5, 64]))


def test_compiled_build_uses_the_c_parser() -> None:
    """Where the data path runs compiled and llreq is built and current, the client parser is
    llreq; otherwise httptools (the fallback, and what EPOCHGATE_PURE_PYTHON forces)."""
    native = build.info()["native"].get("sidecar.proxy.llreq")
    if build.info()["build"] == "compiled" and native == "ok":
        assert C._new_parser is llreq.ReqParser
    else:
        assert C._new_parser is httptools.HttpRequestParser


@pytest.mark.parametrize("which", PARSERS)
async def test_kept_drops_what_connection_names(which: str) -> None:
    """``ReqHead.kept`` on either ``fwd`` shape (flat from httptools, one block from llreq)."""
    ev = await _run(which, [CASES["connection tokens"]])
    sent = b"".join(e[2] for e in ev if e[0] == "up")
    head = sent.split(b"\r\n\r\n")[0]
    assert b"\r\nX-Kept: 2\r\n" in head + b"\r\n"
    assert b"x-hop" not in head.lower() and b"x-other" not in head.lower()


def test_llreq_is_guarded_like_llresp(tmp_path) -> None:
    """``proxy.llreq`` is in ``_build.NATIVE`` with what it cimports: a build whose ``conn.pxd``
    changed since is refused (stale) and ``conn`` falls back to httptools."""
    from tests.test_build_modes import EXT, _copy_tree, _hash, _run

    assert "proxy/conn.pxd" in build.NATIVE["proxy.llreq"]
    pkg = _copy_tree(tmp_path) / "sidecar"
    (pkg / "proxy" / f"llreq{EXT}").write_bytes(b"not an extension module")
    (pkg / "_compiled.json").write_text(json.dumps({"modules": {"proxy.llreq": _hash(pkg, "proxy.llreq")}}))
    probe = ("import sidecar, sidecar._build as b\ntry:\n    import sidecar.proxy.llreq\n"
             "except ImportError as e:\n    print(type(e).__name__, e)\nprint(b.info()['native'])")
    r = _run(tmp_path, probe)
    assert "ModuleNotFoundError" not in r.stdout and "ImportError" in r.stdout  # vouched for: loaded (garbage)
    with open(pkg / "proxy" / "conn.pxd", "a") as f:  # what it cimports moved: stale
        f.write("\n# edited after the build\n")
    r = _run(tmp_path, probe)
    assert "refused by sidecar._build (stale)" in r.stdout and "proxy.llreq" in r.stderr
