# Typed state of one exchange for the Cython build (response.py/exchange.py are the source;
# see sidecar/_build.py). The attributes live in the base extension type so that both
# halves of the exchange reach them as C fields.
from sidecar.proxy.context cimport Node, ProxyContext
from sidecar.proxy.reqhead cimport ReqHead
from sidecar.proxy.conn cimport ClientConn
from sidecar.proxy.httpmsg cimport RespHead  # its fields: C reads in _write_head
from sidecar._log cimport AccessLog  # enabled: a C read, write: a C call in finish
from sidecar.proxy.exbase cimport ClientExchange  # (head, keep_alive, uout: the client connection reads them)
from sidecar.proxy.limits cimport uncharge as _uncharge
from sidecar.proxy.exstate cimport step  # a C call per move
from sidecar.proxy.httpmsg cimport join_bytes as _cjoin  # the client batch's join, in C
from cpython.time cimport perf_counter as _clock  # time.perf_counter's clock, read in C (exchange.pxd)
cimport cython

cdef bint _COMPILED
cdef dict _STATUS_LINES  # typed: .get per response is a C call (keyed by the status: an int)


cdef class ResponseMixin(ClientExchange):
    cdef public ProxyContext ctx
    cdef public ClientConn conn  # its flags, peer and transport: C fields, not descriptor look-ups
    cdef public Node node  # netloc/name: C fields in attach and finish
    cdef public object ctransport, pending, decision, state
    cdef public object hold_timer, up, spare, resp_buf, resp_held, cout
    cdef public bint admitted, was_held, body_done, sent_all, resp_chunked, resp_eof
    cdef public bint resp_keep, interim, no_resp_body, tunnel
    cdef public long reroutes, pooled_retries, replays, pending_len, status
    cdef public double held_at, deadline, t0, t_adm, t_up

    cpdef on_response_head(self, RespHead head)
    cpdef bint has_body(self)
    @cython.locals(parts=list, lines=list, kept=list, out=list)
    cpdef _write_head(self, RespHead head)
    cpdef on_response_body(self, data)
    cpdef _cw(self, data)
    @cython.locals(out=list)
    cpdef flush_client(self)
    cpdef on_response_end(self)
    cpdef _end_response(self, bint reusable)
    # t typed: the clock's value stays a C double (an object t made a float per time passed on and
    # per subtraction: five float objects per request with the access log on, ~400 instructions)
    @cython.locals(access=AccessLog, t=cython.double, t0=cython.double)
    cpdef finish(self, outcome)
