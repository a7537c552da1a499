# cython: language_level=3, binding=False
"""The upstream response parser of the compiled build: llhttp driven from C (issue 30).

A drop-in for ``httptools.HttpResponseParser`` as ``UpstreamConn`` uses it (``feed_data``,
``get_status_code``, ``should_keep_alive``, the same exceptions; the connection's
``head_done`` / ``on_body`` / ``on_message_complete`` are called as C methods, ``upstream.pxd``) —
the same llhttp (``_vendor/llhttp``, the version httptools 0.9.0 bundles) with the same
(default, strict) settings, so both builds accept and refuse the same bytes. What differs:
httptools makes a Python call and two bytes objects per header; here llhttp's callbacks copy
the field bytes into one C buffer, and at the end of the head one pass sorts them with
``upstream._RESP_SPECIAL`` (``configure``): the forwarded ones become ONE bytes
(``head.lines == [block]``), Content-Length and Content-Type are set on the ``RespHead``, the
dropped ones (hop-by-hop, a plain ``Connection``) cost nothing, and only the rare kinds
(Transfer-Encoding, Upgrade) go through ``UpstreamConn.on_header``, the one copy of their
handling. A ``Connection`` header naming other fields (``head.ctoks``, which needs the
per-header ``lines``) sends the whole head through ``on_header``, as httptools would.
With nginx's eight-header 1 KiB response, ``UpstreamConn.data_received`` costs 13.7k
instructions on this parser and 23.5k on httptools (``bench/bench_resp_parser.py``).

Compiled only (there is no ``.py``): ``upstream.py`` imports it when it runs compiled, and the
stale-build guard (``sidecar/_build.py``, ``NATIVE``) keeps an out-of-date one from loading.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from libc.string cimport memcmp, memcpy, memset

from httptools import HttpParserCallbackError, HttpParserError, HttpParserInvalidStatusError, HttpParserUpgrade

from sidecar.proxy.httpmsg cimport RespHead
from sidecar.proxy.upstream cimport UpstreamConn


cdef extern from "llhttp.h":
    ctypedef struct llhttp_t:
        void* data
        unsigned char upgrade
        unsigned short status_code
        int error
    ctypedef int (*llhttp_data_cb)(llhttp_t*, const char*, size_t) noexcept
    ctypedef int (*llhttp_cb)(llhttp_t*) noexcept
    ctypedef struct llhttp_settings_t:
        llhttp_cb on_message_begin, on_headers_complete, on_message_complete
        llhttp_data_cb on_header_field, on_header_value, on_body
    ctypedef enum llhttp_type_t:
        HTTP_RESPONSE
    ctypedef enum llhttp_errno_t:
        HPE_OK, HPE_PAUSED_UPGRADE, HPE_USER, HPE_INVALID_STATUS
    void llhttp_settings_init(llhttp_settings_t*)
    void llhttp_init(llhttp_t*, llhttp_type_t, const llhttp_settings_t*)
    llhttp_errno_t llhttp_execute(llhttp_t*, const char*, size_t)
    int llhttp_should_keep_alive(const llhttp_t*)
    const char* llhttp_get_error_reason(const llhttp_t*)
    void llhttp_set_error_reason(llhttp_t*, const char*)
    const char* llhttp_get_error_pos(const llhttp_t*)
    void llhttp_resume_after_upgrade(llhttp_t*)


cdef struct Field:
    Py_ssize_t ns, nl, vs, vl  # name and value: offset and length in the parser's copy
    int kind


# upstream._RESP_SPECIAL as a C table (configure); kinds: -1 forwarded, else upstream's _DROP, _CONN, …
cdef enum:
    MAXSPECIAL = 32
cdef char _names[MAXSPECIAL][32]
cdef Py_ssize_t _lens[MAXSPECIAL]
cdef int _kinds[MAXSPECIAL]
cdef int _nspecial = 0
cdef int K_DROP = -2, K_CONN = -2, K_CLEN = -2, K_CTYPE = -2
# upstream._PLAIN_CONN (Connection values naming no other field), as spelled: compared in C, no bytes
# object and set look-up per response (bench_exchange_instr: -0.5k per request with nginx's head)
cdef enum:
    MAXPLAIN = 16
cdef char _plain[MAXPLAIN][32]
cdef Py_ssize_t _plain_lens[MAXPLAIN]
cdef int _nplain = 0


def configure(dict special, frozenset plain_conn, int drop, int conn, int clen, int ctype):
    """Take upstream's header table (lower-case name → kind) and the kinds handled here."""
    global _nspecial, K_DROP, K_CONN, K_CLEN, K_CTYPE, _nplain
    cdef bytes name
    cdef int i = 0
    if len(special) > MAXSPECIAL:
        raise ValueError("too many special response headers for llresp")
    for name, kind in special.items():
        if len(name) >= 32:
            raise ValueError(f"special response header name too long: {name!r}")
        memcpy(_names[i], <const char*>name, len(name))
        _lens[i] = len(name)
        _kinds[i] = kind
        i += 1
    _nspecial = i
    K_DROP, K_CONN, K_CLEN, K_CTYPE = drop, conn, clen, ctype
    if len(plain_conn) > MAXPLAIN:
        raise ValueError("too many plain Connection values for llresp")
    i = 0
    for name in plain_conn:
        if len(name) >= 32:
            raise ValueError(f"plain Connection value too long: {name!r}")
        memcpy(_plain[i], <const char*>name, len(name))
        _plain_lens[i] = len(name)
        i += 1
    _nplain = i


cdef inline bint _is_plain(const char* a, Py_ssize_t n) noexcept:
    """``a[:n] in upstream._PLAIN_CONN`` (exact bytes, as the frozenset compares)."""
    cdef int i
    for i in range(_nplain):
        if _plain_lens[i] == n and memcmp(_plain[i], a, n) == 0:
            return True
    return False


cdef inline int _classify(const char* a, Py_ssize_t n) noexcept:
    cdef int i
    cdef Py_ssize_t j
    cdef char c
    for i in range(_nspecial):
        if _lens[i] != n:
            continue
        for j in range(n):
            c = a[j]
            if 65 <= c <= 90:
                c = c + 32
            if c != _names[i][j]:
                break
        else:
            return _kinds[i]
    return -1


cdef int _on_begin(llhttp_t* p) noexcept:
    cdef RespParser self = <RespParser>p.data
    self.nf = 0
    self.blen = 0
    self.in_value = 0
    return 0


cdef int _on_field(llhttp_t* p, const char* at, size_t n) noexcept:
    cdef RespParser self = <RespParser>p.data
    cdef Field* f
    if self.nf == 0 or self.in_value:
        if self.nf == self.fcap and self._grow_fields() < 0:
            llhttp_set_error_reason(p, "out of memory")
            return HPE_USER
        f = &self.fields[self.nf]
        self.nf += 1
        f.ns = self.blen
        f.nl = 0
        f.vs = f.vl = 0
        self.in_value = 0
    f = &self.fields[self.nf - 1]
    if self._append(at, n) < 0:
        llhttp_set_error_reason(p, "out of memory")
        return HPE_USER
    f.nl += <Py_ssize_t>n
    return 0


cdef int _on_value(llhttp_t* p, const char* at, size_t n) noexcept:
    cdef RespParser self = <RespParser>p.data
    cdef Field* f = &self.fields[self.nf - 1]
    if not self.in_value:
        self.in_value = 1
        f.vs = self.blen
    if self._append(at, n) < 0:
        llhttp_set_error_reason(p, "out of memory")
        return HPE_USER
    f.vl += <Py_ssize_t>n
    return 0


cdef int _on_headers_complete(llhttp_t* p) noexcept:
    cdef RespParser self = <RespParser>p.data
    try:
        self._head()
        self.conn.head_done(p.status_code, llhttp_should_keep_alive(p))
    except BaseException as exc:
        self.last_error = exc
        return -1
    return 1 if p.upgrade else 0


cdef int _on_body(llhttp_t* p, const char* at, size_t n) noexcept:
    cdef RespParser self = <RespParser>p.data
    try:
        self.conn.on_body(PyBytes_FromStringAndSize(at, <Py_ssize_t>n))
    except BaseException as exc:
        llhttp_set_error_reason(p, "`on_body` callback error")
        self.last_error = exc
        return HPE_USER
    return 0


cdef int _on_message_complete(llhttp_t* p) noexcept:
    cdef RespParser self = <RespParser>p.data
    try:
        self.conn.on_message_complete()
    except BaseException as exc:
        self.last_error = exc
        return -1
    return 0


cdef class RespParser:
    """``httptools.HttpResponseParser``'s part that ``UpstreamConn`` uses; see the module doc."""

    cdef llhttp_t p
    cdef llhttp_settings_t s
    cdef UpstreamConn conn
    cdef char* buf          # the current head's field bytes, copied as llhttp reports them
    cdef Py_ssize_t blen, bcap
    cdef Field* fields
    cdef Py_ssize_t nf, fcap
    cdef int in_value
    cdef object last_error

    def __cinit__(self, UpstreamConn conn):
        self.conn = conn
        self.bcap = 1024
        self.buf = <char*>PyMem_Malloc(self.bcap)
        self.fcap = 16
        self.fields = <Field*>PyMem_Malloc(self.fcap * sizeof(Field))
        if self.buf is NULL or self.fields is NULL:
            raise MemoryError()
        llhttp_settings_init(&self.s)
        self.s.on_message_begin = _on_begin
        self.s.on_header_field = _on_field
        self.s.on_header_value = _on_value
        self.s.on_headers_complete = _on_headers_complete
        self.s.on_body = _on_body
        self.s.on_message_complete = _on_message_complete
        llhttp_init(&self.p, HTTP_RESPONSE, &self.s)
        self.p.data = <void*>self

    def __dealloc__(self):
        PyMem_Free(self.buf)
        PyMem_Free(self.fields)

    cdef int _append(self, const char* at, size_t n) noexcept:
        cdef Py_ssize_t need = self.blen + <Py_ssize_t>n
        cdef Py_ssize_t cap = self.bcap
        cdef char* nb
        if need > cap:
            while cap < need:
                cap *= 2
            nb = <char*>PyMem_Realloc(self.buf, cap)
            if nb is NULL:
                return -1
            self.buf = nb
            self.bcap = cap
        memcpy(self.buf + self.blen, at, n)
        self.blen = need
        return 0

    cdef int _grow_fields(self) noexcept:
        cdef Field* nf = <Field*>PyMem_Realloc(self.fields, 2 * self.fcap * sizeof(Field))
        if nf is NULL:
            return -1
        self.fields = nf
        self.fcap *= 2
        return 0

    cdef _head(self):
        """Sort the head's fields into ``conn.head`` (see the module doc)."""
        cdef RespHead h = self.conn.head
        cdef const char* b = self.buf
        cdef Field* f
        cdef Py_ssize_t i, o = 0, size = 0
        cdef bint slow = False
        cdef bytes value, block
        cdef char* out
        for i in range(self.nf):
            f = &self.fields[i]
            f.kind = _classify(b + f.ns, f.nl)
            if f.kind == -1 or f.kind == K_CTYPE:
                size += f.nl + f.vl + 4
            elif f.kind == K_CONN and not _is_plain(b + f.vs, f.vl):
                slow = True  # Connection names other fields: head.ctoks needs the per-header lines
        conn = self.conn
        if slow:  # exactly what httptools would deliver
            for i in range(self.nf):
                f = &self.fields[i]
                conn.on_header(PyBytes_FromStringAndSize(b + f.ns, f.nl), PyBytes_FromStringAndSize(b + f.vs, f.vl))
            return
        block = PyBytes_FromStringAndSize(NULL, size)
        out = <char*>block
        for i in range(self.nf):
            f = &self.fields[i]
            if f.kind == -1 or f.kind == K_CTYPE:
                memcpy(out + o, b + f.ns, f.nl)
                o += f.nl
                out[o] = 58  # ": "
                out[o + 1] = 32
                o += 2
                memcpy(out + o, b + f.vs, f.vl)
                o += f.vl
                out[o] = 13  # CRLF
                out[o + 1] = 10
                o += 2
                if f.kind == K_CTYPE:
                    h.ctype = PyBytes_FromStringAndSize(b + f.vs, f.vl)
            elif f.kind == K_CLEN:
                h.clen = PyBytes_FromStringAndSize(b + f.vs, f.vl)
            elif f.kind != K_DROP and f.kind != K_CONN:  # Transfer-Encoding, Upgrade: upstream's own code
                conn.on_header(PyBytes_FromStringAndSize(b + f.ns, f.nl), PyBytes_FromStringAndSize(b + f.vs, f.vl))
        if size:
            h.lines.append(block)

    def get_status_code(self):
        return self.p.status_code

    def should_keep_alive(self):
        return bool(llhttp_should_keep_alive(&self.p))

    def feed_data(self, data):
        cdef Py_buffer view
        cdef llhttp_errno_t err
        cdef const char* pos
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            err = llhttp_execute(&self.p, <const char*>view.buf, <size_t>view.len)
            if self.p.upgrade == 1 and err == HPE_PAUSED_UPGRADE:
                # as httptools: resume at once and say where the upgraded bytes start
                pos = llhttp_get_error_pos(&self.p)
                llhttp_resume_after_upgrade(&self.p)
                raise HttpParserUpgrade(pos - <const char*>view.buf)
        finally:
            PyBuffer_Release(&view)
        if err != HPE_OK:
            raise self._error(err)

    cdef _error(self, llhttp_errno_t err):
        """The exception httptools raises for ``err`` (its classes, its message)."""
        cdef const char* r = llhttp_get_error_reason(&self.p)
        reason = "" if r is NULL else (<bytes>r).decode("latin-1")
        if self.last_error is not None:
            exc = HttpParserCallbackError(reason)
            exc.__context__ = self.last_error
            self.last_error = None
            return exc
        if err == HPE_INVALID_STATUS:
            return HttpParserInvalidStatusError(reason)
        return HttpParserError(reason)
