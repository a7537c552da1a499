# Typed state for the Cython build (pure-Python mode: stats.py is the source). See sidecar/_build.py.
cimport cython

cdef bint _COMPILED


cdef class _Hist:
    cdef public object child
    cdef public tuple bounds
    cdef public list _counts  # plain Python's tallies (compiled: ``tally``)
    cdef public double sum
    cdef public long n
    # compiled: the tallies and the bucket edges as C arrays (stats.MAX_BUCKETS), ``nb`` of them
    cdef long long tally[64]
    cdef double edge[64]
    cdef Py_ssize_t nb

    @cython.locals(lo=Py_ssize_t, hi=Py_ssize_t, mid=Py_ssize_t)
    cdef Py_ssize_t slot(self, double v)
    @cython.locals(i=Py_ssize_t)
    cpdef add(self, double v)


cdef class Stats:
    cdef public object metrics, hold, last_phase, last_out
    cdef public list _hists
    cdef public tuple hist_r, hist_w, bounds
    cdef public dict _req_r, _req_w, decisions, slots
    cdef public bint last_w
    cdef public long long last_n

    @cython.locals(h_res=_Hist, h_adm=_Hist, h_up=_Hist, h_tot=_Hist, v=cython.double, i=Py_ssize_t)
    cpdef record(self, bint write, str phase, str outcome, double t0, double t_res, double t_adm, double t_up,
                 double t)
    cdef _count(self, bint write, str phase, str outcome)
    @cython.locals(req=dict, byout=dict)
    cdef _fold(self)
    cpdef decision(self, phase, decision, reason)  # a C call from the HTTP/2 exchange's route (h2/stream.py)
