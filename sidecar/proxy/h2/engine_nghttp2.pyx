# cython: language_level=3, binding=False
# distutils: libraries = nghttp2
"""The default HTTP/2 engine of the compiled build: the system libnghttp2 (Debian
``libnghttp2-dev``) driven from Cython through its C API (issue 30), behind the engine
interface (``engine.py``) with exactly ``engine_ng.NgConn``'s calls, events and semantics
(the ``ngh2`` adapter's docstring lists what it adds to libnghttp2; each is ported here).

What differs is only the cost: ``ngh2`` makes a Python event object per frame and a tuple per
header, then ``engine_ng`` walks the list; here libnghttp2's callbacks are C functions that
queue each event as a C struct (the header list's bytes tuples built in C, a static HPACK
table name or value made once), delivered after the read as C calls on the typed owner
(``H2Base``'s ``on_*``, conn.pxd), as ``engine_ng._dispatch`` delivers them — after the whole
read was parsed (or the send serialised), never from inside libnghttp2 (an owner may write,
``data_to_send``, from an event). DATA goes out through a data provider over a per-stream
byte queue (``_Out``): ``send_data`` appends and resumes the stream; trailers are submitted
from the provider once the queue is drained.

Kept from ``engine_ng`` (same figures): no automatic WINDOW_UPDATE (the sidecar hands a window
back once the bytes left the proxy, ``ack``), 64 CONTINUATION frames per header block, the
reset-rate bucket well above the sidecar's own rapid-reset guard, a header list over
``H2_BLOCK_FACTOR`` × ``--max-header-bytes`` (or its field count) ends the connection with our
own GOAWAY ENHANCE_YOUR_CALM, ``head_pending``'s frame walker, ``window`` less the queued
bytes, RST_STREAM NO_ERROR held until the early response is serialised, libnghttp2's own resets
reported as not the peer's, the peer's SETTINGS tracked, ``closed`` once libnghttp2 is done.
libnghttp2's HTTP messaging checks stay on (no ``NGHTTP2_OPT_NO_HTTP_MESSAGING``).

Compiled only (there is no ``.py``): ``engine.py`` picks it when it is built and loads, and the
connection base runs compiled (it derives from ``conn.pxd``'s ``Engine``); the stale-build guard
(``sidecar/_build.py``, ``NATIVE``) keeps an out-of-date one from loading.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.buffer cimport PyBUF_SIMPLE, PyObject_GetBuffer, PyBuffer_Release
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from libc.stdint cimport int32_t, uint8_t, uint32_t, uintptr_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy

from sidecar.proxy.h2.conn cimport Engine, H2Base

from sidecar.proxy.h2.engine import Code, ProtocolError, Setting
from sidecar.proxy.limits import H2_BLOCK_FACTOR

include "_nghttp2.pxi"

NAME = "nghttp2"
#: the libnghttp2 this was compiled against (``engine.describe()``)
VERSION = (<bytes>NGHTTP2_VERSION).decode()


class NgError(Exception):
    """A send on a stream that is gone (reset by the peer, or ended): what ``H2Base`` catches."""


Error = NgError
_PREFACE = 24
#: h2 accepted a header block in up to 64 frames; libnghttp2's default is 8 (engine_ng's figure)
MAX_CONTINUATIONS = 64
#: the sidecar's own rapid-reset guard (server.RESET_LIMIT per second) is the one that acts:
#: libnghttp2's token bucket is set well above it (engine_ng's figures)
RESET_BUCKET = (10_000, 2_000)
#: frames no bigger than this go to ``send_data`` at once (libnghttp2 cuts frames itself)
cdef long SEND_MAX = 1 << 20

cdef enum:
    EV_HEAD = 1
    EV_DATA = 2
    EV_END = 3
    EV_TRAILERS = 4
    EV_RESET = 5
    EV_GOAWAY = 6
    EV_WINDOW = 7
    NV_STATIC = 64      # header fields submitted from the static array (more: malloc)
    STATIC_CACHE = 256  # slots of the static-table bytes cache (HPACK's static table has 61 entries)
    PAIR_SLOTS = 64     # a connection's received fields kept as (name, value) tuples (NgConn.pair)
    PAIR_MAX = 128      # ... when name and value together are no bigger (≤ 8 KiB of buffers held per connection)

cdef struct Ev:
    int kind
    int32_t sid
    uint32_t code       # RST_STREAM code; GOAWAY's last stream id
    bint flag           # HEAD: ended; RESET: by the peer
    PyObject *obj       # HEAD/TRAILERS: the header list; DATA: the bytes (owned)


cdef extern from *:
    """
    /* NgConn.pair's slot for two buffers' addresses (Fibonacci hashing into 64 slots): HPACK's
       static entries lie at a fixed stride, which a sum of shifted addresses sent to one slot */
    static inline size_t eg_pair_slot(const void *a, const void *b) {
        uint64_t x = ((uint64_t)(uintptr_t)a >> 3) ^ (((uint64_t)(uintptr_t)b >> 3) * 0x9E3779B97F4A7C15ULL);
        return (size_t)((x * 0x9E3779B97F4A7C15ULL) >> 58);
    }
    """
    size_t _pair_slot "eg_pair_slot"(const void *a, const void *b) noexcept


cdef nghttp2_session_callbacks *_callbacks = NULL
cdef nghttp2_nv _nv_static[NV_STATIC]
cdef char *_out = NULL          # data_to_send's gathering buffer (module-wide: one send at a time)
cdef size_t _out_cap = 0
# HPACK's static table as bytes made once: its rcbufs are static objects, the pointer is the key
cdef const void *_static_key[STATIC_CACHE]
cdef PyObject *_static_val[STATIC_CACHE]


cdef inline object _rc_bytes(nghttp2_rcbuf *rc):
    """A header name or value as bytes; one from HPACK's static table made once (~a third of a gRPC
    request's names: ``:method``, ``:scheme``, ``:path``, ``:authority``, ``content-type``...)."""
    cdef nghttp2_vec v = nghttp2_rcbuf_get_buf(rc)
    cdef size_t i
    cdef object b
    if not nghttp2_rcbuf_is_static(rc):
        return PyBytes_FromStringAndSize(<char *>v.base, v.len)
    i = ((<uintptr_t>rc) >> 4) % STATIC_CACHE
    while _static_key[i] != NULL:
        if _static_key[i] == <void *>rc:
            return <object>_static_val[i]
        i = (i + 1) % STATIC_CACHE
    b = PyBytes_FromStringAndSize(<char *>v.base, v.len)
    Py_INCREF(b)   # (held for the process: the table is fixed)
    _static_key[i] = <void *>rc
    _static_val[i] = <PyObject *>b
    return b


cdef class _Out:
    """One stream's DATA not yet serialised (what ``send_data`` got), and how the stream ends."""
    cdef char *buf
    cdef size_t off, end, cap
    cdef bint eof
    cdef object tkeep          # the trailers (their bytes back ``tnva``)
    cdef nghttp2_nv *tnva
    cdef size_t tn

    cdef inline size_t queued(self):
        return self.end - self.off

    cdef int add(self, const char *p, size_t n) except -1:
        cdef size_t cap
        cdef char *nb
        if self.off == self.end:
            self.off = self.end = 0
        if self.end + n > self.cap:
            if self.off:  # slide the unsent bytes to the front first
                memcpy(self.buf, self.buf + self.off, self.end - self.off)
                self.end -= self.off
                self.off = 0
            if self.end + n > self.cap:
                cap = self.cap * 2 if self.cap else 4096
                while cap < self.end + n:
                    cap *= 2
                nb = <char *>realloc(self.buf, cap)
                if nb == NULL:
                    raise MemoryError()
                self.buf, self.cap = nb, cap
        memcpy(self.buf + self.end, p, n)
        self.end += n
        return 0

    def __dealloc__(self):
        free(self.buf)
        if self.tnva != NULL:
            free(self.tnva)


cdef inline uint8_t _nv_flags(const char *name, Py_ssize_t n) noexcept:
    """HPACK indexing off for a field whose value is new in every message: the request id the
    sidecar stamps on every request (and a trace's ``traceparent``). Indexed, each one went into the
    encoder's dynamic table and pushed out the fields that repeat, and libnghttp2's encoder walks
    every entry of that name per field: deflating the upstream request head cost ~10.8k
    instructions a block, ~5.6k with the request id not indexed (callgrind, libnghttp2 1.52's
    ``nghttp2_hd_deflate_hd`` on 14 fields; the head is 8 bytes longer: the name is not indexed
    either). libnghttp2 itself skips indexing ``:path``, ``content-length``, ``etag``..."""
    if n == 12 and memcmp(name, b"x-request-id", 12) == 0:
        return NGHTTP2_NV_FLAG_NO_INDEX
    if n == 11 and memcmp(name, b"traceparent", 11) == 0:
        return NGHTTP2_NV_FLAG_NO_INDEX
    return NGHTTP2_NV_FLAG_NONE


cdef nghttp2_nv *_nva(object headers, size_t *count, list keep) except NULL:
    """libnghttp2's field array over ``headers`` (pairs of bytes, as ``ngh2`` takes them): it points
    into the bytes objects (``keep`` holds them), libnghttp2 copies them when submitted."""
    cdef list seq
    cdef Py_ssize_t n, i
    cdef nghttp2_nv *nva
    cdef object pair, name, value
    if type(headers) is list:
        seq = <list>headers
    else:
        seq = list(headers)
    keep.append(seq)
    n = len(seq)
    if n <= NV_STATIC:
        nva = _nv_static
    else:
        nva = <nghttp2_nv *>malloc(n * sizeof(nghttp2_nv))
        if nva == NULL:
            raise MemoryError()
    for i in range(n):
        pair = seq[i]
        if type(pair) is not tuple or len(<tuple>pair) != 2:
            name, value = pair
        else:
            name = (<tuple>pair)[0]
            value = (<tuple>pair)[1]
        if type(name) is not bytes or type(value) is not bytes:
            if nva != _nv_static:
                free(nva)
            raise TypeError("each header must be a pair of bytes")
        nva[i].name = <uint8_t *>PyBytes_AS_STRING(name)
        nva[i].namelen = PyBytes_GET_SIZE(name)
        nva[i].value = <uint8_t *>PyBytes_AS_STRING(value)
        nva[i].valuelen = PyBytes_GET_SIZE(value)
        nva[i].flags = _nv_flags(<const char *>nva[i].name, nva[i].namelen)
    count[0] = n
    return nva


cdef inline void _nva_free(nghttp2_nv *nva) noexcept:
    if nva != _nv_static:
        free(nva)


cdef class NgConn(Engine):
    """One connection's libnghttp2 session; ``h`` gets the events (``H2Base``'s ``on_*``)."""
    cdef nghttp2_session *s
    cdef public H2Base h
    cdef public bint server, dead, goaway, open, in_head
    cdef public long last_in, skip, block, peer_max, peer_window
    cdef public bytes tail
    cdef public list late
    cdef public set fresh
    cdef dict outs               # sid → _Out: streams whose DATA goes through our provider
    cdef size_t queued           # bytes in every _Out
    cdef object _settings
    cdef unsigned char fh[9]     # head_pending's walker: a frame header cut by the read
    cdef int fh_len
    # the header block being received (libnghttp2 delivers one at a time per connection)
    cdef list hdrs
    cdef size_t hsize, hcount, hlimit, climit
    cdef bint informational, has_status, calm, got_goaway
    cdef int32_t peer_rst         # the stream whose RST_STREAM was just read (its close is not reported again)
    cdef object cb_exc            # an exception raised inside a callback (re-raised after the call)
    cdef Ev *ev
    cdef Py_ssize_t nev, evcap
    # the fields received lately as tuples, by libnghttp2's buffers (``pair``); each buffer held
    # while its slot is, so that no other can get its address meanwhile
    cdef nghttp2_rcbuf *pc_name[PAIR_SLOTS]
    cdef nghttp2_rcbuf *pc_value[PAIR_SLOTS]
    cdef PyObject *pc_pair[PAIR_SLOTS]

    def __cinit__(self, H2Base h, bint client, dict settings):
        cdef nghttp2_option *opt
        cdef int rv
        max_header = settings.get(Setting.MAX_HEADER_LIST_SIZE) or 65536
        # a client's header list over 4× --max-header-bytes ends the connection (as h2's decoder
        # cap did); a node's responses get h2's default cap, 64 KiB (engine_ng's figures)
        limit = H2_BLOCK_FACTOR * max_header if not client else max(max_header, 65536)
        self.hlimit = limit
        self.climit = limit // 32 + 1     # (each field counts ≥ 32 bytes)
        self.h = h
        self.server = not client
        self.tail = b""        # our GOAWAY when libnghttp2 can no longer write one
        self.skip = _PREFACE if self.server else 0
        self.peer_max = 100    # the peer's MAX_CONCURRENT_STREAMS (libnghttp2 assumes 100 until it hears)
        self.peer_window = 65535
        self.late = []         # NO_ERROR resets to send after the frames queued before them
        self.fresh = set()     # requests whose HEADERS are not serialised yet (no stream in libnghttp2)
        self.outs = {}
        self._settings = settings
        if nghttp2_option_new(&opt) != 0:
            raise MemoryError()
        nghttp2_option_set_no_auto_window_update(opt, 1)
        nghttp2_option_set_peer_max_concurrent_streams(opt, 100)
        nghttp2_option_set_max_continuations(opt, MAX_CONTINUATIONS)
        nghttp2_option_set_stream_reset_rate_limit(opt, RESET_BUCKET[0], RESET_BUCKET[1])
        if client:
            rv = nghttp2_session_client_new2(&self.s, _callbacks, <void *>self, opt)
        else:
            rv = nghttp2_session_server_new2(&self.s, _callbacks, <void *>self, opt)
        nghttp2_option_del(opt)
        if rv != 0:
            raise MemoryError(nghttp2_strerror(rv).decode())

    def __dealloc__(self):
        cdef Py_ssize_t i
        for i in range(PAIR_SLOTS):
            if self.pc_pair[i] != NULL:
                nghttp2_rcbuf_decref(self.pc_name[i])
                nghttp2_rcbuf_decref(self.pc_value[i])
                Py_XDECREF(self.pc_pair[i])
                self.pc_pair[i] = NULL
        if self.s != NULL:
            nghttp2_session_del(self.s)
            self.s = NULL
        for i in range(self.nev):
            Py_XDECREF(self.ev[i].obj)
        free(self.ev)

    def initiate(self, conn_window):
        cdef nghttp2_settings_entry iv[16]
        cdef size_t n = 0
        for k, v in self._settings.items():
            if n == 16:
                break
            iv[n].settings_id = k
            iv[n].value = v
            n += 1
        _check(nghttp2_submit_settings(self.s, NGHTTP2_FLAG_NONE, iv, n))
        _check(nghttp2_session_set_local_window_size(self.s, NGHTTP2_FLAG_NONE, 0, 65535 + conn_window))

    cdef object pair(self, nghttp2_rcbuf *name, nghttp2_rcbuf *value, size_t size):
        """A received field as a (name, value) tuple: the one made before when libnghttp2 hands
        the same two buffers again. HPACK's decoder gives a field from its dynamic table (most of a
        client's repeated request head: ``:authority``, ``content-type``, ``te``,
        ``user-agent``...) as the table entry's buffers, and a static one as static buffers: no
        bytes or tuple made or freed per such field, and the remembered head's comparison
        (``fields.same_fields``) finds the same objects."""
        cdef size_t i, j
        cdef object p
        if size > PAIR_MAX:
            return (_rc_bytes(name), _rc_bytes(value))
        i = _pair_slot(<const void *>name, <const void *>value)
        if self.pc_name[i] == name and self.pc_value[i] == value and self.pc_pair[i] != NULL:
            return <object>self.pc_pair[i]
        j = i ^ 1   # (two ways: the newest field of the two slots in ``i``, the other in ``j``)
        if self.pc_name[j] == name and self.pc_value[j] == value and self.pc_pair[j] != NULL:
            return <object>self.pc_pair[j]
        p = (_rc_bytes(name), _rc_bytes(value))
        if self.pc_pair[j] != NULL:
            nghttp2_rcbuf_decref(self.pc_name[j])
            nghttp2_rcbuf_decref(self.pc_value[j])
            Py_XDECREF(self.pc_pair[j])
        self.pc_name[j] = self.pc_name[i]
        self.pc_value[j] = self.pc_value[i]
        self.pc_pair[j] = self.pc_pair[i]
        nghttp2_rcbuf_incref(name)
        nghttp2_rcbuf_incref(value)
        Py_INCREF(p)
        self.pc_name[i] = name
        self.pc_value[i] = value
        self.pc_pair[i] = <PyObject *>p
        return p

    # ------------------------------------------------------------ events
    cdef int push(self, int kind, int32_t sid, uint32_t code, bint flag, object obj) except -1:
        cdef Ev *nev
        cdef Py_ssize_t cap
        if self.nev == self.evcap:
            cap = self.evcap * 2 if self.evcap else 16
            nev = <Ev *>realloc(self.ev, cap * sizeof(Ev))
            if nev == NULL:
                raise MemoryError()
            self.ev, self.evcap = nev, cap
        nev = &self.ev[self.nev]
        nev.kind = kind
        nev.sid = sid
        nev.code = code
        nev.flag = flag
        if obj is None:
            nev.obj = NULL
        else:
            Py_INCREF(obj)
            nev.obj = <PyObject *>obj
        self.nev += 1
        return 0

    cdef void drop_events(self) noexcept:
        cdef Py_ssize_t i
        for i in range(self.nev):
            Py_XDECREF(self.ev[i].obj)
            self.ev[i].obj = NULL
        self.nev = 0

    cdef int dispatch(self) except -1:
        """The queued events to the owner, as ``engine_ng._dispatch`` delivers ngh2's (an event may
        write or reset: the queue is taken first, events those queue are delivered by that call)."""
        cdef Ev *ev = self.ev
        cdef Py_ssize_t n = self.nev, i = 0
        cdef H2Base h = self.h
        cdef Ev *e
        cdef int kind
        cdef object obj
        if n == 0:
            return 0
        self.ev = NULL
        self.nev = self.evcap = 0
        try:
            while i < n:
                e = &ev[i]
                i += 1
                kind = e.kind
                if kind == EV_DATA:
                    obj = <object>e.obj
                    h.on_data(e.sid, obj, PyBytes_GET_SIZE(obj))
                elif kind == EV_HEAD:
                    if e.sid > self.last_in:   # (as each head is delivered: a GOAWAY sent from one names no later one)
                        self.last_in = e.sid
                    h.on_head(e.sid, <object>e.obj, e.flag)
                    if e.flag:
                        h.on_end(e.sid)
                elif kind == EV_END:
                    h.on_end(e.sid)
                elif kind == EV_TRAILERS:
                    h.on_trailers(e.sid, <object>e.obj)
                    h.on_end(e.sid)
                elif kind == EV_RESET:
                    h.on_reset(e.sid, e.code, e.flag)
                elif kind == EV_GOAWAY:
                    self.goaway = True
                    h.on_goaway(e.code)
                elif kind == EV_WINDOW:
                    h.on_window(e.sid)
        finally:
            for i in range(n):
                Py_XDECREF(ev[i].obj)
            free(ev)
        return 0

    cdef int failed(self, exc) noexcept:
        """A callback could not queue its event (no memory): libnghttp2 stops, ``receive`` raises it."""
        if self.cb_exc is None:
            self.cb_exc = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE

    # ------------------------------------------------------------ reading
    cpdef receive(self, data):
        cdef ssize_t rv
        cdef Py_buffer view
        cdef bint alive
        if self.dead:
            return None
        if self.server:
            self._walk(data)
        self.got_goaway = self.calm = False
        if type(data) is bytes:
            rv = nghttp2_session_mem_recv(self.s, <const uint8_t *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            try:
                rv = nghttp2_session_mem_recv(self.s, <const uint8_t *>view.buf, view.len)
            finally:
                PyBuffer_Release(&view)
        if self.cb_exc is not None:
            exc, self.cb_exc = self.cb_exc, None
            self.drop_events()
            raise exc
        if rv < 0:
            # over the header list limits (``calm``), or otherwise unusable: libnghttp2 queues
            # nothing, so our GOAWAY goes out from here (as ngh2's exception made engine_ng do)
            self.drop_events()
            if self.calm:
                msg = "header list over the limit"
            else:
                msg = nghttp2_strerror(rv).decode()
            self._die(Code.ENHANCE_YOUR_CALM if self.calm else Code.PROTOCOL_ERROR, msg.encode()[:64])
            raise ProtocolError(msg)
        alive = nghttp2_session_want_read(self.s)
        if not alive and not self.goaway and not self.got_goaway:
            self.drop_events()
            raise ProtocolError("HTTP/2 connection error (GOAWAY queued by libnghttp2)")
        self.dispatch()
        return None

    cdef _walk(self, data):
        """Frame headers only (engine_ng's module doc): is a header block arriving, and how big is it."""
        cdef const unsigned char *p
        cdef Py_ssize_t i = 0, n, need
        cdef long skip = self.skip
        cdef const unsigned char *hdr
        cdef int t
        cdef Py_buffer view
        cdef bint owned = False
        if type(data) is bytes:
            p = <const unsigned char *>PyBytes_AS_STRING(data)
            n = PyBytes_GET_SIZE(data)
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            owned = True
            p = <const unsigned char *>view.buf
            n = view.len
        try:
            while True:
                if skip:
                    if skip >= n - i:
                        self.skip = skip - (n - i)
                        return None
                    i += skip
                    skip = 0
                if i >= n:
                    break
                if self.fh_len or n - i < 9:
                    need = 9 - self.fh_len
                    if need > n - i:
                        need = n - i
                    memcpy(self.fh + self.fh_len, p + i, need)
                    self.fh_len += need
                    i += need
                    if self.fh_len < 9:
                        break
                    self.fh_len = 0
                    hdr = self.fh
                else:
                    hdr = p + i
                    i += 9
                skip = (hdr[0] << 16) | (hdr[1] << 8) | hdr[2]
                t = hdr[3]
                self.in_head = t == 1 or t == 9   # HEADERS / CONTINUATION
                if self.in_head:
                    self.block = skip if t == 1 else self.block + skip
                    self.open = not hdr[4] & 0x4  # END_HEADERS
            self.skip = skip
        finally:
            if owned:
                PyBuffer_Release(&view)
        return None

    cpdef head_pending(self):
        """Encoded bytes of a header block in progress (≥ 1), 0 when none (engine_ng's module doc)."""
        if self.open or (self.in_head and self.skip):
            return max(1, self.block)
        return 0

    cpdef data_to_send(self):
        cdef nghttp2_session *s = self.s
        cdef bytes out
        cdef list late
        if self.dead:
            self.closed = True
            tail, self.tail = self.tail, b""
            return tail
        if not self.late and not nghttp2_session_want_write(s) and nghttp2_session_want_read(s):
            # nothing queued, nothing to serialise: no stream can have closed by it (the flush
            # after every read and ack skips the send and the event walk)
            return b""
        out = self._drain()
        if self.fresh:
            self.fresh.clear()   # (serialised, or held by MAX_CONCURRENT_STREAMS: window() finds out)
        if self.late:
            late, self.late = self.late, []
            for sid in late:
                if _live(s, sid):   # (closed meanwhile: the client ended its upload)
                    nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, sid, 0)
            out += self._drain()
        if not nghttp2_session_want_read(s):
            # a connection error libnghttp2 found (its GOAWAY is in ``out``), or GOAWAY both ways
            # with no stream left
            self.closed = True
            self.drop_events()
            return out
        self.dispatch()  # streams closed by what was just serialised (a reset libnghttp2 sent itself)
        return out

    cdef bytes _drain(self):
        """Everything libnghttp2 has to send, as one bytes."""
        global _out, _out_cap
        cdef const uint8_t *data
        cdef ssize_t n
        cdef size_t used = 0, cap
        cdef char *nb
        cdef bytes first = None
        while True:
            n = nghttp2_session_mem_send(self.s, &data)
            if n <= 0:
                break
            if used + n > _out_cap:
                cap = _out_cap * 2 if _out_cap else 65536
                while cap < used + n:
                    cap *= 2
                nb = <char *>realloc(_out, cap)
                if nb == NULL:
                    raise MemoryError()
                _out, _out_cap = nb, cap
            memcpy(_out + used, data, n)
            used += n
        if n < 0:
            raise NgError(nghttp2_strerror(n).decode())
        if self.cb_exc is not None:
            exc, self.cb_exc = self.cb_exc, None
            raise exc
        return PyBytes_FromStringAndSize(_out, used) if used else b""

    cdef _die(self, code, debug):
        self.dead = True
        self.tail = _goaway(self.last_in, code, debug)

    # ------------------------------------------------------------ sending
    cpdef request(self, headers, end):
        cdef nghttp2_data_provider prd
        cdef size_t n
        cdef list keep = []
        cdef nghttp2_nv *nva
        cdef _Out o = None
        cdef int32_t sid
        if self.dead or not nghttp2_session_check_request_allowed(self.s):
            # GOAWAY sent or received, or the stream ids spent: refused here, as ngh2 refuses it
            # (libnghttp2 would take it and drop it unsent, the owner never told)
            raise NgError("Connection is terminating")
        nva = _nva(headers, &n, keep)
        if not end:
            o = _Out()
            prd.source.ptr = <void *>o
            prd.read_callback = _read
        sid = nghttp2_submit_request(self.s, NULL, nva, n, NULL if end else &prd, NULL)
        _nva_free(nva)
        if sid < 0:
            raise NgError(nghttp2_strerror(sid).decode())
        if o is not None:
            self.outs[sid] = o
        self.fresh.add(sid)
        return sid

    cpdef respond(self, sid, headers, end):
        cdef nghttp2_data_provider prd
        cdef size_t n
        cdef list keep
        cdef nghttp2_nv *nva
        cdef _Out o = None
        cdef int rv
        cdef int32_t i = sid
        if not _live(self.s, i):
            raise NgError("stream does not exist")
        keep = []
        nva = _nva(headers, &n, keep)
        if not end:
            o = _Out()
            prd.source.ptr = <void *>o
            prd.read_callback = _read
        rv = nghttp2_submit_response(self.s, i, nva, n, NULL if end else &prd)
        _nva_free(nva)
        if rv < 0:
            raise NgError(nghttp2_strerror(rv).decode())
        if o is not None:
            self.outs[i] = o
        return None

    cdef _Out body(self, sid):
        o = self.outs.get(sid)
        if o is None or (<_Out>o).eof:
            raise NgError("stream has no open body")
        return <_Out>o

    cpdef trailers(self, sid, headers):
        cdef _Out o = self.body(sid)
        cdef size_t n
        cdef list keep = []
        cdef nghttp2_nv *nva = _nva(headers, &n, keep)
        cdef nghttp2_nv *own
        if nva == _nv_static:  # (held until the provider submits them)
            own = <nghttp2_nv *>malloc((n or 1) * sizeof(nghttp2_nv))
            if own == NULL:
                raise MemoryError()
            memcpy(own, nva, n * sizeof(nghttp2_nv))
            nva = own
        o.tnva, o.tn, o.tkeep = nva, n, keep
        o.eof = True
        nghttp2_session_resume_data(self.s, sid)
        return None

    cpdef send_data(self, sid, data, end=False):
        cdef _Out o = self.body(sid)
        cdef Py_buffer view
        cdef size_t n
        if type(data) is bytes:
            n = PyBytes_GET_SIZE(data)
            o.add(PyBytes_AS_STRING(data), n)
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            try:
                n = view.len
                o.add(<const char *>view.buf, n)
            finally:
                PyBuffer_Release(&view)
        self.queued += n
        if end:
            o.eof = True
        nghttp2_session_resume_data(self.s, sid)   # (a provider not deferred, or HEADERS not sent yet: no-op)
        return None

    cpdef end_stream(self, sid):
        cdef _Out o = self.body(sid)
        o.eof = True
        nghttp2_session_resume_data(self.s, sid)
        return None

    cpdef window(self, sid):
        """Bytes ``send_data`` may take for ``sid`` now: the peer's windows less what is queued."""
        cdef long stream = nghttp2_session_get_stream_remote_window_size(self.s, sid)
        cdef long conn
        if stream < 0:
            # HEADERS not serialised yet (a fresh request has no stream in libnghttp2 so far), held by
            # MAX_CONCURRENT_STREAMS, or the stream closed (its send_data raises): the peer's initial one
            stream = self.peer_window
        if self.queued:  # (none queued on the connection: none on the stream)
            o = self.outs.get(sid)
            if o is not None:
                stream -= (<_Out>o).queued()
        conn = nghttp2_session_get_remote_window_size(self.s) - <long>self.queued
        if conn < stream:
            stream = conn
        return stream if stream < SEND_MAX else SEND_MAX

    cpdef reset_stream(self, sid, code):
        cdef int32_t i = sid
        if code == 0:
            # "stop sending, the response is complete" (RFC 9113 §8.1) must follow the response:
            # libnghttp2 sends RST_STREAM ahead of queued HEADERS/DATA, so it waits for the next write
            self.late.append(sid)
            return None
        if not _live(self.s, i) and sid not in self.fresh:
            return None   # gone (as ngh2: nothing sent); a fresh request's HEADERS are cancelled instead
        _check(nghttp2_submit_rst_stream(self.s, NGHTTP2_FLAG_NONE, i, code))
        return None

    cpdef ack(self, n, sid):
        """Hand ``n`` bytes of window back; True when that queued a frame (libnghttp2 sends
        WINDOW_UPDATE only once half a window is consumed: most acks queue nothing)."""
        _check(nghttp2_session_consume(self.s, sid, n))
        return nghttp2_session_want_write(self.s) != 0

    cpdef close_connection(self, code, debug):
        cdef bytes d = debug   # (a TypeError for anything but bytes, before C reads it)
        if self.dead:
            return None
        self.goaway = True
        # (the caller closes the transport once this is written)
        if nghttp2_submit_goaway(self.s, NGHTTP2_FLAG_NONE, self.last_in, code, <const uint8_t *>PyBytes_AS_STRING(d),
                                 PyBytes_GET_SIZE(d)) < 0:
            self._die(code, debug)
        return None

    cpdef shutdown(self):
        """GOAWAY NO_ERROR: no new streams; the open ones finish (queued, sent at the next flush)."""
        self.goaway = True
        if not self.dead:
            nghttp2_submit_goaway(self.s, NGHTTP2_FLAG_NONE, self.last_in, 0, NULL, 0)
        return b""

    cpdef peer_max_streams(self):
        return self.peer_max


cdef inline bint _live(nghttp2_session *s, int32_t sid) noexcept:
    """libnghttp2 has the stream, not closed (a closed one may be kept a while for priorities)."""
    cdef nghttp2_stream *st = nghttp2_session_find_stream(s, sid)
    return st != NULL and nghttp2_stream_get_state(st) != NGHTTP2_STREAM_STATE_CLOSED


cdef inline int _check(int rv) except -1:
    if rv < 0:
        raise NgError(nghttp2_strerror(rv).decode())
    return 0


def _goaway(last, code, debug):
    n = 8 + len(debug)
    return (n.to_bytes(3, "big") + b"\x07\x00\x00\x00\x00\x00" + last.to_bytes(4, "big") + int(code).to_bytes(4, "big")
            + debug)


include "_nghttp2_cb.pxi"


def server(h, settings, validate_inbound=True):
    return NgConn(h, False, settings)   # (libnghttp2's checks cannot be turned off)


def client(h, settings):
    return NgConn(h, True, settings)
