# The exchange as an extension type for the Cython build (its state: response.pxd).
cimport cython
from sidecar.proxy.response cimport ResponseMixin
from sidecar.proxy.writegate cimport WriteGate
from sidecar.proxy.limits cimport keep_for_replay as _keep_for_replay, uncharge as _uncharge
from sidecar.proxy.resolve cimport resolve  # a C call (both exchanges share it: exfields)
from sidecar.proxy.context cimport Node
# the pool and its connections typed in route: the idle stack and a connection's flags are C
# reads (context.pxd cannot type ctx.pool: upstream.pxd cimports response.pxd, which cimports it)
from sidecar.proxy.upstream cimport UpstreamConn, UpstreamPool

cdef bint _COMPILED


cdef class Request(ResponseMixin):
    cpdef dispatch(self)
    @cython.locals(wg=WriteGate, pool=UpstreamPool, up=UpstreamConn, node=Node, stack=list)
    cpdef route(self)
    @cython.locals(parts=list)
    cpdef attach(self, up)
    cpdef flush_up(self)
    cpdef _uw(self, data)
    cpdef keep_for_replay(self, data)
    cpdef uncharge(self, long n)
    cpdef client_body(self, data)
    cpdef client_body_end(self)
