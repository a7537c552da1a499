# Typed state for the Cython build (pure-Python mode: _log.py is the source). See sidecar/_build.py.
# AccessLog as an extension type: the data path reads ``enabled`` as a C field and calls ``write``
# as a C method (proxy/response.pxd); the line is formatted with typed ints and dicts.
cimport cython

cdef bint _COMPILED

cdef extern from *:
    """
    #include <time.h>
    /* time.perf_counter's clock (CLOCK_MONOTONIC) without a Python call and a float: AccessLog.write
       reads it per line (valgrind: 239 instructions a write through perf_counter, see _log.py) */
    static inline double eg_log_clock(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    }
    """
    double eg_log_clock() nogil
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
    cdef public double _ts_at, oldest, flush_age
    cdef public object on_due
    cdef public bint due

    @cython.locals(rows=list, now=cython.double)
    cpdef write(self, client, method, path, partition, phase, epoch, decision, status, double upstream_s,
                double total_s, rid, node)

    @cython.locals(mids=dict, key=tuple, hit=tuple, up=cython.double, total=cython.double,
                   k1=cython.longlong, k2=cython.longlong)
    cdef str _line(self, client, method, path, partition, phase, epoch, decision, status, double up_s,
                   double total_s, rid, node)

    @cython.locals(lines=list, piece=list, size=Py_ssize_t)
    cpdef flush(self)
