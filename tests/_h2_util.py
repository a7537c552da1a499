"""A real HTTP/2 (h2c or TLS) upstream for the sidecar's HTTP/2 tests, written
directly on ``h2`` (independent of the sidecar's own HTTP/2 code), plus
throw-away certificates made with the ``openssl`` command.

Routes: ``/echo`` answers with the request body, its length and sha256 in
headers, and a ``x-trailer`` trailer; ``/big?size=N`` streams N bytes;
``/trailers`` answers a body and trailers; ``/wait`` answers like ``/echo`` once
``release`` is set. Every request is recorded
(headers as a dict and, in ``fields``, as the list received; body length;
request trailers, if any) in ``seen``.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (ConnectionTerminated, DataReceived, RequestReceived, StreamEnded, StreamReset, TrailersReceived,
                       WindowUpdated)
from h2.exceptions import H2Error


class _Stream:
    def __init__(self, fields: list[tuple[bytes, bytes]]) -> None:
        self.fields = fields
        self.headers = dict(fields)
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.ended = False
        self.body = hashlib.sha256()
        self.n = 0
        self.window_open = asyncio.Event()


class H2Upstream:
    def __init__(self, name: str, ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.name = name
        self.ssl_ctx = ssl_ctx
        self.seen: list[dict[str, Any]] = []
        self.server: asyncio.base_events.Server | None = None
        self.url = ""
        self.conns = 0
        self.release = asyncio.Event()
        self.open = 0                 # connections not yet closed
        self.errors: list[str] = []   # what the node's h2 refused in what it was sent

    async def start(self) -> "H2Upstream":
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0, ssl=self.ssl_ctx)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.ssl_ctx else 'h2c'}://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def quiet(self, timeout: float = 10.0) -> None:
        """Wait until every connection to the node has closed: it has read all it will get."""
        async def wait() -> None:
            while self.open:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(wait(), timeout)

    def _record(self, st: _Stream, **extra: Any) -> dict[str, Any]:
        h = {k.decode("latin-1"): v.decode("latin-1") for k, v in st.headers.items()}
        rec = {"node": self.name, "headers": h, "len": st.n, "sha": st.body.hexdigest(),
               "fields": [(k.decode("latin-1"), v.decode("latin-1")) for k, v in st.fields],
               "trailers": st.trailers, **extra}
        self.seen.append(rec)
        return rec

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conns += 1
        self.open += 1
        conn = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams: dict[int, _Stream] = {}
        tasks: set[asyncio.Task] = set()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                try:
                    events = conn.receive_data(data)
                except H2Error as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    writer.write(conn.data_to_send())
                    break
                for ev in events:
                    if isinstance(ev, RequestReceived):
                        streams[ev.stream_id] = _Stream(list(ev.headers))
                    elif isinstance(ev, DataReceived):
                        st = streams.get(ev.stream_id)
                        if st is not None:
                            st.body.update(ev.data)
                            st.n += len(ev.data)
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, TrailersReceived):
                        st = streams.get(ev.stream_id)
                        if st is not None:
                            st.trailers = list(ev.headers)
                    elif isinstance(ev, StreamEnded):
                        st = streams.get(ev.stream_id)
                        if st is not None:
                            # recorded now, not in the task: a task cancelled by the connection's
                            # close before it ran must not lose the request
                            st.ended = True
                            rec = self._record(st, path=urlsplit(st.headers[b":path"].decode("latin-1")).path)
                            t = asyncio.create_task(self._respond(conn, writer, ev.stream_id, st, rec))
                            tasks.add(t)
                            t.add_done_callback(tasks.discard)
                    elif isinstance(ev, WindowUpdated):
                        for st in streams.values():
                            st.window_open.set()
                    elif isinstance(ev, StreamReset):
                        st = streams.pop(ev.stream_id, None)
                        if st is not None and not st.ended:  # (an ended one is recorded already)
                            self._record(st, reset=True)
                    elif isinstance(ev, ConnectionTerminated):
                        break
                writer.write(conn.data_to_send())
        except (ConnectionError, OSError):
            pass
        finally:
            for t in tasks:
                t.cancel()
            writer.close()
            self.open -= 1

    async def _respond(self, conn: H2Connection, writer: asyncio.StreamWriter, sid: int, st: _Stream,
                       rec: dict[str, Any]) -> None:
        url = urlsplit(rec["headers"][":path"])
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            if url.path == "/wait":  # answered once the test sets ``release`` (a node still committing)
                await self.release.wait()
            if url.path == "/big":
                size = int(q["size"])
                conn.send_headers(sid, [(b":status", b"200"), (b"content-length", str(size).encode())])
                await self._send(conn, writer, sid, size, st)
                conn.end_stream(sid)
            elif st.headers.get(b":method") == b"HEAD":  # (a HEAD response has no body)
                conn.send_headers(sid, [(b":status", b"200"), (b"x-node", self.name.encode())], end_stream=True)
            else:
                body = f'{{"node":"{self.name}","len":{st.n},"sha":"{st.body.hexdigest()}"}}'.encode()
                conn.send_headers(sid, [(b":status", q.get("status", "200").encode()), (b"content-type", b"application/json"),
                                        (b"x-node", self.name.encode())])
                conn.send_data(sid, body)
                conn.send_headers(sid, [(b"x-trailer", b"t-" + self.name.encode())], end_stream=True)
            writer.write(conn.data_to_send())
        except H2Error:
            pass

    async def _send(self, conn: H2Connection, writer: asyncio.StreamWriter, sid: int, size: int, st: _Stream) -> None:
        block = b"y" * 65536
        left = size
        while left > 0:
            win = conn.local_flow_control_window(sid)
            if win <= 0:
                st.window_open.clear()
                writer.write(conn.data_to_send())
                await st.window_open.wait()
                continue
            n = min(left, win, conn.max_outbound_frame_size, len(block))
            conn.send_data(sid, block[:n])
            left -= n
            writer.write(conn.data_to_send())
            await writer.drain()


def make_ca(tmp: Path, name: str = "ca") -> tuple[Path, Path]:
    """A throw-away CA: (cert, key)."""
    cert, key = tmp / f"{name}.pem", tmp / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
                    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"],
                   check=True, capture_output=True)
    return cert, key


def make_cert(tmp: Path, ca: tuple[Path, Path], name: str, san: str = "IP:127.0.0.1,DNS:localhost") -> tuple[Path, Path]:
    """A leaf certificate signed by ``ca``: (cert, key)."""
    cert, key, csr = tmp / f"{name}.pem", tmp / f"{name}.key", tmp / f"{name}.csr"
    ext = tmp / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth,clientAuth\n")
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}"], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
                    "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext)],
                   check=True, capture_output=True)
    return cert, key


def live_copy(tmp: Path, pair: tuple[Path, Path]) -> tuple[Path, Path]:
    """``pair`` copied to live.pem/live.key under ``tmp``: the files a reload test then rewrites."""
    import shutil

    cert, key = tmp / "live.pem", tmp / "live.key"
    shutil.copy(pair[0], cert)
    shutil.copy(pair[1], key)
    return cert, key
