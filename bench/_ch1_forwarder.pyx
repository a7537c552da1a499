# distutils: sources = llhttp/src/api.c llhttp/src/http.c llhttp/src/llhttp.c
# distutils: include_dirs = llhttp/include
# cython: language_level=3, boundscheck=False, wraparound=False
"""A bare keep-alive HTTP/1.1 forwarder whose per-request work is in C: llhttp (the copy vendored in
sidecar/proxy/_vendor/llhttp, declared by sidecar/proxy/_llhttp.pxi, included here) driven from
Cython with C callbacks only, no Python object per header. ``bench_latency.py`` / ``bench_proxy.py``
run it as ``ch1`` beside ``bare-h1`` (``_bare_forwarder.py``: uvloop + httptools, a Python callback
per header): the floor for a Python-hosted HTTP/1.1 forwarder once its request work is in C
(docs/figures-peers.md, stop 38). A prototype for measurement, not part of the product; built by
``_compiled_copy.compiled_argv(..., extra=CH1_EXTRA)`` (needs a C compiler and Cython).

    python -c "import _ch1_forwarder" PORT UPSTREAM_PORT

Hosting: uvloop protocols on both sides, as bare-h1, but buffered ones (``get_buffer`` /
``buffer_updated``): uvloop reads into the connection's own buffer, so no bytes object is made per
read. Each read is run through llhttp, and the span it consumed is forwarded as read (head and body,
chunked framing included: no head is rebuilt) with one ``transport.write`` per read per direction.
llhttp only finds where each message ends: ``on_message_complete`` pauses the parser there
(``HPE_PAUSED``), so a pipelined request waits in the buffer (reading paused) until the response
to the one before it has ended. A request takes an idle upstream connection from a pool (LIFO) or
dials one; the upstream goes back to the pool at the end of its response unless that response said
it closes (``llhttp_should_keep_alive``), came before the request ended, or was followed by more
bytes. A HEAD request's response has no body; 1xx interim responses pass through. Minimal: a bad
request or response closes the connection (no 400/502), no Upgrade or CONNECT, no timeouts.
"""

import asyncio
import sys

import uvloop

from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.string cimport memmove

include "_llhttp.pxi"

cdef extern from "llhttp.h":
    enum:
        HPE_PAUSED
        HTTP_HEAD
    void llhttp_resume(llhttp_t*)


cdef enum:
    BUFSZ = 65536  # per connection; a read fills at most this much (uvloop suggests 256 KiB)


cdef int req_headers_complete(llhttp_t* p) noexcept:
    (<bint*>p.data)[0] = p.method == HTTP_HEAD  # the Client's is_head: its response will have no body
    return 0


cdef int resp_headers_complete(llhttp_t* p) noexcept:
    return 1 if (<bint*>p.data)[0] else 0  # 1: no body (the Up's head_req: the response to a HEAD)


cdef int req_message_complete(llhttp_t* p) noexcept:
    return HPE_PAUSED  # llhttp_execute stops right after this message; error_pos says where


cdef int resp_message_complete(llhttp_t* p) noexcept:
    if 100 <= p.status_code < 200 and p.status_code != 101:
        return 0  # an interim response (100 Continue): the final one follows on the same exchange
    return HPE_PAUSED


cdef llhttp_settings_t REQ_SETTINGS
cdef llhttp_settings_t RESP_SETTINGS
llhttp_settings_init(&REQ_SETTINGS)
REQ_SETTINGS.on_headers_complete = req_headers_complete
REQ_SETTINGS.on_message_complete = req_message_complete
llhttp_settings_init(&RESP_SETTINGS)
RESP_SETTINGS.on_headers_complete = resp_headers_complete
RESP_SETTINGS.on_message_complete = resp_message_complete

cdef list IDLE = []  # upstream connections between requests, newest last
cdef int UP_PORT = int(sys.argv[2])


cdef class Conn:
    cdef object t          # the transport
    cdef object ba         # the read buffer (a bytearray; ``buf`` points into it) and a memoryview over it
    cdef object view
    cdef char* buf
    cdef Py_ssize_t off, len
    cdef llhttp_t p
    cdef bint closed

    def __cinit__(self):
        self.ba = bytearray(BUFSZ)
        self.view = memoryview(self.ba)
        self.buf = PyByteArray_AS_STRING(self.ba)

    def connection_made(self, t):
        self.t = t

    def get_buffer(self, Py_ssize_t hint):
        return self.view if self.len == 0 else self.view[self.len:]  # (a rest kept only while reading is paused)

    def eof_received(self):
        return False  # close

    def pause_writing(self):
        pass

    def resume_writing(self):
        pass


cdef class Up(Conn):
    cdef Client client      # the client whose request this connection carries (None: idle or dialling)
    cdef bint head_req      # that request is a HEAD

    def __cinit__(self):
        llhttp_init(&self.p, HTTP_RESPONSE, &RESP_SETTINGS)
        self.p.data = &self.head_req

    def buffer_updated(self, Py_ssize_t n):
        cdef Client c = self.client
        cdef llhttp_errno_t err
        cdef Py_ssize_t end
        if c is None:  # bytes on an idle connection: not a response to anything
            self.t.close()
            return
        err = llhttp_execute(&self.p, self.buf, n)
        if err == HPE_OK:
            c.t.write(PyBytes_FromStringAndSize(self.buf, n))
            return
        if err != HPE_PAUSED:  # a bad response (or an upgrade): neither side can go on
            self.t.close()
            c.t.close()
            return
        end = llhttp_get_error_pos(&self.p) - self.buf
        llhttp_resume(&self.p)
        c.t.write(PyBytes_FromStringAndSize(self.buf, end))
        self.client = None
        c.up = None
        if not c.req_done:  # answered before its request ended: the request's rest has nowhere to go
            self.t.close()
            c.t.close()
            return
        # pooled only when it can carry another request: the response said it keeps alive (else the next
        # request could be written to a closing connection and lost) and nothing followed it
        if end == n and llhttp_should_keep_alive(&self.p) and not self.closed:
            IDLE.append(self)
        else:
            self.t.close()
        c.response_done()

    def connection_lost(self, exc):
        self.closed = True
        if self.client is not None:  # mid-exchange: that client cannot be answered (or its response ran to EOF)
            self.client.up = None
            self.client.t.close()
            self.client = None
        elif self in IDLE:  # the upstream closed an idle connection (nginx's keepalive_timeout): out of the pool
            IDLE.remove(self)


cdef class Client(Conn):
    cdef Up up              # the upstream carrying this client's current request
    cdef bint is_head       # the current request is a HEAD (set by llhttp's on_headers_complete)
    cdef bint req_done      # the current request has ended: parsing waits for its response
    cdef list pending       # what was read while an upstream is dialled (None: not dialling)
    cdef bint paused        # reading is paused (see reading())

    def __cinit__(self):
        llhttp_init(&self.p, HTTP_REQUEST, &REQ_SETTINGS)
        self.p.data = &self.is_head

    def buffer_updated(self, Py_ssize_t n):
        self.len += n
        self.run()

    cdef run(self):
        cdef llhttp_errno_t err
        cdef Py_ssize_t start, end
        while self.off < self.len and not self.req_done:
            start = self.off
            err = llhttp_execute(&self.p, self.buf + start, self.len - start)
            if err == HPE_OK:
                end = self.len
            elif err == HPE_PAUSED:
                end = llhttp_get_error_pos(&self.p) - self.buf
                llhttp_resume(&self.p)
                self.req_done = True
            else:  # a bad request (or an upgrade): a floor, so no 400, the connection closes
                self.t.close()
                return
            self.off = end
            self.forward(PyBytes_FromStringAndSize(self.buf + start, end - start))
        if self.off == self.len:
            self.off = self.len = 0
        elif self.off:  # a pipelined request waits for the response to the one before it
            memmove(self.buf, self.buf + self.off, self.len - self.off)
            self.len -= self.off
            self.off = 0
        self.reading()

    cdef reading(self):
        """Read from the client only while nothing waits: no pipelined rest, no upstream being dialled (a
        transport call only when that changes, not per read)."""
        cdef bint want = self.len == 0 and self.pending is None
        if want == self.paused:
            self.paused = not want
            if want:
                self.t.resume_reading()
            else:
                self.t.pause_reading()

    cdef forward(self, bytes data):
        cdef Up up = self.up
        if up is not None:
            up.head_req = self.is_head
            up.t.write(data)
        elif self.pending is not None:
            self.pending.append(data)
        elif IDLE:
            up = IDLE.pop()
            self.attach(up)
            up.t.write(data)
        else:
            self.pending = [data]
            asyncio.ensure_future(dial(self))

    cdef attach(self, Up up):
        self.up = up
        up.client = self
        up.head_req = self.is_head

    cdef response_done(self):
        self.req_done = False
        if not self.closed:
            self.run()

    def connection_lost(self, exc):
        self.closed = True
        if self.up is not None:  # mid-exchange: its response has nowhere to go, so the upstream cannot be reused
            self.up.client = None
            self.up.t.close()
            self.up = None


async def dial(Client c):
    cdef Up up
    try:
        _, up = await asyncio.get_running_loop().create_connection(Up, "127.0.0.1", UP_PORT)
    except OSError as exc:
        print(f"ch1: upstream connect failed: {exc}", file=sys.stderr, flush=True)
        c.t.close()
        return
    pending, c.pending = c.pending, None
    if c.closed:
        IDLE.append(up)
        return
    c.attach(up)
    up.t.write(b"".join(pending))
    c.reading()


async def main():
    srv = await asyncio.get_running_loop().create_server(Client, "127.0.0.1", int(sys.argv[1]), backlog=2048)
    await srv.serve_forever()


uvloop.run(main())
