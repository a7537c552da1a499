# The upstream side of HTTP/2 streams as extension types for the Cython build (upstream.py is
# the source; see sidecar/_build.py).
cimport cython
from sidecar.proxy.h2.conn cimport H2Base
from sidecar.proxy.context cimport ProxyContext
# a client stream's exchange (the base of stream.py's H2Exchange: stream.pxd cimports this file)
from sidecar.proxy.h2.response cimport H2ResponseMixin


cdef class H2Leg
cdef class H2Pool


cpdef H2Pool h2pool(ProxyContext ctx)  # the stream's route: a C call, and its target() one too


cdef class H2UpstreamConn(H2Base):
    cdef public object pool, key, head_memo
    cdef public dict legs
    cdef public bint tls, goaway, closed, heard
    cdef public double idle_since

    cpdef bint capacity(self)
    @cython.locals(rx=H2ResponseMixin, leg=H2Leg)
    cpdef start(self, ex, list extra, bint ends)
    cpdef read_started(self)
    cpdef protocol_error(self, exc)
    # the response's events go on to the exchange as C calls (leg.rx)
    @cython.locals(leg=H2Leg, rx=H2ResponseMixin)
    cpdef on_head(self, sid, headers, ended)
    @cython.locals(leg=H2Leg, rx=H2ResponseMixin)
    cpdef on_data(self, sid, data, flow_len)
    @cython.locals(leg=H2Leg, rx=H2ResponseMixin)
    cpdef on_end(self, sid)
    @cython.locals(leg=H2Leg, rx=H2ResponseMixin)
    cpdef on_trailers(self, sid, headers)
    cpdef on_reset(self, sid, code, by_peer)
    cpdef on_goaway(self, last_sid)
    cpdef leg_done(self)


cdef class H2Leg:
    cdef public H2UpstreamConn conn
    cdef object _ex                  # ``ex`` (a property: setting it sets rx too)
    cdef public H2ResponseMixin rx   # ex when it is a client stream's exchange, else None
    cdef public long sid


# the maker (docs/compiled-build.md "Object makers") and the rule it shares with H2Leg.ex's setter
@cython.locals(leg=H2Leg)
cdef H2Leg new_leg(H2UpstreamConn conn, long sid, ex)
cdef _set_ex(H2Leg leg, ex)


cdef class H2Pool:
    cdef public object ctx, loop, window, conn_window, _sweeper
    cdef public dict conns, connecting
    cdef public set alpn_h1

    @cython.locals(conn=H2UpstreamConn)
    cpdef target(self, ex, node)
