# Typed state for the Cython build (pure-Python mode: _upstream.py is the source; this file
# only declares its classes as extension types with C-level attributes). See sidecar/_build.py.

cimport cython

# the per-header tables, typed: .get/in are C calls, not a method look-up per header
cdef dict _RESP_SPECIAL, _KINDS
cdef frozenset _CONN_OPTIONS, _PLAIN_CONN

cdef class RespHead:
    cdef public int status
    cdef public list lines
    cdef public object reason, ctoks, clen, te, upg, ctype
    cdef public bint keep


cdef class UpstreamPool:
    cdef public object loop, open_h2, ssl_context
    cdef public long max_idle
    cdef public double idle_s, connect_timeout, now
    cdef public dict idle, tls_hosts
    cdef public set _open, h2_only


cdef class UpstreamConn:
    cdef public object pool, key, transport, parser, exchange
    cdef public bint closed, paused, in_body
    cdef public long served
    cdef public double idle_since
    cdef public RespHead head

    # C calls from the compiled response parser (llresp.pyx); httptools calls them as methods
    cpdef head_done(self, int status, bint keep)
    cpdef on_body(self, body)
    cpdef on_message_complete(self)
    # the pool typed here only (``pool`` stays duck-typed for the parser tests): its idle stack,
    # bound and clock are C reads when a response hands the connection back
    @cython.locals(pool=UpstreamPool, stack=list)
    cpdef release(self, bint reusable)
