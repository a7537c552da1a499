# Typed state for the Cython build (pure-Python mode: _log.py is the source). See sidecar/_build.py.
# AccessLog as an extension type: the data path reads ``enabled`` and ``rows`` as C fields
# (proxy/response.pxd), and the formatting loop works on typed rows, ints and dicts.
cimport cython

cdef bint _COMPILED
cdef bytes _SAFE
cdef object _UNSAFE


@cython.locals(b=bytes, c=cython.uchar)
cpdef str escape(raw)


@cython.locals(t=cython.double, f=cython.double, k=cython.longlong)
cpdef long long _cents(double ms)


cdef class AccessLog:
    cdef public object fmt, stream, _ts
    cdef public bint enabled
    cdef public list rows
    cdef public dict _mids
    cdef public double _ts_at

    @cython.locals(out=list, mids=dict, row=tuple, key=tuple, hit=tuple, up=cython.double, total=cython.double,
                   k1=cython.longlong, k2=cython.longlong)
    cpdef list _format(self, list rows)

    @cython.locals(piece=list, size=Py_ssize_t)
    cpdef flush(self)
