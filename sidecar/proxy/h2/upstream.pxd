# The upstream side of HTTP/2 streams as extension types for the Cython build (upstream.py is
# the source; see sidecar/_build.py).
from sidecar.proxy.h2.conn cimport H2Base
from sidecar.proxy.context cimport ProxyContext


cpdef h2pool(ProxyContext ctx)  # the stream's route: a C call and a C field read


cdef class H2UpstreamConn(H2Base):
    cdef public object pool, key, head_memo
    cdef public dict legs
    cdef public bint tls, goaway, closed, heard
    cdef public double idle_since

    cpdef read_started(self)
    cpdef protocol_error(self, exc)
    cpdef on_head(self, sid, headers, ended)
    cpdef on_data(self, sid, data, flow_len)
    cpdef on_end(self, sid)
    cpdef on_trailers(self, sid, headers)
    cpdef on_reset(self, sid, code, by_peer)
    cpdef on_goaway(self, last_sid)


cdef class H2Leg:
    cdef public H2UpstreamConn conn
    cdef public object ex
    cdef public long sid
