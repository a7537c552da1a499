# Typed body budget for the Cython build (limits.py is the source; see sidecar/_build.py): the
# budget's counters and the context's bound are C fields in charge/uncharge/keep_for_replay,
# which run per body piece of every gated write; so are the request's own (an HTTP/1.1 exchange
# or an HTTP/2 stream: both are an exfields.ExchangeFields).
cimport cython
from sidecar.proxy.context cimport ProxyContext
from sidecar.proxy.exfields cimport ExchangeFields


cdef class BodyBudget:
    cdef public long long total, used, peak

    cpdef bint may_hold(self, ExchangeFields req)
    cpdef bint fits(self, long long n)


@cython.locals(ctx=ProxyContext, b=BodyBudget)
cpdef charge(ExchangeFields req, long long n)
@cython.locals(ctx=ProxyContext, b=BodyBudget)
cpdef uncharge(ExchangeFields req, long long n)
@cython.locals(n=cython.longlong, ctx=ProxyContext, budget=BodyBudget)
cpdef keep_for_replay(ExchangeFields req, data)
