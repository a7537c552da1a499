# One HTTP/2 stream as an extension type for the Cython build (its state: response.pxd).
cimport cython
from sidecar.proxy.h2.response cimport H2ResponseMixin
from sidecar.proxy.h2.fields cimport HeadMemo  # the connection's remembered head: C fields
from sidecar.proxy.h2.head cimport length_error, read_head  # the request head (head.py): C calls
from sidecar.proxy.h2.server cimport H2ServerConn
from sidecar.proxy.context cimport ProxyContext
from sidecar.proxy.resolve cimport resolve  # a C call (both exchanges share it: exfields)
from sidecar.proxy.limits cimport charge, keep_for_replay, uncharge  # C calls, as exchange.pxd's
from sidecar.proxy.writegate cimport WriteGate  # admit: a C call, as in exchange.pxd's route
from sidecar.proxy.h2.upstream cimport h2pool
# time.perf_counter's clock read in C (the .py calls it as _clock behind _COMPILED, as exchange.pxd)
from cpython.time cimport perf_counter as _clock

cdef bint _COMPILED


cdef class H2Exchange(H2ResponseMixin):
    cpdef H2ResponseMixin make(self, ProxyContext ctx, H2ServerConn sconn, long sid, headers, bint ended)
    @cython.locals(known=HeadMemo)
    cpdef dispatch(self)
    @cython.locals(known=HeadMemo, before=list, stamp=list, extra=list)
    cpdef attach(self, target)
    @cython.locals(wg=WriteGate)
    cpdef route(self)
    cpdef _send(self, data)
    cpdef client_data(self, data)
    cpdef client_end(self, trailers)
    cpdef req_sent(self, long n)


# the maker (docs/compiled-build.md "Object makers"); MAKER, its template for server.py, stays a
# Python-level module attribute
@cython.locals(ex=H2Exchange)
cdef H2Exchange new_stream(ProxyContext ctx, H2ServerConn sconn, long sid, headers, bint ended)
