# Typed state for the Cython build (pure-Python mode: httpmsg.py is the source). See sidecar/_build.py.
# RespHead lives here, not in upstream.pxd, so that upstream.pxd can cimport the exchange's
# response half (response.pxd), which cimports RespHead: no cimport cycle.

cdef class RespHead:
    cdef public int status
    cdef public list lines
    cdef public object reason, ctoks, clen, te, upg, ctype
    cdef public bint keep
