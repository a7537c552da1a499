# The exchange as an extension type for the Cython build (its state: response.pxd).
from sidecar.proxy.response cimport ResponseMixin


cdef class Request(ResponseMixin):
    cpdef dispatch(self)
    cpdef route(self)
    cpdef attach(self, up)
    cpdef flush_up(self)
    cpdef _uw(self, data)
    cpdef uncharge(self, long n)
    cpdef client_body(self, data)
    cpdef client_body_end(self)
