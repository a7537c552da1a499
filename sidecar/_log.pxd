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
    cdef public int _fd
    cdef public object _enc, _errors, _q, _thread
    cdef public long long backlog_max, _posted, _written

    @cython.locals(rows=list)
    cpdef write(self, client, method, path, partition, phase, epoch, decision, status, double upstream_s,
                double total_s, rid, node)

    @cython.locals(mids=dict, key=tuple, hit=tuple, up=cython.double, total=cython.double,
                   k1=cython.longlong, k2=cython.longlong)
    cdef str _line(self, client, method, path, partition, phase, epoch, decision, status, double up_s,
                   double total_s, rid, node)

    @cython.locals(lines=list, pieces=list, n=Py_ssize_t)
    cpdef post(self)

    cpdef flush(self)

    cpdef close(self)

    @cython.locals(lines=list)
    cdef _write_stream(self)


@cython.locals(out=list, piece=list, size=Py_ssize_t)
cdef list _pieces(list lines)
