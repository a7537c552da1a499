# The write gate as an extension type for the Cython build (writegate.py is the source; see
# sidecar/_build.py): route() calls admit/done as C methods and its state is C fields.
# gate's tracker and admit decision come through gate's public cimport surface (gate/capi.pxd),
# so admit's fail_closed_admit and begin, and done's end, are C calls too, not Python-level
# calls into gate (docs/compiled-build.md, "Stop 37"). Compiled this way, this module (and
# exchange, which cimports WriteGate) loads only while gate's modules run compiled:
# sidecar/_build.py GATE_BOUND runs both as Python otherwise.
from gate.capi cimport InflightTracker, fail_closed_admit

cdef class WriteGate:
    cdef public object source, lease_s, clock
    # typed: begin/end are C calls through its vtable (an InflightTracker or a subclass; a Python
    # subclass overriding them is still called, through cpdef's dispatch)
    cdef readonly InflightTracker tracker
    cdef public list _guards
    cdef public bint _has_last_read, _closing

    cpdef bint lease_ok(self)
    cpdef bint writable(self)
    cpdef admit(self, p, epoch)
    cpdef done(self, p, epoch)
