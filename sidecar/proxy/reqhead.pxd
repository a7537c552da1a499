# Typed request head for the Cython build (reqhead.py is the source; see sidecar/_build.py).
cdef bint _COMPILED


cdef class ReqHead:
    cdef public list fwd
    cdef public dict keyh
    cdef public object url, rpath, method, method_b, version, host, clen, te, upgrade, rid, ctoks
    cdef public object xff, xfp, xfh, bad
    cdef public bint keep, chunked, expect, rid_given, conn_given

    cpdef bint has_body(self)
