# Typed state of one HTTP/2 stream for the Cython build (response.py/stream.py are the source;
# see sidecar/_build.py). The attributes live in the base extension type so that both halves of
# the exchange reach them as C fields (as the HTTP/1.1 ResponseMixin does: proxy/response.pxd).
from sidecar.proxy.context cimport ProxyContext, Node
from sidecar.proxy.h2.server cimport H2ServerConn
cimport cython
from sidecar.proxy.h2.fields cimport HeadMemo
from sidecar.proxy.limits cimport uncharge
from sidecar.proxy.writegate cimport WriteGate  # done: a C call (the gate's in-flight count, as on HTTP/1.1)
from sidecar._log cimport AccessLog  # enabled: a C read, write: a C call in finish (as proxy/response.pxd)
from sidecar.proxy.exfields cimport ExchangeFields  # the fields resolve and limits share with HTTP/1.1
from cpython.time cimport perf_counter as _clock  # (finish's clock read, as exchange.pxd's)

cdef bint _COMPILED


cdef class H2ResponseMixin(ExchangeFields):
    cdef public ProxyContext ctx
    cdef public H2ServerConn sconn  # its outboxes and engine: C fields and calls per event
    cdef public object method, method_b, path, authority, bad, rid, clen, xff, ctype
    cdef public object decision, node, hold_timer, leg, spare
    cdef public object trailers, resp_held, resp_buf
    cdef public HeadMemo head_route  # (stream.py: the connection's remembered head, or None)
    cdef public list fwd, pending
    cdef public dict keyh
    cdef public bint rid_given, grpc, admitted, was_held, body_done, head_sent, resp_started
    cdef public bint resp_ended, done
    cdef public long sid, rcvd, reroutes, replays, pooled_retries, to_ack, status, sent
    cdef public double held_at, deadline, t0, t_adm, t_up

    # the response's events and the stream's end as C methods: the upstream leg's events and the
    # stream's own calls reach them through the vtable, not by attribute look-up and a Python call
    # (bench_grpc_instr: see the commit)
    cpdef H2ResponseMixin make(self, ProxyContext ctx, H2ServerConn sconn, long sid, headers, bint ended)
    cpdef dispatch(self)   # the request half's (stream.py's H2Exchange overrides them)
    cpdef client_data(self, data)
    cpdef client_end(self, trailers)
    cpdef resp_head(self, headers, bint ended)
    cpdef _send_head(self, headers, bint ended)
    cpdef _relay_held(self)
    cpdef resp_data(self, data)
    cpdef resp_trailers(self, trailers)
    cpdef resp_end(self)
    @cython.locals(replay=list, body=bytes, n=Py_ssize_t)
    cpdef bint _replayable(self)
    @cython.locals(access=AccessLog, wg=WriteGate, t=cython.double, node=Node)  # (t: a C double, no float object; node.name a C read)
    cpdef finish(self, outcome)
