# Typed state of the process-wide proxy context for the Cython build (pure-Python mode:
# context.py is the source; see sidecar/_build.py).
from sidecar.proxy.stats cimport Stats
from sidecar.proxy.router cimport Router  # dispatch's fast_header/fast_cache: C reads


cdef class Node:
    cdef public object name, url, key, netloc, proto, host


cdef class ProxyContext:
    cdef public Stats stats
    cdef public Router router
    cdef public object cfg, loop, source, gate, access, pool, hold, tls, h2pool, budget
    cdef public dict nodes  # typed: resolve's .get per request is a C call
    cdef public dict header_kinds
    cdef public set waiting, clients
    cdef public dict stamps
    cdef public object rid_prefix, _ticker, _flusher, tracer
    cdef public object rs_state, rs_phase, rs_source  # resolve's one-entry cache
    cdef public object st_part, st_epoch, st_place, st_line  # stamp's one-entry cache
    cdef public double now, read_timeout, idle_timeout, head_timeout
    cdef public long max_header, max_path, max_connections, retry_body_max, rid_n
    cdef public bint closing

    cpdef bytes stamp(self, partition, placement, epoch)  # Request.attach: a C call per request
