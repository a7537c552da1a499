# Typed for the Cython build (resolve.py is the source; see sidecar/_build.py): the exchange's
# fields (exfields.ExchangeFields: an HTTP/1.1 request or an HTTP/2 stream) and the context's are
# C fields here, not Python attribute look-ups.
cimport cython
from sidecar.proxy.context cimport Node, ProxyContext
from sidecar.proxy.exfields cimport ExchangeFields
from sidecar.proxy.stats cimport Stats
from cpython.time cimport perf_counter as _clock  # time.perf_counter's clock, read in C (exchange.pxd)

cdef bint _COMPILED


@cython.locals(node=Node, sl=dict)
cpdef resolve(ExchangeFields x, ProxyContext ctx)
