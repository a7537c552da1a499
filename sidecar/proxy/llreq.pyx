# cython: language_level=3, binding=False
"""The client request parser of the compiled build: llhttp driven from C (issue 30).

A drop-in for ``httptools.HttpRequestParser`` as ``ClientConn`` uses it (``feed_data`` and the
same exceptions, with the same classes and texts) — the same llhttp (``_vendor/llhttp``, the
version httptools 0.9.0 bundles) with the same (default, strict) settings and the same return
values from the callbacks, so both builds accept and refuse the same bytes. What differs:
httptools makes a Python call and two bytes objects per header (``ClientConn.on_header``);
here llhttp's callbacks copy the target and the field bytes into one C buffer, count the head's
size as httptools' ``on_url``/``on_header`` would (the 431 check, at the same bytes), and at the
end of the head one pass sorts the fields with ``conn._header_table`` (its C copy, ``_Table``):
the lines that go upstream as sent become ONE bytes (``head.fwd == [block]``, in arrival
order), the dropped ones cost nothing, and only the fields the proxy owns (Host,
Content-Length, the partition key, …) reach ``ClientConn.header``, the one copy of their
handling. Then ``ClientConn.head_done`` gets the method, keep-alive, version and upgrade that
``on_headers_complete`` would have asked httptools for. Message begin, body pieces, chunk
boundaries and message end are ``ClientConn``'s own methods, called in C (``conn.pxd``).
Trailer fields are not copied at all (the connection drops them either way).

Compiled only (there is no ``.py``): ``conn.py`` imports it when it runs compiled, and the
stale-build guard (``sidecar/_build.py``, ``NATIVE``) keeps an out-of-date one from loading.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING

from sidecar.proxy.conn cimport ClientConn
from sidecar.proxy.reqhead cimport ReqHead

include "_llhttp.pxi"


# conn.py's policy, handed over once (configure)
cdef object _table_fn = None      # conn._header_table(keyh_names, tracing) → {lower-case name: kind}
cdef bytes _drop_prefix = b""
cdef object _too_large = None     # conn._HeadTooLarge
cdef int K_PLAIN = -1, K_DROP = -1
cdef bint _fwd_kind[64]           # kind → its line goes upstream as sent (conn._FORWARDED)
cdef list _method_names = [None] * 256  # llhttp method number → its name (httptools' get_method)
cdef list _method_texts = [None] * 256  # ... and as text (what ClientConn.on_headers_complete decodes)
cdef str _V11 = "1.1"


def configure(table_fn, bytes drop_prefix, frozenset forwarded, int plain, int drop, too_large):
    """Take ``conn``'s header policy: its table function, the dropped prefix, the kinds whose
    lines are forwarded as sent, the plain and dropped kinds, the head-too-large exception."""
    global _table_fn, _drop_prefix, K_PLAIN, K_DROP, _too_large
    cdef int k
    for k in range(64):
        _fwd_kind[k] = False
    for k in forwarded:
        if not 0 <= k < 64:
            raise ValueError(f"header kind out of range for llreq: {k}")
        _fwd_kind[k] = True
    _table_fn, _drop_prefix, K_PLAIN, K_DROP, _too_large = table_fn, drop_prefix, plain, drop, too_large


cdef class _Table:
    """A C copy of one ``conn._header_table`` dict (lower-case name → kind)."""

    cdef list lnames           # the names (bytes, kept alive: ``names`` points into them)
    cdef const char** names
    cdef Py_ssize_t* lens
    cdef int* kinds
    cdef Py_ssize_t n
    cdef object src            # the dict it was made from (identity: the cache key)

    def __cinit__(self, dict src):
        cdef Py_ssize_t i = 0
        cdef bytes name
        self.src = src
        self.n = len(src)
        self.lnames = list(src)
        self.names = <const char**>PyMem_Malloc((self.n + 1) * sizeof(const char*))
        self.lens = <Py_ssize_t*>PyMem_Malloc((self.n + 1) * sizeof(Py_ssize_t))
        self.kinds = <int*>PyMem_Malloc((self.n + 1) * sizeof(int))
        if self.names is NULL or self.lens is NULL or self.kinds is NULL:
            raise MemoryError()
        for name in self.lnames:
            self.names[i] = PyBytes_AS_STRING(name)
            self.lens[i] = len(name)
            self.kinds[i] = src[name]
            i += 1

    def __dealloc__(self):
        PyMem_Free(self.names)
        PyMem_Free(self.lens)
        PyMem_Free(self.kinds)

    cdef inline int find(self, const char* a, Py_ssize_t n) noexcept:
        """The entry whose name equals ``a[:n]`` lower-cased (ASCII, as ``bytes.lower``), or -1."""
        cdef Py_ssize_t i
        for i in range(self.n):
            if self.lens[i] == n and _lower_eq(a, self.names[i], n):
                return <int>i
        return -1


cdef _Table _last_table = None


cdef _Table _table_for(ClientConn conn):
    global _last_table
    src = _table_fn(conn.keyh_names, conn.ctx.tracer is not None)  # (cached there: same dict, same table)
    if _last_table is None or _last_table.src is not src:
        _last_table = _Table(src)
    return _last_table


cdef inline bint _has_prefix(const char* a, Py_ssize_t n) noexcept:
    cdef Py_ssize_t m = len(_drop_prefix)
    return m != 0 and n >= m and _lower_eq(a, PyBytes_AS_STRING(_drop_prefix), m)


cdef int _error(llhttp_t* p, ReqParser self, exc, const char* reason) noexcept:
    """A data callback failed: as httptools, remember the exception and stop with HPE_USER."""
    llhttp_set_error_reason(p, reason)
    self.last_error = exc
    return HPE_USER


cdef int _on_begin(llhttp_t* p) noexcept:
    cdef ReqParser self = <ReqParser>p.data
    self.fs.nf = 0
    self.fs.blen = 0
    self.fs.in_value = 0
    self.ulen = 0
    self.hsize = 0
    self.in_head = 1
    try:
        self.conn.on_message_begin()
    except BaseException as exc:
        self.last_error = exc
        return -1
    return 0


cdef int _on_url(llhttp_t* p, const char* at, size_t n) noexcept:
    cdef ReqParser self = <ReqParser>p.data
    if _fields_append(&self.fs, at, n) < 0:  # (the target: before the fields, at the buffer's start)
        return _error(p, self, MemoryError(), "`on_url` callback error")
    self.ulen += <Py_ssize_t>n
    # the head's size as ClientConn.on_url counts it (431: the same bytes as with httptools)
    self.hsize += <Py_ssize_t>n
    if self.hsize > self.conn.max_header:
        return _error(p, self, _too_large(), "`on_url` callback error")
    return 0


cdef int _on_field(llhttp_t* p, const char* at, size_t n) noexcept:
    cdef ReqParser self = <ReqParser>p.data
    cdef Field* f
    cdef int r
    if not self.in_head:
        return 0  # a trailer field: not even copied (ClientConn.on_header drops it)
    r = _fields_name(&self.fs, at, n)
    if r < 0:
        return _error(p, self, MemoryError(), "`on_header_field` callback error")
    if r:  # the field before is complete: counted where httptools calls on_header for it
        f = &self.fs.fields[self.fs.nf - 2]
        self.hsize += f.nl + f.vl + 4
        if self.hsize > self.conn.max_header:
            return _error(p, self, _too_large(), "`on_header_field` callback error")
    return 0


cdef int _on_value(llhttp_t* p, const char* at, size_t n) noexcept:
    cdef ReqParser self = <ReqParser>p.data
    if self.in_head and _fields_value(&self.fs, at, n) < 0:  # (a trailer field's value: dropped)
        return _error(p, self, MemoryError(), "`on_header_value` callback error")
    return 0


cdef int _on_headers_complete(llhttp_t* p) noexcept:
    cdef ReqParser self = <ReqParser>p.data
    cdef Field* f
    cdef int m
    self.in_head = 0
    try:
        if self.fs.nf and self.fs.in_value:  # the last field: counted as httptools' flush at the head's end
            f = &self.fs.fields[self.fs.nf - 1]
            self.hsize += f.nl + f.vl + 4
            if self.hsize > self.conn.max_header:
                raise _too_large()
        elif self.fs.nf:  # a name without a value: httptools never delivers it (llhttp reports
            self.fs.nf -= 1   # every value, an empty one too, so this does not happen)
        self._head()
        m = p.method
        mb = _method_names[m]
        if mb is None:
            mb = _method_names[m] = <bytes>llhttp_method_name(<llhttp_method_t>m)
            _method_texts[m] = mb.decode("ascii", "replace")
        version = _V11 if p.http_major == 1 and p.http_minor == 1 else f"{p.http_major}.{p.http_minor}"
        self.conn.head_done(mb, _method_texts[m], llhttp_should_keep_alive(p), version, p.upgrade != 0)
    except BaseException as exc:
        self.last_error = exc
        return -1
    return 1 if p.upgrade else 0


cdef int _on_body(llhttp_t* p, const char* at, size_t n) noexcept:
    cdef ReqParser self = <ReqParser>p.data
    try:
        self.conn.on_body(PyBytes_FromStringAndSize(at, <Py_ssize_t>n))
    except BaseException as exc:
        return _error(p, self, exc, "`on_body` callback error")
    return 0


cdef int _on_chunk_header(llhttp_t* p) noexcept:
    cdef ReqParser self = <ReqParser>p.data
    try:
        self.conn.on_chunk_header()
    except BaseException as exc:
        self.last_error = exc
        return -1
    return 0


cdef int _on_chunk_complete(llhttp_t* p) noexcept:
    cdef ReqParser self = <ReqParser>p.data
    try:
        self.conn.on_chunk_complete()
    except BaseException as exc:
        self.last_error = exc
        return -1
    return 0


cdef int _on_message_complete(llhttp_t* p) noexcept:
    cdef ReqParser self = <ReqParser>p.data
    try:
        self.conn.on_message_complete()
    except BaseException as exc:
        self.last_error = exc
        return -1
    return 0


cdef class ReqParser:
    """``httptools.HttpRequestParser``'s part that ``ClientConn`` uses; see the module doc."""

    cdef llhttp_t p
    cdef llhttp_settings_t s
    cdef ClientConn conn
    cdef _Table table
    cdef Fields fs          # the current head's target and fields, copied as llhttp reports them (_llhttp.pxi)
    cdef Py_ssize_t ulen, hsize
    cdef int in_head
    cdef object last_error

    def __cinit__(self, ClientConn conn):
        self.conn = conn
        self.table = _table_for(conn)
        # grown (doubling) by a longer head and kept for the connection: ≤ --max-header-bytes
        _fields_init(&self.fs, 256, 8)
        llhttp_settings_init(&self.s)
        self.s.on_message_begin = _on_begin
        self.s.on_url = _on_url
        self.s.on_header_field = _on_field
        self.s.on_header_value = _on_value
        self.s.on_headers_complete = _on_headers_complete
        self.s.on_body = _on_body
        self.s.on_chunk_header = _on_chunk_header
        self.s.on_chunk_complete = _on_chunk_complete
        self.s.on_message_complete = _on_message_complete
        llhttp_init(&self.p, HTTP_REQUEST, &self.s)
        self.p.data = <void*>self

    def __dealloc__(self):
        _fields_free(&self.fs)

    cdef _head(self):
        """Sort the head's fields into ``conn.phead`` (see the module doc)."""
        cdef ReqHead h = self.conn.phead
        cdef _Table t = self.table
        cdef const char* b = self.fs.buf
        cdef Field* f
        cdef Py_ssize_t i, o = 0, size = 0
        cdef int k
        cdef bytes block
        cdef char* out
        cdef bint special = False
        if self.ulen:
            h.url = PyBytes_FromStringAndSize(b, self.ulen)
        for i in range(self.fs.nf):
            f = &self.fs.fields[i]
            f.idx = t.find(b + f.ns, f.nl)
            if f.idx >= 0:
                f.kind = t.kinds[f.idx]
                special = True
            elif _has_prefix(b + f.ns, f.nl):
                f.kind = K_DROP
            else:
                f.kind = K_PLAIN
            if 0 <= f.kind < 64 and _fwd_kind[f.kind]:
                size += f.nl + f.vl + 4
        if size:
            block = PyBytes_FromStringAndSize(NULL, size)
            out = PyBytes_AS_STRING(block)
            for i in range(self.fs.nf):
                f = &self.fs.fields[i]
                k = f.kind
                if 0 <= k < 64 and _fwd_kind[k]:
                    o = _put_line(out, o, b, f)
            h.fwd.append(block)
        if not special:
            return
        conn = self.conn
        for i in range(self.fs.nf):
            f = &self.fs.fields[i]
            if f.idx >= 0 and f.kind != K_PLAIN and f.kind != K_DROP:
                conn.header(f.kind, <bytes>t.lnames[f.idx], PyBytes_FromStringAndSize(b + f.ns, f.nl),
                            PyBytes_FromStringAndSize(b + f.vs, f.vl))

    def feed_data(self, data):
        cdef llhttp_errno_t err = _execute(&self.p, data)
        if err != HPE_OK:
            exc = _parser_error(&self.p, err, self.last_error)
            self.last_error = None
            raise exc
