"""The floor for a Python HTTP/2 (gRPC) data path: a bare h2c forwarder on uvloop driving
libnghttp2 through ``ngh2`` (the sidecar's compiled HTTP/2 engine's library), one upstream h2c
connection, client streams mapped 1:1 onto upstream streams — no routing, gating, metrics,
access log, header rules or checks beyond libnghttp2's own. ``bench_grpc.py``,
``bench_grpc_latency.py`` run it as ``bare-h2`` so the sidecar's cost can be read against it.
Not part of the product.

    python bench/_bare_h2_forwarder.py PORT UPSTREAM_H2C_PORT

What it does per call: the client's HEADERS (forwarded as received, pseudo-headers included),
DATA and END_STREAM go to one stream on the upstream connection; the upstream's HEADERS, DATA and
trailers come back to the client's stream; a reset on either side resets the other. Flow control
is libnghttp2's own (``auto_window_update``: a window is handed back as the bytes arrive, and
``send_data`` queues without pacing: enough for small gRPC messages, not for large bodies).
Streams beyond the upstream's SETTINGS_MAX_CONCURRENT_STREAMS wait inside libnghttp2 (nginx's
default is 128; bench_grpc's 16 x 10 streams exceed it by 32). Writes: each client read ends
with one write to that client; the upstream is written once per event-loop turn. The upstream
connection is re-dialled if it closes or sends GOAWAY; a call arriving meanwhile is refused
(RST_STREAM REFUSED_STREAM), which a bench counts as a failed call.
"""

import asyncio
import sys

import uvloop
from ngh2 import (Configuration, Connection, DataReceived, GoAwayReceived, NGH2Error, RequestReceived,
                  ResponseReceived, Role, StreamClosed, StreamReset, TrailersReceived)

UP_PORT = int(sys.argv[2])
MAX_STREAMS = 100  # SETTINGS_MAX_CONCURRENT_STREAMS offered to clients (the sidecar's default --h2-max-streams)
REFUSED, CANCEL, INTERNAL = 7, 8, 2
UP = None  # the live upstream connection (``Up``), None while dialling


class Up(asyncio.Protocol):
    """The one upstream h2c connection; ``streams``: upstream stream id -> (client, client stream id)."""

    def __init__(self, loop):
        self.c = Connection(Role.CLIENT, Configuration())
        self.streams = {}
        self.t = None
        self.loop = loop
        self.queued = False

    def connection_made(self, t):
        self.t = t
        self.c.initiate_connection({2: 0})  # ENABLE_PUSH 0
        self.flush()

    def soon(self):
        if not self.queued:
            self.queued = True
            self.loop.call_soon(self.flush)

    def flush(self):
        self.queued = False
        out = self.c.data_to_send()
        if out:
            self.t.write(out)

    def data_received(self, d):
        c = self.c
        if (events := receive(self, d)) is None:
            return
        touched = set()
        streams = self.streams
        for ev in events:
            t = type(ev)
            if t is DataReceived or t is ResponseReceived:
                s = streams.get(ev.stream_id)
                if s is not None:
                    cc = s[0].c
                    send, what = (cc.send_data, ev.data) if t is DataReceived else (cc.send_response, ev.headers)
                    if ev.end_stream:
                        send(s[1], what, end_stream=True)
                    else:
                        send(s[1], what)
                    touched.add(s[0])
            elif t is TrailersReceived:
                s = streams.get(ev.stream_id)
                if s is not None:
                    s[0].c.send_trailers(s[1], ev.headers)
                    touched.add(s[0])
            elif t is StreamClosed or t is StreamReset:
                s = streams.pop(ev.stream_id, None)
                if s is not None and ev.error_code:
                    s[0].reset(s[1], ev.error_code)
                    touched.add(s[0])
            elif t is GoAwayReceived:
                self.retire()
        for cl in touched:
            cl.flush()
        if c.want_write:
            self.soon()

    def retire(self):
        """No new streams here: dial another connection (the open streams finish on this one)."""
        global UP
        if UP is self:
            UP = None
            asyncio.ensure_future(dial(self.loop))

    def connection_lost(self, exc):
        self.retire()
        for cl, sid in self.streams.values():
            cl.reset(sid, INTERNAL)
            cl.flush()
        self.streams.clear()


class Client(asyncio.Protocol):
    """One client connection; ``up``: client stream id -> (upstream connection, upstream stream id)."""

    def __init__(self):
        self.c = Connection(Role.SERVER, Configuration())
        self.up = {}
        self.t = None

    def connection_made(self, t):
        self.t = t
        self.c.initiate_connection({3: MAX_STREAMS})
        self.flush()

    def flush(self):
        out = self.c.data_to_send()
        if out:
            self.t.write(out)

    def reset(self, sid, code):
        try:
            self.c.reset_stream(sid, code)
        except NGH2Error:  # closed meanwhile
            pass
        self.up.pop(sid, None)

    def data_received(self, d):
        c = self.c
        if (events := receive(self, d)) is None:
            return
        up = UP
        for ev in events:
            t = type(ev)
            if t is DataReceived:
                u = self.up.get(ev.stream_id)
                if u is not None:
                    if ev.end_stream:
                        u[0].c.send_data(u[1], ev.data, end_stream=True)
                    else:
                        u[0].c.send_data(u[1], ev.data)
                    u[0].soon()
            elif t is RequestReceived:
                if up is None:
                    c.reset_stream(ev.stream_id, REFUSED)
                    continue
                usid = (up.c.send_request(ev.headers, end_stream=True) if ev.end_stream
                        else up.c.send_request(ev.headers))
                up.streams[usid] = (self, ev.stream_id)
                self.up[ev.stream_id] = (up, usid)
                up.soon()
            elif t is StreamClosed or t is StreamReset:
                u = self.up.pop(ev.stream_id, None)
                if u is not None and ev.error_code:
                    cancel(*u)
        self.flush()

    def connection_lost(self, exc):
        for u in self.up.values():
            cancel(*u)
        self.up.clear()


def receive(p, d):
    """Feed libnghttp2 what ``p``'s peer sent: the events, or None (the connection closed) when it is broken."""
    try:
        p.c.receive_data(d)
    except NGH2Error:
        p.t.close()
        return None
    return p.c.events()


def cancel(upc, usid):
    """The client's stream is gone: reset its upstream stream."""
    if upc.streams.pop(usid, None) is not None:
        try:
            upc.c.reset_stream(usid, CANCEL)
        except NGH2Error:
            pass
        upc.soon()


async def dial(loop):
    global UP
    while True:
        try:
            _, up = await loop.create_connection(lambda: Up(loop), "127.0.0.1", UP_PORT)
        except OSError as exc:
            print(f"bare-h2: upstream connect failed: {exc}", file=sys.stderr, flush=True)
            await asyncio.sleep(0.1)
            continue
        UP = up
        return


async def main():
    loop = asyncio.get_running_loop()
    await dial(loop)
    srv = await loop.create_server(Client, "127.0.0.1", int(sys.argv[1]), backlog=2048)
    await srv.serve_forever()


uvloop.run(main())
