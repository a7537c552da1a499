# The HTTP/2 connection base as an extension type for the Cython build (conn.py is the source;
# an asyncio.Protocol by duck typing, as proxy/conn.pxd's ClientConn). See sidecar/_build.py.
cimport cython


cdef class ReadTurn:
    cdef public long depth
    cdef public list marked

    cpdef done(self)


cdef ReadTurn _turn


cdef class Outbox:
    cdef public object chunks, trailers, on_sent
    cdef public bint end


cdef class H2Base:
    cdef public object loop, h2, errors, transport
    cdef public dict out, dirty
    cdef public bint wpaused, flush_pending, in_read
    cdef public long unflushed

    @cython.locals(turn=ReadTurn)
    cpdef data_received(self, data)
    cpdef read_started(self)
    cpdef protocol_error(self, exc)
    cpdef deliver(self, sid, data, flow_len, sink)
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
    cpdef open_outbox(self, sid, on_sent)
    cpdef send_data(self, sid, data)
    cpdef send_end(self, sid, trailers=*)
    @cython.locals(ob=Outbox, sent=long, n=long, win=long)
    cpdef pump(self, sid)
    cpdef pump_all(self)
    cpdef reset(self, sid, code=*)
    cpdef ack(self, sid, n)
