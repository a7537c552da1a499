# The libnghttp2 adapter's connection as an extension type for the Cython build (engine_ng.py
# is the source; see sidecar/_build.py): its fields are C fields on every event and send.
cimport cython
from sidecar.proxy.h2.conn cimport H2Base


cdef class NgConn:
    cdef public H2Base h   # the events go to its on_* as C method calls (conn.pxd)
    cdef public object c, tail, fh, _settings
    cdef public list late
    cdef public set fresh
    cdef public bint server, dead, goaway, open, in_head, closed
    cdef public long last_in, skip, block, peer_max, peer_window

    @cython.locals(h=H2Base)
    cpdef _dispatch(self, list events)
