# Typed state for the Cython build (pure-Python mode: _upstream.py is the source; this file
# only declares its classes as extension types with C-level attributes). See sidecar/_build.py.

cimport cython
# as a module: a cimported bare name would hide the Python-level ``RespHead`` this module re-exports
cimport sidecar.proxy.httpmsg as _httpmsg
from sidecar.proxy.response cimport ResponseMixin  # the usual exchange: C fields and calls

# the per-header tables, typed: .get/in are C calls, not a method look-up per header
cdef dict _RESP_SPECIAL, _KINDS
cdef frozenset _CONN_OPTIONS, _PLAIN_CONN

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
    cdef public _httpmsg.RespHead head

    # C calls from the compiled response parser (llresp.pyx); httptools calls them as methods
    @cython.locals(rx=ResponseMixin)
    cpdef data_received(self, data)
    @cython.locals(rx=ResponseMixin)
    cpdef head_done(self, int status, bint keep)
    @cython.locals(rx=ResponseMixin)
    cpdef on_body(self, body)
    @cython.locals(rx=ResponseMixin)
    cpdef on_message_complete(self)
    # the pool typed here only (``pool`` stays duck-typed for the parser tests): its idle stack,
    # bound and clock are C reads when a response hands the connection back
    @cython.locals(pool=UpstreamPool, stack=list)
    cpdef release(self, bint reusable)
