# The libnghttp2 adapter's connection as an extension type for the Cython build (engine_ng.py
# is the source; see sidecar/_build.py): its fields are C fields on every event and send.
cimport cython
from sidecar.proxy.h2.conn cimport Engine, H2Base

cdef frozenset _NEVER


@cython.locals(out=list, i=Py_ssize_t)
cpdef _marked(headers)


cdef class NgConn(Engine):
    cdef public H2Base h   # the events go to its on_* as C method calls (conn.pxd)
    cdef public object c, tail, fh, _settings
    cdef public list late
    cdef public set fresh
    cdef public bint server, dead, goaway, open, in_head   # (closed: Engine's)
    cdef public long last_in, skip, block, peer_max, peer_window

    @cython.locals(h=H2Base)
    cpdef _dispatch(self, list events)
    # Engine's methods again (conn.pxd): an override must be declared here too, or the C calls
    # reach the base's bodies (a static type has no Python-level override to find)
    cpdef receive(self, data)
    cpdef data_to_send(self)
    cpdef head_pending(self)
    cpdef request(self, headers, end)
    cpdef respond(self, sid, headers, end)
    cpdef trailers(self, sid, headers)
    cpdef send_data(self, sid, data, end=*)
    cpdef end_stream(self, sid)
    cpdef window(self, sid)
    cpdef reset_stream(self, sid, code)
    cpdef ack(self, n, sid)
    cpdef close_connection(self, code, debug)
    cpdef shutdown(self)
    cpdef peer_max_streams(self)
