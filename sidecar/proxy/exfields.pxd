# The fields both exchanges share with resolve and limits, typed for the Cython build
# (exfields.py is the source; see sidecar/_build.py). It cimports nothing: a base type is made
# before its module's own imports run, and context → upstream → response would be a cycle.


cdef class ExchangeFields:
    cdef public object partition, phase, epoch, placement, replay
    cdef public bint is_write
    cdef public long charged, replay_len
    cdef public double t_res
