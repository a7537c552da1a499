# The write gate as an extension type for the Cython build (writegate.py is the source; see
# sidecar/_build.py): route() calls admit/done as C methods and its state is C fields.
cdef class WriteGate:
    cdef public object source, tracker, lease_s, clock
    cdef public list _guards
    cdef public bint _has_last_read, _closing

    cpdef bint lease_ok(self)
    cpdef bint writable(self)
    cpdef admit(self, p, epoch)
    cpdef done(self, p, epoch)
