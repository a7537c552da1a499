# The exchange as an extension type for the Cython build (its state: response.pxd).
cimport cython
from sidecar.proxy.forward cimport ForwardMixin  # the request's way upstream (attach, body, replay)
from sidecar.proxy.writegate cimport WriteGate
from sidecar.proxy.resolve cimport resolve  # a C call (both exchanges share it: exfields)
from sidecar.proxy.context cimport Node, ProxyContext
from sidecar.proxy.conn cimport ClientConn
from sidecar.proxy.reqhead cimport new_head  # a C call per request
from sidecar.proxy.exbase cimport ClientExchange
from sidecar.proxy.exstate cimport step  # a C call per move
# time.perf_counter's clock read in C, no call and float object (the .py calls it as _clock behind
# _COMPILED: the same _PyTime_GetPerfCounter and conversion to seconds, so the same values)
from cpython.time cimport perf_counter as _clock
# the pool typed in route: its idle stack is a C read (context.pxd cannot type ctx.pool: upstream.pxd
# cimports response.pxd, which cimports context.pxd). A connection stays untyped: an h2c node's
# is an h2.bridge.H2Bridge (tests/test_h2_proxy.py test_http11_client_to_h2c_node)
from sidecar.proxy.upstream cimport UpstreamPool, UpstreamConn

cdef bint _COMPILED
cdef frozenset _SAFE
cdef dict _ADMIT_KEYS

@cython.locals(uc=UpstreamConn)
cdef bint _gone(object up) except -1


# (no free list: Cython ignores one on a subtype; docs/compiled-build.md "Object makers")
cdef class Request(ForwardMixin):
    cpdef ClientExchange make(self, ctx, conn)  # (conn.py's call: exbase.pxd)
    @cython.locals(raw=bytes)  # keyh's values are header bytes: the memo's compare is a memcmp
    cpdef dispatch(self)
    @cython.locals(wg=WriteGate, pool=UpstreamPool, node=Node, stack=list)
    cpdef route(self)


# the maker (docs/compiled-build.md "Object makers"); MAKER, its template for conn.py, stays a
# Python-level module attribute (conn.py reads it once)
@cython.locals(r=Request)
cdef Request new_request(ProxyContext ctx, ClientConn conn)
