# Typed body budget for the Cython build (limits.py is the source; see sidecar/_build.py): the
# budget's counters and the context's bound are C fields in charge/uncharge/keep_for_replay,
# which run per body piece of every gated write (the request itself stays untyped: an HTTP/1.1
# exchange or an HTTP/2 stream).
cimport cython
from sidecar.proxy.context cimport ProxyContext


cdef class BodyBudget:
    cdef public long long total, used, peak

    cpdef bint may_hold(self, req)
    cpdef bint fits(self, long long n)


@cython.locals(b=BodyBudget)
cpdef charge(req, long long n)
@cython.locals(b=BodyBudget)
cpdef uncharge(req, long long n)
@cython.locals(n=cython.longlong, ctx=ProxyContext, budget=BodyBudget)
cpdef keep_for_replay(req, data)
