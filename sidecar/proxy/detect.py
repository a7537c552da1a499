"""The listener's protocol choice: HTTP/1.1 or HTTP/2, per connection.

``DetectConn`` is the listener's protocol. On TLS with ALPN ``h2`` it hands
the connection to ``H2ServerConn`` at once; otherwise it looks at the first
bytes: the HTTP/2 connection preface (``PRI * HTTP/2.0…``, prior knowledge, as
gRPC clients send it) → ``H2ServerConn``, anything else → the HTTP/1.1
``ClientConn``. The swap happens once per connection (``set_protocol``); the
HTTP/1.1 hot path is untouched.

The HTTP/2 side (``sidecar.proxy.h2.server``, with the h2/hpack/hyperframe
libraries: ~1.6 MiB resident) is imported by the first HTTP/2 connection, so a
sidecar that only ever sees HTTP/1.1 does not carry it (issue 20); that first
connection waits for the import (~30 ms).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .conn import ClientConn
from .limits import admit_connection

if TYPE_CHECKING:
    from .context import ProxyContext

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _h2_conn(ctx: ProxyContext) -> asyncio.Protocol:
    from .h2.server import H2ServerConn

    return H2ServerConn(ctx)


class DetectConn(asyncio.Protocol):
    """First bytes (or ALPN) decide: HTTP/2 or HTTP/1.1. Until then it is a client connection
    like the others (``limits.ClientFace``): counted against ``--max-connections``, closed by
    the idle sweep when silent, and by the head deadline when it stops inside the preface."""

    __slots__ = ("ctx", "transport", "buf", "current", "last_active", "head_since")

    def __init__(self, ctx: ProxyContext) -> None:
        self.ctx = ctx
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.current = None  # (for the idle sweep and the drain, like a client connection)
        self.last_active = ctx.now
        self.head_since = 0.0  # the first byte of an unfinished preface

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sslobj = transport.get_extra_info("ssl_object")
        h2 = sslobj is not None and sslobj.selected_alpn_protocol() == "h2"
        if not admit_connection(self.ctx, self, transport, h2=h2):  # the one cap, every protocol
            self.transport = None
            return
        if h2:
            self._switch(_h2_conn(self.ctx), b"")

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return  # refused at accept
        buf = self.buf + data if self.buf else data
        if len(buf) < len(PREFACE) and PREFACE.startswith(buf):
            self.buf = buf  # a prefix of the preface: wait for more (under the head deadline)
            if not self.head_since:
                self.head_since = self.ctx.now
            return
        self.buf = b""
        if buf.startswith(PREFACE):
            self._switch(_h2_conn(self.ctx), buf)
        else:
            self._switch(ClientConn(self.ctx), buf)

    def _switch(self, proto: asyncio.Protocol, data: bytes) -> None:
        self.ctx.clients.discard(self)
        t = self.transport
        self.transport = None
        t.set_protocol(proto)
        proto.connection_made(t)
        if data:
            proto.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.ctx.clients.discard(self)
        self.transport = None

    def close_idle(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def exchanges(self) -> tuple:
        return ()

    def head_timed_out(self) -> None:
        """Stopped inside the HTTP/2 preface past ``--head-timeout``: nothing to answer in."""
        self.close_idle()
