# The request's way upstream (forward.py is the source; see sidecar/_build.py): the HTTP/1.1
# exchange's half between its routing (exchange.pxd) and its response (response.pxd, which holds
# the fields every half reads as C fields).
cimport cython
from sidecar.proxy.response cimport ResponseMixin
from sidecar.proxy.limits cimport keep_for_replay as _keep_for_replay, uncharge as _uncharge
from sidecar.proxy.exstate cimport step  # a C call per move
from sidecar.proxy.httpmsg cimport join_bytes as _cjoin  # the upstream head's join, in C
# time.perf_counter's clock read in C, no call and float object (the .py calls it as _clock behind
# _COMPILED: the same _PyTime_GetPerfCounter and conversion to seconds, so the same values)
from cpython.time cimport perf_counter as _clock
# a pooled connection stays untyped: an h2c node's is an h2.bridge.H2Bridge (exchange.pxd)
from sidecar.proxy.upstream cimport UpstreamConn

cdef bint _COMPILED

@cython.locals(uc=UpstreamConn)
cdef object _transport(object up)


cdef class ForwardMixin(ResponseMixin):
    @cython.locals(parts=list, uc=UpstreamConn)
    cpdef attach(self, up)
    @cython.locals(out=list)
    cpdef flush_up(self)
    cpdef _uw(self, data)
    cpdef keep_for_replay(self, data)
    cpdef uncharge(self, long n)
    cpdef client_body(self, data)
    cpdef client_body_end(self)
