# distutils: libraries = nghttp2
# cython: language_level=3, boundscheck=False, wraparound=False
"""A bare h2c forwarder whose HTTP/2 work is driven from C: Cython calls libnghttp2's C API
directly, and no Python object is made per frame or header (``bench/_bare_h2_forwarder.py`` makes
one per event through ``ngh2``). ``bench_grpc.py`` runs it as ``cng-h2``
(docs/figures-peers.md, stop 37: "driving libnghttp2 from C"). A prototype for measurement, not
part of the product; built by ``_compiled_copy.compiled_argv`` (needs libnghttp2's headers:
Debian ``libnghttp2-dev``).

    python -c "import _cng_forwarder" PORT UPSTREAM_H2C_PORT

Same shape as bare-h2: uvloop protocols on both sides (bytes in -> ``nghttp2_session_mem_recv``,
``nghttp2_session_mem_send`` -> one ``transport.write``), a server session per client connection,
one client session on one upstream h2c connection; client streams mapped 1:1 onto upstream
streams by a C ``Call`` kept as both streams' user data. Headers are held as libnghttp2's own
refcounted buffers (``on_header_callback2``) until submitted on the other session; DATA is copied
into a per-call buffer that a data provider hands on; trailers are submitted from the response's
data provider at its end. A reset on either side resets the other. Flow control is libnghttp2's
(automatic WINDOW_UPDATE), as in bare-h2. Minimal: no checks beyond libnghttp2's, at most 64
headers per block (more: the stream is reset).
"""

import asyncio
import sys

import uvloop

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.ref cimport PyObject
from libc.stdint cimport int32_t, uint8_t, uint32_t
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memcpy

cdef extern from "nghttp2/nghttp2.h":
    ctypedef struct nghttp2_session
    ctypedef struct nghttp2_session_callbacks
    ctypedef struct nghttp2_rcbuf
    ctypedef struct nghttp2_vec:
        uint8_t *base
        size_t len
    ctypedef struct nghttp2_nv:
        uint8_t *name
        uint8_t *value
        size_t namelen
        size_t valuelen
        uint8_t flags
    ctypedef struct nghttp2_frame_hd:
        size_t length
        int32_t stream_id
        uint8_t type
        uint8_t flags
    ctypedef enum nghttp2_headers_category:
        NGHTTP2_HCAT_REQUEST
        NGHTTP2_HCAT_RESPONSE
        NGHTTP2_HCAT_PUSH_RESPONSE
        NGHTTP2_HCAT_HEADERS
    ctypedef struct nghttp2_headers:
        nghttp2_frame_hd hd
        nghttp2_headers_category cat
    ctypedef union nghttp2_frame:
        nghttp2_frame_hd hd
        nghttp2_headers headers
    ctypedef union nghttp2_data_source:
        int fd
        void *ptr
    ctypedef ssize_t (*nghttp2_data_source_read_callback)(nghttp2_session *, int32_t, uint8_t *, size_t,
                                                           uint32_t *, nghttp2_data_source *, void *)
    ctypedef struct nghttp2_data_provider:
        nghttp2_data_source source
        nghttp2_data_source_read_callback read_callback
    ctypedef struct nghttp2_settings_entry:
        int32_t settings_id
        uint32_t value
    ctypedef struct nghttp2_priority_spec

    enum:
        NGHTTP2_DATA = 0
        NGHTTP2_HEADERS = 1
        NGHTTP2_GOAWAY = 7
        NGHTTP2_FLAG_END_STREAM = 1
        NGHTTP2_DATA_FLAG_EOF = 1
        NGHTTP2_DATA_FLAG_NO_END_STREAM = 2
        NGHTTP2_ERR_DEFERRED = -508
        NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE = -521
        NGHTTP2_NV_FLAG_NONE = 0
        NGHTTP2_FLAG_NONE = 0
        NGHTTP2_SETTINGS_ENABLE_PUSH = 2
        NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS = 3

    nghttp2_vec nghttp2_rcbuf_get_buf(nghttp2_rcbuf *)
    void nghttp2_rcbuf_incref(nghttp2_rcbuf *)
    void nghttp2_rcbuf_decref(nghttp2_rcbuf *)

    int nghttp2_session_callbacks_new(nghttp2_session_callbacks **)
    void nghttp2_session_callbacks_set_on_begin_headers_callback(
        nghttp2_session_callbacks *, int (*)(nghttp2_session *, const nghttp2_frame *, void *) noexcept)
    void nghttp2_session_callbacks_set_on_header_callback2(
        nghttp2_session_callbacks *, int (*)(nghttp2_session *, const nghttp2_frame *, nghttp2_rcbuf *,
                                              nghttp2_rcbuf *, uint8_t, void *) noexcept)
    void nghttp2_session_callbacks_set_on_frame_recv_callback(
        nghttp2_session_callbacks *, int (*)(nghttp2_session *, const nghttp2_frame *, void *) noexcept)
    void nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        nghttp2_session_callbacks *, int (*)(nghttp2_session *, uint8_t, int32_t, const uint8_t *, size_t,
                                              void *) noexcept)
    void nghttp2_session_callbacks_set_on_stream_close_callback(
        nghttp2_session_callbacks *, int (*)(nghttp2_session *, int32_t, uint32_t, void *) noexcept)

    int nghttp2_session_server_new(nghttp2_session **, const nghttp2_session_callbacks *, void *)
    int nghttp2_session_client_new(nghttp2_session **, const nghttp2_session_callbacks *, void *)
    void nghttp2_session_del(nghttp2_session *)
    ssize_t nghttp2_session_mem_recv(nghttp2_session *, const uint8_t *, size_t)
    ssize_t nghttp2_session_mem_send(nghttp2_session *, const uint8_t **)
    int nghttp2_session_want_read(nghttp2_session *)
    int nghttp2_session_want_write(nghttp2_session *)
    void *nghttp2_session_get_stream_user_data(nghttp2_session *, int32_t)
    int nghttp2_session_set_stream_user_data(nghttp2_session *, int32_t, void *)
    int nghttp2_session_resume_data(nghttp2_session *, int32_t)
    int nghttp2_submit_settings(nghttp2_session *, uint8_t, const nghttp2_settings_entry *, size_t)
    int32_t nghttp2_submit_request(nghttp2_session *, const nghttp2_priority_spec *, const nghttp2_nv *, size_t,
                                   const nghttp2_data_provider *, void *)
    int nghttp2_submit_response(nghttp2_session *, int32_t, const nghttp2_nv *, size_t,
                                const nghttp2_data_provider *)
    int nghttp2_submit_trailer(nghttp2_session *, int32_t, const nghttp2_nv *, size_t)
    int nghttp2_submit_rst_stream(nghttp2_session *, uint8_t, int32_t, uint32_t)

DEF MAXH = 64
cdef enum:
    REFUSED = 7
    CANCEL = 8
    INTERNAL = 2
    MAX_STREAMS = 100  # SETTINGS_MAX_CONCURRENT_STREAMS offered to clients (as bare-h2)


cdef struct Buf:
    char *p
    size_t len
    size_t off
    size_t cap


cdef struct Side:
    nghttp2_session *s
    PyObject *owner        # the Conn (borrowed: it clears this Side before it goes)
    Call *head             # the calls on this connection (client side: cprev/cnext; upstream: uprev/unext)
    bint is_up
    bint touched           # in g_touched, to be written after this read
    bint goaway


cdef struct Call:
    Side *cl               # NULL once the client's stream (or connection) is gone
    Side *up               # NULL before the upstream stream is submitted and once it is gone
    int32_t csid
    int32_t usid
    Call *cprev
    Call *cnext
    Call *uprev
    Call *unext
    Buf req                # client DATA not yet sent upstream
    Buf resp               # upstream DATA not yet sent to the client
    bint req_eof
    bint resp_eof
    bint trailers          # hn/hv hold trailers for the client's stream
    int nh
    nghttp2_rcbuf *hn[MAXH]
    nghttp2_rcbuf *hv[MAXH]


cdef Side *g_up = NULL        # the live upstream connection's side (NULL while dialling)
cdef Side *g_touched[65536]   # sides written to by callbacks during one read
cdef int g_ntouched = 0
cdef Buf g_out                # mem_send's output gathered for one transport.write
cdef nghttp2_session_callbacks *g_cb_client = NULL
cdef nghttp2_session_callbacks *g_cb_up = NULL


cdef inline void touch(Side *sd) noexcept:
    global g_ntouched
    if not sd.touched and g_ntouched < 65536:
        sd.touched = True
        g_touched[g_ntouched] = sd
        g_ntouched += 1


cdef inline int buf_add(Buf *b, const uint8_t *data, size_t n) noexcept:
    cdef char *p
    cdef size_t cap
    if b.off and b.off == b.len:
        b.off = b.len = 0
    if b.len + n > b.cap:
        cap = b.cap * 2 if b.cap else 256
        while cap < b.len + n:
            cap *= 2
        p = <char *>realloc(b.p, cap)
        if p == NULL:
            return -1
        b.p, b.cap = p, cap
    memcpy(b.p + b.len, data, n)
    b.len += n
    return 0


cdef inline void release_headers(Call *c) noexcept:
    cdef int i
    for i in range(c.nh):
        nghttp2_rcbuf_decref(c.hn[i])
        nghttp2_rcbuf_decref(c.hv[i])
    c.nh = 0
    c.trailers = False


cdef inline void to_nv(Call *c, nghttp2_nv *nva) noexcept:
    cdef int i
    cdef nghttp2_vec v
    for i in range(c.nh):
        v = nghttp2_rcbuf_get_buf(c.hn[i])
        nva[i].name, nva[i].namelen = v.base, v.len
        v = nghttp2_rcbuf_get_buf(c.hv[i])
        nva[i].value, nva[i].valuelen = v.base, v.len
        nva[i].flags = NGHTTP2_NV_FLAG_NONE


cdef void unlink_cl(Call *c) noexcept:
    if c.cprev != NULL:
        c.cprev.cnext = c.cnext
    else:
        c.cl.head = c.cnext
    if c.cnext != NULL:
        c.cnext.cprev = c.cprev
    c.cl = NULL


cdef void unlink_up(Call *c) noexcept:
    if c.uprev != NULL:
        c.uprev.unext = c.unext
    else:
        c.up.head = c.unext
    if c.unext != NULL:
        c.unext.uprev = c.uprev
    c.up = NULL


cdef void maybe_free(Call *c) noexcept:
    if c.cl == NULL and c.up == NULL:
        release_headers(c)
        free(c.req.p)
        free(c.resp.p)
        free(c)


cdef inline ssize_t read_buf(Buf *b, uint8_t *out, size_t length, bint eof, uint32_t *flags) noexcept:
    cdef size_t n = b.len - b.off
    if n > length:
        n = length
    if n:
        memcpy(out, b.p + b.off, n)
        b.off += n
    if b.off == b.len and eof:
        flags[0] |= NGHTTP2_DATA_FLAG_EOF
    elif n == 0:
        return NGHTTP2_ERR_DEFERRED
    return n


cdef ssize_t read_req(nghttp2_session *s, int32_t sid, uint8_t *out, size_t length, uint32_t *flags,
                      nghttp2_data_source *src, void *ud) noexcept:
    cdef Call *c = <Call *>src.ptr
    return read_buf(&c.req, out, length, c.req_eof, flags)


cdef ssize_t read_resp(nghttp2_session *s, int32_t sid, uint8_t *out, size_t length, uint32_t *flags,
                       nghttp2_data_source *src, void *ud) noexcept:
    cdef Call *c = <Call *>src.ptr
    cdef ssize_t n = read_buf(&c.resp, out, length, c.resp_eof, flags)
    cdef nghttp2_nv nva[MAXH]
    if n >= 0 and flags[0] & NGHTTP2_DATA_FLAG_EOF and c.trailers:
        flags[0] |= NGHTTP2_DATA_FLAG_NO_END_STREAM
        to_nv(c, nva)
        nghttp2_submit_trailer(s, sid, nva, c.nh)
        release_headers(c)
    return n


# --- callbacks shared by both sides ---

cdef int on_header(nghttp2_session *s, const nghttp2_frame *f, nghttp2_rcbuf *name, nghttp2_rcbuf *value,
                   uint8_t flags, void *ud) noexcept:
    cdef Call *c = <Call *>nghttp2_session_get_stream_user_data(s, f.hd.stream_id)
    if c == NULL:
        return 0
    if c.nh == MAXH:
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
    nghttp2_rcbuf_incref(name)
    nghttp2_rcbuf_incref(value)
    c.hn[c.nh] = name
    c.hv[c.nh] = value
    c.nh += 1
    return 0


# --- the client's side (server session) ---

cdef int cl_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud) noexcept:
    cdef Side *sd = <Side *>ud
    cdef Call *c
    if f.hd.type != NGHTTP2_HEADERS or f.headers.cat != NGHTTP2_HCAT_REQUEST:
        return 0
    c = <Call *>calloc(1, sizeof(Call))
    if c == NULL:
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
    c.cl = sd
    c.csid = f.hd.stream_id
    c.cnext = sd.head
    if sd.head != NULL:
        sd.head.cprev = c
    sd.head = c
    nghttp2_session_set_stream_user_data(s, f.hd.stream_id, c)
    return 0


cdef int cl_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud) noexcept:
    cdef Call *c
    cdef nghttp2_nv nva[MAXH]
    cdef nghttp2_data_provider prd
    cdef int32_t usid
    cdef bint end = f.hd.flags & NGHTTP2_FLAG_END_STREAM
    if f.hd.type != NGHTTP2_HEADERS and f.hd.type != NGHTTP2_DATA:
        return 0
    c = <Call *>nghttp2_session_get_stream_user_data(s, f.hd.stream_id)
    if c == NULL:
        return 0
    if f.hd.type == NGHTTP2_HEADERS and f.headers.cat == NGHTTP2_HCAT_REQUEST:
        if g_up == NULL:
            release_headers(c)
            nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, c.csid, REFUSED)
            return 0
        to_nv(c, nva)
        prd.source.ptr = c
        prd.read_callback = read_req
        c.req_eof = end
        usid = nghttp2_submit_request(g_up.s, NULL, nva, c.nh, NULL if end else &prd, c)
        release_headers(c)
        if usid < 0:
            nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, c.csid, REFUSED)
            return 0
        c.usid = usid
        c.up = g_up
        c.unext = g_up.head
        if g_up.head != NULL:
            g_up.head.uprev = c
        g_up.head = c
        touch(g_up)
        return 0
    if f.hd.type == NGHTTP2_HEADERS:  # request trailers: not forwarded (gRPC clients send none)
        release_headers(c)
    if end and c.up != NULL:
        c.req_eof = True
        nghttp2_session_resume_data(c.up.s, c.usid)
        touch(c.up)
    return 0


cdef int cl_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t n,
                 void *ud) noexcept:
    cdef Call *c = <Call *>nghttp2_session_get_stream_user_data(s, sid)
    if c == NULL or c.up == NULL:
        return 0
    if buf_add(&c.req, data, n) < 0:
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
    nghttp2_session_resume_data(c.up.s, c.usid)
    touch(c.up)
    return 0


cdef int cl_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud) noexcept:
    cdef Call *c = <Call *>nghttp2_session_get_stream_user_data(s, sid)
    if c == NULL:
        return 0
    unlink_cl(c)
    if c.up != NULL:  # the client's stream ended first (reset, or gone): cancel the upstream's
        nghttp2_submit_rst_stream(c.up.s, NGHTTP2_FLAG_NONE, c.usid, CANCEL)
        touch(c.up)
    maybe_free(c)
    return 0


# --- the upstream's side (client session) ---

cdef int up_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud) noexcept:
    cdef Call *c
    cdef nghttp2_nv nva[MAXH]
    cdef nghttp2_data_provider prd
    cdef bint end = f.hd.flags & NGHTTP2_FLAG_END_STREAM
    if f.hd.type == NGHTTP2_GOAWAY:
        (<Side *>ud).goaway = True
        return 0
    if f.hd.type != NGHTTP2_HEADERS and f.hd.type != NGHTTP2_DATA:
        return 0
    c = <Call *>nghttp2_session_get_stream_user_data(s, f.hd.stream_id)
    if c == NULL:
        return 0
    if c.cl == NULL:
        release_headers(c)
        return 0
    if f.hd.type == NGHTTP2_HEADERS and f.headers.cat == NGHTTP2_HCAT_RESPONSE:
        to_nv(c, nva)
        prd.source.ptr = c
        prd.read_callback = read_resp
        c.resp_eof = end
        if nghttp2_submit_response(c.cl.s, c.csid, nva, c.nh, NULL if end else &prd) < 0:
            nghttp2_submit_rst_stream(c.cl.s, NGHTTP2_FLAG_NONE, c.csid, INTERNAL)
        release_headers(c)
        touch(c.cl)
        return 0
    if f.hd.type == NGHTTP2_HEADERS:  # trailers: the response's data provider submits them at its end
        c.trailers = True
    if end:
        c.resp_eof = True
        nghttp2_session_resume_data(c.cl.s, c.csid)
        touch(c.cl)
    return 0


cdef int up_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t n,
                 void *ud) noexcept:
    cdef Call *c = <Call *>nghttp2_session_get_stream_user_data(s, sid)
    if c == NULL or c.cl == NULL:
        return 0
    if buf_add(&c.resp, data, n) < 0:
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
    nghttp2_session_resume_data(c.cl.s, c.csid)
    touch(c.cl)
    return 0


cdef int up_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud) noexcept:
    cdef Call *c = <Call *>nghttp2_session_get_stream_user_data(s, sid)
    if c == NULL:
        return 0
    unlink_up(c)
    if code and c.cl != NULL:
        nghttp2_submit_rst_stream(c.cl.s, NGHTTP2_FLAG_NONE, c.csid, code)
        touch(c.cl)
    maybe_free(c)
    return 0


cdef void make_callbacks():
    global g_cb_client, g_cb_up
    nghttp2_session_callbacks_new(&g_cb_client)
    nghttp2_session_callbacks_set_on_begin_headers_callback(g_cb_client, cl_begin_headers)
    nghttp2_session_callbacks_set_on_header_callback2(g_cb_client, on_header)
    nghttp2_session_callbacks_set_on_frame_recv_callback(g_cb_client, cl_frame_recv)
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(g_cb_client, cl_data)
    nghttp2_session_callbacks_set_on_stream_close_callback(g_cb_client, cl_close)
    nghttp2_session_callbacks_new(&g_cb_up)
    nghttp2_session_callbacks_set_on_header_callback2(g_cb_up, on_header)
    nghttp2_session_callbacks_set_on_frame_recv_callback(g_cb_up, up_frame_recv)
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(g_cb_up, up_data)
    nghttp2_session_callbacks_set_on_stream_close_callback(g_cb_up, up_close)


make_callbacks()


cdef class Conn:
    """One connection's protocol: ``side`` holds its libnghttp2 session for the C callbacks."""
    cdef Side side
    cdef object t
    cdef object loop
    cdef bint queued

    def connection_made(self, t):
        self.t = t

    def pause_writing(self):
        pass

    def resume_writing(self):
        pass

    def eof_received(self):
        return None

    cdef int flush(self) except -1:
        """Everything libnghttp2 has to send on this connection, in one write."""
        cdef const uint8_t *data
        cdef ssize_t n
        self.queued = False
        if self.side.s == NULL:
            return 0
        g_out.len = 0
        while True:
            n = nghttp2_session_mem_send(self.side.s, &data)
            if n <= 0:
                break
            if buf_add(&g_out, data, n) < 0:
                raise MemoryError
        if n < 0:
            self.t.close()
        if g_out.len:
            self.t.write(PyBytes_FromStringAndSize(g_out.p, g_out.len))
        return 0

    def flush_soon(self):
        self.flush()

    cdef int feed(self, bytes d) except -1:
        """Hand libnghttp2 what the peer sent, then write to every connection its callbacks touched."""
        global g_ntouched
        cdef int i
        cdef Side *sd
        if self.side.s == NULL:
            return 0
        g_ntouched = 0
        if nghttp2_session_mem_recv(self.side.s, <const uint8_t *>PyBytes_AS_STRING(d), PyBytes_GET_SIZE(d)) < 0:
            self.t.close()
        for i in range(g_ntouched):
            sd = g_touched[i]
            sd.touched = False
            if sd == &self.side:
                continue
            if sd.is_up:
                (<Conn>sd.owner).soon()
            else:
                (<Conn>sd.owner).flush()
        g_ntouched = 0
        return 0

    cdef soon(self):
        if not self.queued:
            self.queued = True
            self.loop.call_soon(self.flush_soon)


cdef class Client(Conn):
    def __cinit__(self):
        cdef nghttp2_settings_entry ent
        nghttp2_session_server_new(&self.side.s, g_cb_client, &self.side)
        self.side.owner = <PyObject *>self
        ent.settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS
        ent.value = MAX_STREAMS
        nghttp2_submit_settings(self.side.s, NGHTTP2_FLAG_NONE, &ent, 1)

    def connection_made(self, t):
        self.t = t
        self.flush()

    def data_received(self, bytes d):
        self.feed(d)
        self.flush()

    def connection_lost(self, exc):
        cdef Call *c
        cdef Call *nx
        c = self.side.head
        while c != NULL:
            nx = c.cnext
            c.cl = NULL
            if c.up != NULL:
                nghttp2_submit_rst_stream(c.up.s, NGHTTP2_FLAG_NONE, c.usid, CANCEL)
                (<Conn>c.up.owner).soon()
            maybe_free(c)
            c = nx
        self.side.head = NULL
        nghttp2_session_del(self.side.s)
        self.side.s = NULL


cdef class Up(Conn):
    def __cinit__(self, loop):
        cdef nghttp2_settings_entry ent
        self.loop = loop
        nghttp2_session_client_new(&self.side.s, g_cb_up, &self.side)
        self.side.owner = <PyObject *>self
        self.side.is_up = True
        ent.settings_id = NGHTTP2_SETTINGS_ENABLE_PUSH
        ent.value = 0
        nghttp2_submit_settings(self.side.s, NGHTTP2_FLAG_NONE, &ent, 1)

    def connection_made(self, t):
        self.t = t
        self.flush()

    def data_received(self, bytes d):
        self.feed(d)
        if self.side.goaway:
            self.retire()
        if self.side.s != NULL and nghttp2_session_want_write(self.side.s):
            self.soon()

    def retire(self):
        """No new streams here: dial another connection (the open streams finish on this one)."""
        global g_up, UP
        if g_up == &self.side:
            g_up = NULL
            UP = None
            asyncio.ensure_future(dial(self.loop))

    def connection_lost(self, exc):
        cdef Call *c
        cdef Call *nx
        self.retire()
        c = self.side.head
        while c != NULL:
            nx = c.unext
            c.up = NULL
            if c.cl != NULL:
                nghttp2_submit_rst_stream(c.cl.s, NGHTTP2_FLAG_NONE, c.csid, INTERNAL)
                (<Conn>c.cl.owner).flush()
            maybe_free(c)
            c = nx
        self.side.head = NULL
        nghttp2_session_del(self.side.s)
        self.side.s = NULL


UP_PORT = int(sys.argv[2])
UP = None  # the live upstream connection (keeps it alive while g_up points into it)


async def dial(loop):
    global UP, g_up
    cdef Up up
    while True:
        try:
            _, up = await loop.create_connection(lambda: Up(loop), "127.0.0.1", UP_PORT)
        except OSError as exc:
            print(f"cng-h2: upstream connect failed: {exc}", file=sys.stderr, flush=True)
            await asyncio.sleep(0.1)
            continue
        UP = up
        g_up = &up.side
        return


async def main():
    loop = asyncio.get_running_loop()
    await dial(loop)
    srv = await loop.create_server(Client, "127.0.0.1", int(sys.argv[1]), backlog=2048)
    await srv.serve_forever()


uvloop.run(main())
