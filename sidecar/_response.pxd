from sidecar._context cimport ProxyContext
# Typed state of one exchange for the Cython build: the attributes live in the base
# extension type so that both halves (_response, _exchange) reach them as C fields.
cdef class ResponseMixin:
    cdef public ProxyContext ctx
    cdef public object conn, ctransport, url, fwd, keyh, pending, method, method_b, version, host, clen, te
    cdef public object upgrade, rid, ctoks, xff, xfp, xfh, bad, partition, phase, epoch, placement, decision
    cdef public object node, hold_timer, up, spare, replay, resp_buf, resp_held, uout, cout, rpath
    cdef public bint keep_alive, chunked, expect, rid_given, is_write, admitted, was_held, body_done, head_sent
    cdef public bint sent_all, resp_chunked, resp_eof, resp_started, resp_keep, interim, no_resp_body, tunnel, done
    cdef public long retries, pending_len, replay_len, status, charged
    cdef public double held_at, deadline, t0, t_res, t_adm, t_up

    cpdef on_response_head(self, head)
    cpdef bint has_body(self)
    cpdef _write_head(self, head)
    cpdef on_response_body(self, data)
    cpdef _cw(self, data)
    cpdef flush_client(self)
    cpdef on_response_end(self)
    cpdef _end_response(self, bint reusable)
    cpdef finish(self, outcome)
