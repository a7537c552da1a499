# One downstream HTTP/2 connection as an extension type for the Cython build (server.py is the
# source; see sidecar/_build.py).
from sidecar.proxy.context cimport ProxyContext
from sidecar.proxy.h2.conn cimport H2Base
from sidecar.proxy.h2.fields cimport HeadMemo
# its streams' events as C calls: typed as the exchange's base (response.pxd, which cimports this
# file back; stream.pxd's H2Exchange would be a cimport cycle through its base)
from sidecar.proxy.h2.response cimport H2ResponseMixin
cimport cython


# stream.py's template MAKER (docs/compiled-build.md "Object makers"): its make is a C call
cdef H2ResponseMixin _MAKER


cdef class H2ServerConn(H2Base):
    cdef public ProxyContext ctx
    cdef public dict streams
    cdef public object current, peer_s, peer
    cdef public HeadMemo head_memo  # the last good request head (stream.py): C fields per stream
    cdef public double last_active, head_since, reset_t0
    cdef public bint goaway, tls
    cdef public long resets, window, max_streams

    cpdef data_received(self, data)
    cpdef _watch_head(self)  # per read: a C call
    cpdef read_started(self)
    cpdef protocol_error(self, exc)
    @cython.locals(ex=H2ResponseMixin)
    cpdef on_head(self, sid, headers, ended)
    @cython.locals(ex=H2ResponseMixin)
    cpdef on_data(self, sid, data, flow_len)
    @cython.locals(ex=H2ResponseMixin)
    cpdef on_end(self, sid)
    @cython.locals(ex=H2ResponseMixin)
    cpdef on_trailers(self, sid, headers)
    cpdef on_reset(self, sid, code, by_peer)
    cpdef on_goaway(self, last_sid)
    cpdef stream_done(self, sid)   # from the exchange's finish: a C call (response.pxd types sconn)
