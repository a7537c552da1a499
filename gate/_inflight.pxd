# The in-flight tracker as an extension type for the compiled build (_inflight.py is the source;
# gate/_build.py guards the build). begin/end run on every write: compiled, with typed dicts,
# they cost a C call each instead of a Python frame (bench_exchange_instr: -3.3% per 1 KiB PUT,
# 67.5k -> 65.3k; docs/compiled-build.md, "Compiled gate admit").
cimport cython

cdef class InflightTracker:
    cdef dict _counts
    cdef public Py_ssize_t _total
    cdef dict _waiters
    cdef public object on_change, on_wait

    @cython.locals(per=dict)
    cpdef begin(self, p, epoch)
    @cython.locals(per=dict)
    cpdef end(self, p, epoch)
