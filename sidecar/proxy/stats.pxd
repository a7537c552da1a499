# Typed state for the Cython build (pure-Python mode: _stats.py is the source). See sidecar/_build.py.
cimport cython

cdef bint _COMPILED


@cython.locals(lo=Py_ssize_t, hi=Py_ssize_t, mid=Py_ssize_t, x=double)
cdef Py_ssize_t _slot(tuple bounds, double v)


cdef class _Hist:
    cdef public object child
    cdef public tuple bounds
    cdef public list counts
    cdef public double sum
    cdef public long n


cdef class Stats:
    cdef public object metrics, hold
    cdef public list _hists
    cdef public tuple hist_r, hist_w, bounds
    cdef public dict _req_r, _req_w, decisions, slots

    @cython.locals(h_res=_Hist, h_adm=_Hist, h_up=_Hist, h_tot=_Hist, v=cython.double, req=dict, byout=dict,
                   i=Py_ssize_t)
    cpdef record(self, bint write, str phase, str outcome, double t0, double t_res, double t_adm, double t_up,
                 double t)
    cpdef decision(self, phase, decision, reason)  # a C call from the HTTP/2 exchange's route (h2/stream.py)
