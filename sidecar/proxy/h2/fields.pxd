# A connection's remembered request head as an extension type for the Cython build (fields.py is
# the source; see sidecar/_build.py): stream.py reads its fields as C fields per stream.
cimport cython


@cython.locals(n=Py_ssize_t, i=Py_ssize_t)
cpdef bint same_fields(a, b)  # (any sequences: the engine decides what a header list is)


cdef class HeadMemo:
    cdef public object headers, router, keyh, method_b, path, authority, rid, xff, ctype, clen, method
    cdef public object r_path, r_partition, a_epoch, a_placement
    cdef public list fwd, a_before, a_stamp
    cdef public bint rid_given, grpc, routed, r_write, added
