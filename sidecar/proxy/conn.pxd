# The client connection as an extension type for the Cython build (conn.py is the source;
# an asyncio.Protocol by duck typing). See sidecar/_build.py.
cimport cython
from sidecar.proxy.context cimport ProxyContext

cdef dict _METHODS  # typed: .get per request is a C call (reqfields.py)
cdef frozenset _CONN_OPTIONS, _FORWARDED
# the header kinds (reqfields.py's range(14)): C ints, so header()'s chain of compares is C compares
# (each was a Python int made from the C kind and a module-global look-up: ~60 instructions)
cdef int _DROP, _HOST, _CLEN, _TE, _CONN, _UPG, _RID, _EXPECT, _XFF, _XFP, _XFH, _PLAIN, _KEY, _TRACE
from sidecar.proxy.reqhead cimport ReqHead
from sidecar.proxy.target cimport plain_target  # head_done: a C call per request
from sidecar.proxy.exbase cimport ClientExchange  # the exchange's calls from here: C calls
cdef ClientExchange _MAKER  # exchange.MAKER (conn.py): its make is a C call per request


cdef class ClientConn:
    cdef public ProxyContext ctx
    cdef public object transport, parser, peer, peer_s, queue, tunnel, keyh_names, xff_line
    cdef public ClientExchange current, parsing  # (exchange.Request)
    cdef public ReqHead phead  # the head being parsed: its fields are C fields in the parser callbacks
    cdef public dict kinds  # typed containers: .get/append are C calls, not attribute look-ups
    cdef public long flags, hsize, head_seen, heads, max_header
    cdef public double last_active, head_since
    cdef public bint upgraded, wpaused, in_feed, in_body, trailer

    cpdef _feed(self, data)
    # the parser's calls: httptools finds them as methods, llreq.pyx calls them in C
    @cython.locals(req=ClientExchange, m=ClientExchange)  # (req.head: a C read; m.make: a C call)
    cpdef on_message_begin(self)
    cpdef header(self, int kind, bytes lname, bytes name, bytes value)
    cpdef head_done(self, bytes method_b, str method, bint keep, str version, bint upgrade)
    cpdef on_body(self, body)
    cpdef on_chunk_header(self)
    cpdef on_chunk_complete(self)
    cpdef on_message_complete(self)
    cpdef pause(self, long flag)
    cpdef resume(self, long flag)
    cpdef request_done(self, req, bint reusable)
