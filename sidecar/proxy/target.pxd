# Typed helpers for the Cython build (target.py is the source; see sidecar/_build.py).
cimport cython

cdef bint _COMPILED


@cython.locals(n=Py_ssize_t, i=Py_ssize_t, k=Py_ssize_t, c=cython.uchar, prev=cython.uchar, word=bytes)
cpdef bint plain_target(bytes url, Py_ssize_t max_len)
