"""A lean keep-alive HTTP/1.1 GET for Consul blocking queries.

Why not aiohttp here: a replica's whole steady-state traffic is one small
blocking GET per transition, and aiohttp's client machinery costs about five
times the CPU of the exchange itself (measured with bench/bench_replica.py:
~0.4 ms vs ~0.07 ms per request). That matters wherever many replicas share a
core (workers, tests, the benchmark's in-process fleet). Everything else in
``ConsulConsensus`` still goes through aiohttp.

It speaks only what Consul's KV GET answers: a status line, headers, and a
body framed by Content-Length, chunked encoding, or connection close, gzip-compressed
when asked (``gzip=True``). Any
failure closes the connection and raises ``BackendError``.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
import zlib
from urllib.parse import urlsplit

from ._exceptions import BackendError
from ._reachability import reached, unreachable

_MAX_HEAD = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024


class Response:
    __slots__ = ("status", "headers", "body", "wire_bytes")

    def __init__(self, status: int, headers: dict[str, str], body: bytes, wire_bytes: int) -> None:
        self.status, self.headers, self.body, self.wire_bytes = status, headers, body, wire_bytes


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()


class LongPollClient:
    """GETs over a small pool of keep-alive connections to one HTTP(S) origin."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None, max_idle: int = 4) -> None:
        parts = urlsplit(base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._https else 80)
        self._origin = base_url.rstrip("/")
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._suffix = f" HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: */*\r\n{extra}\r\n".encode("latin-1")
        self._idle: list[_Conn] = []
        self._max_idle = max_idle
        self._closed = False

    async def get(self, target: str, timeout_s: float, *, gzip: bool = False) -> Response:
        """``GET target`` (path + query, already encoded); BackendError on any failure.

        ``gzip``: ask for a compressed answer (Consul compresses a KV list ~9x: its entries
        repeat the same keys, prefix and session ids); ``body`` is decompressed, ``wire_bytes``
        is what came over the socket."""
        if self._closed:
            raise BackendError("long-poll client is closed")
        conn = self._idle.pop() if self._idle else None
        try:
            # asyncio.timeout, never wait_for: on Python 3.11, wait_for returns the inner result
            # (here: raises its OSError) when a cancel lands in the same loop turn as the inner
            # await finishing, and the cancel is lost — a replica told to stop by SIGTERM just as
            # Consul refused a connection went on retrying for ever (scripts/fleet --check hung in
            # CI; tests/test_cancel_not_lost.py). asyncio.timeout runs the await in this task.
            async with asyncio.timeout(timeout_s):
                if conn is None:
                    conn = await self._connect()
                resp, keep = await self._exchange(conn, target, gzip)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError, IndexError) as exc:
            if conn is not None:
                conn.close()
            raise (unreachable(self._origin, f"GET {target}", exc)
                   or BackendError(f"consul GET {target}: {type(exc).__name__}: {exc}")) from exc
        except BaseException:  # cancelled mid-exchange: the connection's state is unknown
            if conn is not None:
                conn.close()
            raise
        reached(self._origin)
        if keep and not self._closed and len(self._idle) < self._max_idle:
            self._idle.append(conn)
        else:
            conn.close()
        return resp

    async def _connect(self) -> _Conn:
        ctx = _ssl.create_default_context() if self._https else None
        reader, writer = await asyncio.open_connection(self._host, self._port, ssl=ctx, limit=_MAX_HEAD)
        return _Conn(reader, writer)

    async def _exchange(self, conn: _Conn, target: str, gzip: bool = False) -> tuple[Response, bool]:
        suffix = self._suffix if not gzip else self._suffix[:-2] + b"Accept-Encoding: gzip\r\n\r\n"
        conn.writer.write(b"GET " + target.encode("latin-1") + suffix)
        reader = conn.reader
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].decode("latin-1").split("\r\n")
        version, status_text = lines[0].split(" ", 2)[:2]
        status = int(status_text)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body, extra = await _read_chunked(reader)
        elif "content-length" in headers:
            n = int(headers["content-length"])
            if not 0 <= n <= _MAX_BODY:
                raise ValueError(f"bad Content-Length {n}")
            body, extra = await reader.readexactly(n), 0
        else:
            body, extra, keep = await reader.read(_MAX_BODY), 0, False
        wire = len(head) + len(body) + extra
        if headers.get("content-encoding", "").lower() == "gzip":
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)   # bounded: never more than _MAX_BODY
            body = d.decompress(body, _MAX_BODY)
            if d.unconsumed_tail:
                raise ValueError("gzip body too large")
        elif headers.get("content-encoding", "identity").lower() != "identity":
            raise ValueError(f"unexpected Content-Encoding {headers['content-encoding']!r}")
        return Response(status, headers, body, wire), keep

    def close_idle(self) -> None:
        """Close the idle keep-alive connections (the next GET dials again)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def close(self) -> None:
        self._closed = True
        self.close_idle()


async def _read_chunked(reader: asyncio.StreamReader) -> tuple[bytes, int]:
    parts: list[bytes] = []
    overhead = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        overhead += len(size_line) + 2
        if size == 0:
            while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, then the blank line
                overhead += len(trailer)
            return b"".join(parts), overhead
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
        if sum(map(len, parts)) > _MAX_BODY:
            raise ValueError("chunked body too large")
