# Typed request head for the Cython build (reqhead.py is the source; see sidecar/_build.py).
cimport cython

cdef bint _COMPILED


# (no free list: measured not to pay, docs/compiled-build.md "Object makers")
cdef class ReqHead:
    cdef public list fwd
    cdef public dict keyh
    cdef public object url, rpath, method, method_b, version, host, clen, te, upgrade, rid, ctoks
    cdef public object xff, xfp, xfh, bad
    cdef public bint keep, chunked, expect, rid_given, conn_given

    cpdef bint has_body(self)


# the maker (docs/compiled-build.md "Object makers"): cpdef, as the exchange imports it by name in the
# plain build; compiled, a C call from exchange.pxd's cimport
@cython.locals(h=ReqHead)
cpdef ReqHead new_head()
