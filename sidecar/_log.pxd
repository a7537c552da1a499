# Typed state for the Cython build (pure-Python mode: _log.py is the source). See sidecar/_build.py.
# AccessLog as an extension type: the data path reads ``enabled`` as a C field and calls ``write``
# as a C method (proxy/response.pxd); the line is formatted with typed ints and dicts.
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

    @cython.locals(rows=list)
    cpdef write(self, client, method, path, partition, phase, epoch, decision, status, double upstream_s,
                double total_s, rid, node)

    @cython.locals(mids=dict, key=tuple, hit=tuple, up=cython.double, total=cython.double,
                   k1=cython.longlong, k2=cython.longlong)
    cdef str _line(self, client, method, path, partition, phase, epoch, decision, status, double up_s,
                   double total_s, rid, node)

    @cython.locals(lines=list, piece=list, size=Py_ssize_t)
    cpdef flush(self)
