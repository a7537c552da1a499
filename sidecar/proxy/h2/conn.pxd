# The HTTP/2 connection base as an extension type for the Cython build (conn.py is the source;
# an asyncio.Protocol by duck typing, as proxy/conn.pxd's ClientConn). See sidecar/_build.py.
cimport cython


cdef class H2Base


cdef class ReadTurn:
    cdef public long depth
    cdef public list marked

    @cython.locals(c=H2Base, marked=list, i=Py_ssize_t)  # each marked connection's flush: a C call
    cpdef done(self)


cdef ReadTurn _turn


cdef class Outbox:
    cdef public list chunks  # (a list read from head on, not a deque: conn.py's Outbox)
    cdef public object trailers, on_sent
    cdef public Py_ssize_t head
    cdef public bint end


cdef class Engine:
    # an engine's connection (engine.py): libnghttp2's adapter (engine_ng.pxd) derives from it, so
    # the connections below call it through C (h2's adapter is a Python subclass)
    cdef public bint closed

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


cdef class H2Base:
    cdef public Engine h2
    cdef public object loop, errors, transport
    cdef public dict out, dirty
    cdef public bint wpaused, flush_pending, in_read
    cdef public long unflushed

    @cython.locals(turn=ReadTurn)
    cpdef data_received(self, data)
    cpdef read_started(self)
    cpdef protocol_error(self, exc)
    cpdef bint deliver(self, sid, data, flow_len, bint reader)
    cpdef on_head(self, sid, headers, ended)
    cpdef on_data(self, sid, data, flow_len)
    cpdef on_end(self, sid)
    cpdef on_trailers(self, sid, headers)
    cpdef on_reset(self, sid, code, by_peer)
    cpdef on_goaway(self, last_sid)
    cpdef on_window(self, sid)
    @cython.locals(turn=ReadTurn)
    cpdef mark(self)
    cpdef flush(self)
    @cython.locals(ob=Outbox)  # its fields: C reads and writes
    cpdef open_outbox(self, sid, on_sent)
    @cython.locals(ob=Outbox)
    cpdef send_data(self, sid, data)
    @cython.locals(ob=Outbox)
    cpdef send_end(self, sid, trailers=*)
    @cython.locals(ob=Outbox, sent=long, n=long, win=long, chunks=list, i=Py_ssize_t)
    cpdef pump(self, sid)
    cpdef pump_all(self)
    cpdef reset(self, sid, code=*)
    cpdef ack(self, sid, n)
