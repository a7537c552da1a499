# The exchange's transition table for the Cython build (exstate.py is the source; see
# sidecar/_build.py): ``step``'s check is C compares and one shift, no Python-level look-up.
cimport cython

cdef tuple _ORDER
cdef bint _COMPILED

# _index's search in C for _legal: the position of ``s`` in ``order`` by identity, -1 if absent
cdef extern from *:
    """
    static int epochgate_tuple_index(PyObject *order, PyObject *s) {
        Py_ssize_t i, n = PyTuple_GET_SIZE(order);
        for (i = 0; i < n; i++)
            if (PyTuple_GET_ITEM(order, i) == s) return (int)i;
        return -1;
    }
    """
    int _cindex "epochgate_tuple_index"(tuple order, object s) noexcept
cdef unsigned long long _TABLE

@cython.locals(t=cython.ulonglong, bit=cython.ulonglong)
cdef unsigned long long _pack()

@cython.locals(i=cython.int, m=object)
cdef int _index(object s)
@cython.locals(i=cython.int, j=cython.int)
cdef bint _legal(object state, object to)
# cimported by the HTTP/1.1 exchange (response.pxd, exchange.pxd): its 4 moves per request are C
# calls, not Python calls through the module (bench_exchange_instr, docs/compiled-build.md stop 37)
cdef object _watch
cpdef step(object state, object to)
