"""The floor for a Python data path: a bare asyncio.Protocol forwarder on uvloop
with httptools parsing and a keep-alive upstream pool — no routing, gating,
metrics, logging or header rules. ``bench_proxy.py`` runs it so the sidecar's
cost can be read against it. Not part of the product.

    python bench/_bare_forwarder.py PORT UPSTREAM_PORT
"""

import asyncio
import sys

import httptools
import uvloop

UP_PORT = int(sys.argv[2])
IDLE: list = []


class Up(asyncio.Protocol):
    def __init__(self):
        self.p = httptools.HttpResponseParser(self)
        self.client = None
        self.t = None

    def connection_made(self, t):
        self.t = t

    def data_received(self, d):
        self.p.feed_data(d)

    def on_message_begin(self):
        self.h = []

    def on_header(self, n, v):
        if n.lower() not in (b"connection", b"keep-alive", b"transfer-encoding"):
            self.h.append(n + b": " + v + b"\r\n")

    def on_headers_complete(self):
        c = self.client
        c.t.write(b"HTTP/1.1 %d OK\r\n%b\r\n" % (self.p.get_status_code(), b"".join(self.h)))

    def on_body(self, b):
        self.client.t.write(b)

    def on_message_complete(self):
        c, self.client = self.client, None
        IDLE.append(self)
        c.done()

    def connection_lost(self, exc):
        # the upstream closed an idle connection (nginx's keepalive_timeout, 75 s): out of the pool, or the
        # next request written to it is never answered (bench_latency counted such requests as failed)
        if self.client is None:
            if self in IDLE:
                IDLE.remove(self)
        else:
            self.client.t.close()  # mid-response: that client cannot be answered


class Client(asyncio.Protocol):
    def __init__(self):
        self.p = httptools.HttpRequestParser(self)
        self.up = None

    def connection_made(self, t):
        self.t = t

    def data_received(self, d):
        self.p.feed_data(d)

    def on_message_begin(self):
        self.h = []
        self.url = b""
        self.pending = []

    def on_url(self, u):
        self.url += u

    def on_header(self, n, v):
        if n.lower() not in (b"connection", b"keep-alive", b"host"):
            self.h.append(n + b": " + v + b"\r\n")

    def on_headers_complete(self):
        head = b"%b %b HTTP/1.1\r\nHost: up\r\n%b\r\n" % (self.p.get_method(), self.url, b"".join(self.h))
        if IDLE:
            self.attach(IDLE.pop(), head)
        else:
            asyncio.ensure_future(self.connect(head))

    async def connect(self, head):
        _, up = await asyncio.get_running_loop().create_connection(Up, "127.0.0.1", UP_PORT)
        self.attach(up, head)

    def attach(self, up, head):
        self.up = up
        up.client = self
        up.t.write(head)
        for b in self.pending:
            up.t.write(b)
        self.pending = None

    def on_body(self, b):
        if self.pending is None:
            self.up.t.write(b)
        else:
            self.pending.append(b)

    def done(self):
        self.up = None


async def main():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Client, "127.0.0.1", int(sys.argv[1]), backlog=2048)
    await srv.serve_forever()


uvloop.run(main())
