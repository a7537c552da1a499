# The upstream side of HTTP/2 streams as extension types for the Cython build (upstream.py is
# the source; see sidecar/_build.py).
from sidecar.proxy.h2.conn cimport H2Base


cdef class H2UpstreamConn(H2Base):
    cdef public object pool, key
    cdef public dict legs
    cdef public bint tls, goaway, closed, heard
    cdef public double idle_since


cdef class H2Leg:
    cdef public H2UpstreamConn conn
    cdef public object ex
    cdef public long sid
