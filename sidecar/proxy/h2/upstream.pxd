# An exchange's stream on an upstream HTTP/2 connection, as an extension type for the Cython
# build (upstream.py is the source; see sidecar/_build.py).
cdef class H2Leg:
    cdef public object conn, ex
    cdef public long sid
