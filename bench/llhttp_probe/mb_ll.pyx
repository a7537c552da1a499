# cython: language_level=3
# The probe of docs/compiled-build.md ("Measured first"): see bench/bench_llhttp_probe.py
# llhttp driven from Cython: C callbacks record offsets; one Python-level result per message
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from libc.string cimport memcpy
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE

cdef extern from "llhttp.h":
    ctypedef struct llhttp_t:
        void* data
        unsigned char method, http_major, http_minor, upgrade
        unsigned short status_code
    ctypedef int (*llhttp_data_cb)(llhttp_t*, const char*, size_t) noexcept
    ctypedef int (*llhttp_cb)(llhttp_t*) noexcept
    ctypedef struct llhttp_settings_t:
        llhttp_cb on_message_begin, on_headers_complete, on_message_complete
        llhttp_data_cb on_url, on_status, on_header_field, on_header_value, on_body
    ctypedef enum llhttp_type_t:
        HTTP_REQUEST, HTTP_RESPONSE
    void llhttp_settings_init(llhttp_settings_t*)
    void llhttp_init(llhttp_t*, llhttp_type_t, const llhttp_settings_t*)
    int llhttp_execute(llhttp_t*, const char*, size_t)
    int llhttp_should_keep_alive(const llhttp_t*)
    const char* llhttp_method_name(int)

cdef struct Span:
    int ns, nl, vs, vl

cdef struct St:
    const char* base
    int url_s, url_l, nh, body_s, body_l, msgs
    int hdone
    Span h[100]

cdef int c_begin(llhttp_t* p) noexcept:
    cdef St* s = <St*>p.data
    s.nh = 0; s.url_l = 0; s.body_l = 0; s.hdone = 0
    return 0
cdef int c_url(llhttp_t* p, const char* at, size_t n) noexcept:
    cdef St* s = <St*>p.data
    if s.url_l == 0: s.url_s = at - s.base
    s.url_l += n
    return 0
cdef int c_field(llhttp_t* p, const char* at, size_t n) noexcept:
    cdef St* s = <St*>p.data
    if s.nh == 0 or s.h[s.nh - 1].vl > 0 or s.h[s.nh-1].vs >= 0:
        if s.nh == 100: return -1
        s.h[s.nh].ns = at - s.base; s.h[s.nh].nl = n; s.h[s.nh].vs = -1; s.h[s.nh].vl = 0
        s.nh += 1
    else:
        s.h[s.nh - 1].nl += n
    return 0
cdef int c_value(llhttp_t* p, const char* at, size_t n) noexcept:
    cdef St* s = <St*>p.data
    if s.h[s.nh - 1].vs < 0: s.h[s.nh - 1].vs = at - s.base
    s.h[s.nh - 1].vl += n
    return 0
cdef int c_hdone(llhttp_t* p) noexcept:
    (<St*>p.data).hdone = 1
    return 0
cdef int c_body(llhttp_t* p, const char* at, size_t n) noexcept:
    cdef St* s = <St*>p.data
    if s.body_l == 0: s.body_s = at - s.base
    s.body_l += n
    return 0
cdef int c_done(llhttp_t* p) noexcept:
    (<St*>p.data).msgs += 1
    return 0

cdef inline bint ieq(const char* a, int n, const char* lower, int m) noexcept:
    cdef int i
    cdef char c
    if n != m: return 0
    for i in range(n):
        c = a[i]
        if c >= 65 and c <= 90: c = c + 32
        if c != lower[i]: return 0
    return 1

cdef int classify_req(const char* a, int n) noexcept:
    # 0 plain, 1 host, 2 clen, 3 te, 4 connection, 10 key, 6 rid
    if n == 4 and ieq(a, n, b"host", 4): return 1
    if n == 14 and ieq(a, n, b"content-length", 14): return 2
    if n == 17 and ieq(a, n, b"transfer-encoding", 17): return 3
    if n == 10 and ieq(a, n, b"connection", 10): return 4
    if n == 15 and ieq(a, n, b"x-partition-key", 15): return 10
    if n == 12 and ieq(a, n, b"x-request-id", 12): return 6
    return 0

cdef class Head:
    cdef public object url, host, clen, method_b, rid, keyv, fwd
    cdef public bint keep

cdef class Req:
    cdef llhttp_t p
    cdef llhttp_settings_t s
    cdef St st
    cdef public object body
    cdef public Head h
    cdef public long n
    def __init__(self):
        llhttp_settings_init(&self.s)
        self.s.on_message_begin = c_begin; self.s.on_url = c_url; self.s.on_header_field = c_field
        self.s.on_header_value = c_value; self.s.on_headers_complete = c_hdone; self.s.on_body = c_body
        self.s.on_message_complete = c_done
        llhttp_init(&self.p, HTTP_REQUEST, &self.s)
        self.p.data = &self.st
        self.n = 0
    cpdef feed(self, bytes data):
        cdef const char* b = PyBytes_AS_STRING(data)
        self.st.base = b
        self.st.msgs = 0
        cdef int err = llhttp_execute(&self.p, b, len(data))
        if err != 0:
            raise ValueError(err)
        if self.st.hdone:
            self._head(data)
        if self.st.body_l:
            self.body = PyBytes_FromStringAndSize(b + self.st.body_s, self.st.body_l)
        self.n += self.st.msgs
    cdef _head(self, bytes data):
        cdef St* s = &self.st
        cdef Head h = Head()
        cdef const char* b = s.base
        cdef char buf[8192]
        cdef int o = 0, i, k
        cdef Span* sp
        h.url = PyBytes_FromStringAndSize(b + s.url_s, s.url_l)
        h.method_b = llhttp_method_name(self.p.method)
        h.keep = llhttp_should_keep_alive(&self.p)
        for i in range(s.nh):
            sp = &s.h[i]
            k = classify_req(b + sp.ns, sp.nl)
            if k == 0 or k == 10 or k == 6:
                memcpy(buf + o, b + sp.ns, sp.nl); o += sp.nl
                buf[o] = 58; buf[o+1] = 32; o += 2
                memcpy(buf + o, b + sp.vs, sp.vl); o += sp.vl
                buf[o] = 13; buf[o+1] = 10; o += 2
                if k == 10: h.keyv = PyBytes_FromStringAndSize(b + sp.vs, sp.vl)
                elif k == 6: h.rid = PyBytes_FromStringAndSize(b + sp.vs, sp.vl)
            elif k == 1: h.host = PyBytes_FromStringAndSize(b + sp.vs, sp.vl)
            elif k == 2: h.clen = PyBytes_FromStringAndSize(b + sp.vs, sp.vl)
        h.fwd = PyBytes_FromStringAndSize(buf, o)
        self.h = h

cdef class RHead:
    cdef public int status
    cdef public object lines, clen, ctype
    cdef public bint keep

cdef class Resp:
    cdef llhttp_t p
    cdef llhttp_settings_t s
    cdef St st
    cdef public object body
    cdef public RHead last
    cdef public long n
    def __init__(self):
        llhttp_settings_init(&self.s)
        self.s.on_message_begin = c_begin; self.s.on_header_field = c_field
        self.s.on_header_value = c_value; self.s.on_headers_complete = c_hdone; self.s.on_body = c_body
        self.s.on_message_complete = c_done
        llhttp_init(&self.p, HTTP_RESPONSE, &self.s)
        self.p.data = &self.st
        self.n = 0
    cpdef feed(self, bytes data):
        cdef const char* b = PyBytes_AS_STRING(data)
        self.st.base = b
        self.st.msgs = 0
        cdef int err = llhttp_execute(&self.p, b, len(data))
        if err != 0:
            raise ValueError(err)
        if self.st.hdone:
            self._head(data)
        if self.st.body_l:
            self.body = PyBytes_FromStringAndSize(b + self.st.body_s, self.st.body_l)
        self.n += self.st.msgs
    cdef _head(self, bytes data):
        cdef St* s = &self.st
        cdef RHead h = RHead()
        cdef const char* b = s.base
        cdef char buf[8192]
        cdef int o = 0, i, n
        cdef Span* sp
        h.status = self.p.status_code
        h.keep = llhttp_should_keep_alive(&self.p)
        for i in range(s.nh):
            sp = &s.h[i]
            n = sp.nl
            if n == 14 and ieq(b + sp.ns, n, b"content-length", 14):
                h.clen = PyBytes_FromStringAndSize(b + sp.vs, sp.vl); continue
            if (n == 10 and ieq(b + sp.ns, n, b"connection", 10)) or (n == 17 and ieq(b + sp.ns, n, b"transfer-encoding", 17)):
                continue
            if n == 12 and ieq(b + sp.ns, n, b"content-type", 12):
                h.ctype = PyBytes_FromStringAndSize(b + sp.vs, sp.vl)
            memcpy(buf + o, b + sp.ns, sp.nl); o += sp.nl
            buf[o] = 58; buf[o+1] = 32; o += 2
            memcpy(buf + o, b + sp.vs, sp.vl); o += sp.vl
            buf[o] = 13; buf[o+1] = 10; o += 2
        h.lines = PyBytes_FromStringAndSize(buf, o)
        self.last = h
