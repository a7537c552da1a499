# The client connection's view of its HTTP/1.1 exchange, for the Cython build (exbase.py is the
# source; see sidecar/_build.py). It cimports only exfields and reqhead, so conn.pxd can cimport
# it (conn.pxd cannot cimport response.pxd or exchange.pxd: response.pxd cimports conn.pxd).
from sidecar.proxy.exfields cimport ExchangeFields
from sidecar.proxy.reqhead cimport ReqHead


cdef class ClientExchange(ExchangeFields):
    cdef public ReqHead head
    cdef public bint keep_alive
    cdef public object uout

    cpdef ClientExchange make(self, ctx, conn)
    cpdef dispatch(self)
    cpdef client_body(self, data)
    cpdef client_body_end(self)
    cpdef flush_up(self)
