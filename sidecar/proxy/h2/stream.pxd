# One HTTP/2 stream as an extension type for the Cython build (its state: response.pxd).
from sidecar.proxy.h2.response cimport H2ResponseMixin
from sidecar.proxy.resolve cimport resolve  # a C call (both exchanges share it: exfields)


cdef class H2Exchange(H2ResponseMixin):
    pass
