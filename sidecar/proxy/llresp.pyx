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
from libc.string cimport memcmp, memset

from sidecar.proxy.httpmsg cimport RespHead
from sidecar.proxy.upstream cimport UpstreamConn

include "_llhttp.pxi"


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
    for i in range(_nspecial):
        if _lens[i] == n and _lower_eq(a, _names[i], n):
            return _kinds[i]
    return -1


cdef int _on_begin(llhttp_t* p) noexcept:
    cdef RespParser self = <RespParser>p.data
    self.fs.nf = 0
    self.fs.blen = 0
    self.fs.in_value = 0
    return 0


cdef int _on_field(llhttp_t* p, const char* at, size_t n) noexcept:
    cdef RespParser self = <RespParser>p.data
    if _fields_name(&self.fs, at, n) < 0:
        llhttp_set_error_reason(p, "out of memory")
        return HPE_USER
    return 0


cdef int _on_value(llhttp_t* p, const char* at, size_t n) noexcept:
    cdef RespParser self = <RespParser>p.data
    if _fields_value(&self.fs, at, n) < 0:
        llhttp_set_error_reason(p, "out of memory")
        return HPE_USER
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
    cdef Fields fs          # the current head's field bytes, copied as llhttp reports them (_llhttp.pxi)
    cdef object last_error

    def __cinit__(self, UpstreamConn conn):
        self.conn = conn
        _fields_init(&self.fs, 1024, 16)
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
        _fields_free(&self.fs)

    cdef _head(self):
        """Sort the head's fields into ``conn.head`` (see the module doc)."""
        cdef RespHead h = self.conn.head
        cdef const char* b = self.fs.buf
        cdef Field* f
        cdef Py_ssize_t i, o = 0, size = 0
        cdef bint slow = False
        cdef bytes value, block
        cdef char* out
        for i in range(self.fs.nf):
            f = &self.fs.fields[i]
            f.kind = _classify(b + f.ns, f.nl)
            if f.kind == -1 or f.kind == K_CTYPE:
                size += f.nl + f.vl + 4
            elif f.kind == K_CONN and not _is_plain(b + f.vs, f.vl):
                slow = True  # Connection names other fields: head.ctoks needs the per-header lines
        conn = self.conn
        if slow:  # exactly what httptools would deliver
            for i in range(self.fs.nf):
                f = &self.fs.fields[i]
                conn.on_header(PyBytes_FromStringAndSize(b + f.ns, f.nl), PyBytes_FromStringAndSize(b + f.vs, f.vl))
            return
        block = PyBytes_FromStringAndSize(NULL, size)
        out = <char*>block
        for i in range(self.fs.nf):
            f = &self.fs.fields[i]
            if f.kind == -1 or f.kind == K_CTYPE:
                o = _put_line(out, o, b, f)
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
        cdef llhttp_errno_t err = _execute(&self.p, data)
        if err != HPE_OK:
            exc = _parser_error(&self.p, err, self.last_error)
            self.last_error = None
            raise exc
